"""Whether prepared shards were made for this model: the tokenizer and prompt template
fingerprints a run or eval checks, and the folder of its own a refusal suggests preparing
(``prepare_command``), never the same folder again.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from amazon_sft.data.manifest import Manifest, prepare_command
from amazon_sft.errors import UserError


def own_folder(where: str, config: list[str] | None, for_eval: bool = False) -> str:
    """The folder a refusal suggests preparing for ``config`` beside ``where``: named for the
    config, and for the overrides that shape the data by a short digest, so two tokenizers'
    hints never name one folder (a review: the second was told to prepare into the first's).

    >>> own_folder("data", ["tiny"]), own_folder("data/", ["tiny", "model.tokenizer=B"])
    ('data-tiny', 'data-tiny-bda849')
    >>> own_folder("data", ["tiny"], for_eval=True)
    'data-own'
    """
    name = Path(config[0]).stem if config and not for_eval else "own"
    if config and config[1:]:
        name += "-" + hashlib.blake2b("\0".join(config[1:]).encode(), digest_size=3).hexdigest()
    return f"{where.rstrip('/')}-{name}"


def check_fingerprints(
    manifest: Manifest,
    tokenizer_fp: str,
    template_fp: str,
    where: str,
    config: list[str] | None = None,
    key: str = "data.path",
    templates: str | None = None,
    owned_by_a_run: bool = False,
) -> None:
    """Refuse shards made with another tokenizer or prompt template: the ids would be wrong.
    ``config``: the run config in use (its prepare command is suggested); ``key``: the option
    that named ``where``; ``templates``: the command's ``data.templates``, named when the data
    was prepared with another file (a new user followed "prepare again" and lost theirs);
    ``owned_by_a_run``: ``where`` is what a trained run reads (eval's ``--data``; its own
    templates are named). The advice prepares a folder of its own, named for the config,
    rather than this one again."""
    # never re-prepared in place (--overwrite): a run trained on it would refuse it then (an
    # outside trial followed train's hint and left another run without its data)
    own = prepare_command(own_folder(where, config, owned_by_a_run), config, source=where)
    redo = f"prepare a folder of its own and give that as {key} (`{own}`)"
    runs = ""
    if owned_by_a_run:
        runs = "; a saved run carries its own, data.templates=RUN/final/question_templates.yaml"
    if manifest.tokenizer_fingerprint != tokenizer_fp:
        raise UserError(
            f"{where} was prepared with another tokenizer ({manifest.tokenizer!r}, fingerprint "
            f"{manifest.tokenizer_fingerprint} != {tokenizer_fp}); {redo}, or point {key} at "
            "shards prepared for this model"
        )
    made = manifest.data.get("templates")
    if manifest.template_fingerprint != template_fp and templates and made not in (None, templates):
        raise UserError(
            f"{where} was prepared with data.templates={made}, and this command renders "
            f"data.templates={templates}: give data.templates={made} too (the file the data was "
            f"prepared with, as prepare was given it, unedited{runs}); or, for "
            f"data.templates={templates}, {redo}"
        )
    if manifest.template_fingerprint != template_fp:
        raise UserError(
            f"{where} was prepared with another prompt template (fingerprint "
            f"{manifest.template_fingerprint} != {template_fp}): give the templates it was "
            f"prepared with (the same data.templates / use_chat_template / system_prompt{runs}); "
            f"or {redo}"
        )
