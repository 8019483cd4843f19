"""A run's config against the prepared data it trains on: the data settings that shaped the
examples are the manifest's, whatever the config says (``taught_by_the_data``), and one given to
train that the data was prepared otherwise with is refused (``refuse_data_not_prepared``)."""

from __future__ import annotations

import dataclasses
import logging

from amazon_sft.config import RunConfig
from amazon_sft.config_loader import from_dict, to_dict
from amazon_sft.data.manifest import PREPARE_SPEED, Manifest
from amazon_sft.errors import UserError

log = logging.getLogger("amazon_sft.train")


READ_BY_TRAIN = ("path", "verify", "seed", "max_seq_len", "templates")
"""The data settings training itself reads. ``templates`` too: train renders the prompts to
compare their fingerprint with the data's (``load_data``), so the same file named another way
(whole, by ``train_local.sh``) is the data's, and the name train was given is the one kept."""


def refuse_data_not_prepared(given: list[str], cfg: RunConfig, manifest: Manifest) -> None:
    """A ``data.*`` setting given on train's command line that the data was prepared with
    another value of: the run went on teaching what the data held, its config.yaml recording
    the value given. ``max_seq_len`` has its own check (``load_data``)."""
    made = manifest.config.get("data", {}) if isinstance(manifest.config, dict) else {}
    asked = to_dict(cfg)["data"]
    for override in given:
        key = override.split("=", 1)[0]
        parts = key.split(".")[1:]
        if key.split(".")[0] != "data" or not parts or parts[0] in READ_BY_TRAIN + PREPARE_SPEED:
            continue
        value, prepared_with = asked, made
        for part in parts:
            value = value.get(part) if isinstance(value, dict) else None
            prepared_with = prepared_with.get(part, ...) if isinstance(prepared_with, dict) else ...
        if prepared_with is not ... and value != prepared_with:  # None too: "all products"
            raise UserError(
                f"{key}={value} was given to train, but {cfg.data.path} was prepared with "
                f"{key}={prepared_with}: prepare again with it (amazon-sft prepare ... {key}="
                f"{value}), or leave it out"
            )


SPLIT_KEYS = ("data.heldout_fraction", "data.probe_size")
"""Data settings that choose which products are held out or probed, not what an example
teaches: given otherwise, the data's split is kept without sending the user back to prepare."""


def taught_by_the_data(cfg: RunConfig, manifest: Manifest, say: bool = True) -> RunConfig:
    """The run config with every data setting that shaped the examples taken from the manifest
    (a value given to train instead would describe data the model never saw; only what train
    reads, ``READ_BY_TRAIN``, and prepare's speed settings stay the config's); ``say``: warn
    of the ones the config gave otherwise (the main process, once). Key by key, nested
    sections too: a key an older manifest lacks stays the config's, one since removed or
    renamed is skipped."""
    from amazon_sft.config import DataConfig

    asked = to_dict(cfg)["data"]
    made = {k: v for k, v in manifest.data.items() if k not in READ_BY_TRAIN + PREPARE_SPEED}
    merged, changed = _as_made(asked, made, "data.")
    split = {k: changed.pop(k) for k in SPLIT_KEYS if k in changed}
    if split and say:  # prepared with another held-out share, as the docs advise for figures
        log.warning(
            "%s holds the held-out split prepare made with %s (the config gave %s): training "
            "and eval use the data's split, and the run records it",
            cfg.data.path,
            _listed(split, 1),
            _listed(split, 0),
        )
    if changed and say:  # the YAML edited after prepare, or the data prepared with overrides
        log.warning(
            "%s was prepared with %s, where the config says %s: training teaches what the data "
            "holds and records the data's values (nothing to do if you prepared it so; to teach "
            "the config's instead, run amazon-sft prepare again with it)",
            cfg.data.path,
            _listed(changed, 1),
            _listed(changed, 0),
        )
    return dataclasses.replace(cfg, data=from_dict(DataConfig, merged, prefix="data."))


def _listed(changes: dict, side: int) -> str:
    """``key=value`` of each change, the config's value (``side`` 0) or the data's (1)."""
    return ", ".join(f"{k}={pair[side]}" for k, pair in changes.items())


TAKEN_WHOLE = ("question_mix",)
"""Data sections that are one value: a question mix's shares sum to 1, so an older manifest's
mix is not topped up with the config's share for a kind added since (it taught none of it)."""


def _as_made(asked: dict, made: dict, prefix: str) -> tuple[dict, dict]:
    """``asked`` with ``made``'s value for every key both have (sections merged key by key), and
    {dotted key: (asked, made)} of those that differ."""
    merged, changed = dict(asked), {}
    for key, value in made.items():
        if key not in asked:
            continue  # removed or renamed since that prepare
        if key in TAKEN_WHOLE and isinstance(value, dict):
            value = {kind: value.get(kind, 0.0) for kind in asked[key]}  # not named: not taught
        if isinstance(value, dict) and isinstance(asked[key], dict):
            merged[key], inner = _as_made(asked[key], value, f"{prefix}{key}.")
            changed.update(inner)
        elif asked[key] != value:
            merged[key] = value
            changed[prefix + key] = (asked[key], value)
    return merged, changed
