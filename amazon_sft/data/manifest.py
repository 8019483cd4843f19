"""The manifest of a prepared folder: one typed definition that prepare writes and the shard
reader, training, evaluation, the CLI and the benchmarks read.

It is stored as ``manifest.json`` with an ``integrity`` digest over everything else in it, so an
edited manifest (a checksum changed, a shard entry deleted) is refused before training reads it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from amazon_sft.errors import UserError
from amazon_sft.output_lock import writer_of

MANIFEST = "manifest.json"
FORMAT_VERSION = 2  # 2: split on title and description groups, grounded examples


@dataclass(frozen=True)
class ShardEntry:
    name: str
    """``shard-NNNNN``, numbered from 0 in order."""
    rows: int
    sha256: dict[str, str]
    """File name -> sha256 of the whole file (``data.verify=full``)."""
    bytes: dict[str, int]
    quick: dict[str, str]
    """File name -> ``quick_digest`` (size, ends and sampled blocks; ``data.verify=quick``)."""


@dataclass(frozen=True)
class Manifest:
    max_seq_len: int
    """Tokens per packed row."""
    pad_id: int
    eos_id: int
    vocab_size: int
    rows: int
    """Packed rows over all shards."""
    tokens: int
    """Real (non-padding) tokens."""
    answer_tokens: int
    """Tokens that carry loss (answers and their EOS)."""
    fill_ratio: float
    tokenizer: str
    """Where the tokenizer came from, as given to prepare."""
    tokenizer_fingerprint: str
    template_fingerprint: str
    """``PromptFormat.fingerprint()``: training and evaluation refuse another prompt format."""
    shards: tuple[ShardEntry, ...]
    config: dict
    """The resolved run config prepare ran with (``config["data"]`` shaped the examples)."""
    lines_read: int = 0
    kept: int = 0
    train_products: int = 0
    closed_book_products: int = 0
    grounded_docs: int = 0
    """Grounded (RAFT) examples; 0 when the data teaches closed-book only."""
    grounded_absent_docs: int = 0
    train_docs: int = 0
    heldout_docs: int = 0
    over_max_train_products: int = 0
    probe_docs: int = 0
    answer_truncated: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    """Catalogue rows skipped, by reason (reading and cleaning)."""
    documents_dropped: dict[str, int] = field(default_factory=dict)
    """Training documents built and dropped, by reason (a prompt or example too long for a row)."""
    files: dict[str, str] = field(default_factory=dict)
    file_digests: dict[str, str] = field(default_factory=dict)
    """``sha256:HEX`` of each of ``files`` and ``report.md`` as prepare wrote them (whole: an edit that
    keeps the size, a price in catalogue.jsonl, escapes a sampled digest): a file
    edited since (a product added to catalogue.jsonl) is the user's, and ``--overwrite`` is
    refused rather than replace it (empty in manifests written before it)."""
    format_version: int = FORMAT_VERSION
    split_version: int = 1
    """``split.SPLIT_VERSION`` prepare split with (absent in manifests written before it: 1)."""
    amazon_sft_version: str = ""
    integrity: str = ""
    """sha256 of everything else (``seal``)."""

    @property
    def data(self) -> dict:
        """The data config prepare ran with."""
        return self.config.get("data", {})

    @property
    def identity(self) -> DataIdentity:
        """What names this prepared data in a run's records (resume, ``trained_on.json``)."""
        raw = self.to_dict()
        return DataIdentity(data_digest(raw), self.integrity)

    def to_dict(self) -> dict:
        """As stored in manifest.json."""
        raw = dataclasses.asdict(self)
        raw["shards"] = list(raw["shards"])
        return raw

    @classmethod
    def from_dict(cls, raw: dict, where: str = MANIFEST) -> Manifest:
        """Checked: every required field there; unknown fields refused (another version)."""
        names = {f.name for f in dataclasses.fields(cls)}
        required = [
            f.name
            for f in dataclasses.fields(cls)
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        ]
        missing = [k for k in [*required, "integrity"] if k not in raw]
        if missing:
            raise UserError(f"{where} lacks {missing[0]!r} (made by an older version or cut)")
        unknown = sorted(set(raw) - names)
        if unknown:
            raise UserError(f"{where} has an unknown field {unknown[0]!r} (another version)")
        try:
            shards = tuple(ShardEntry(**s) for s in raw["shards"])
        except TypeError as err:
            raise UserError(f"{where}: a shard entry is malformed ({err})") from None
        return cls(**{**raw, "shards": shards})


REPORTS = ("report.json", "report.md")
"""Prepare's reports: their timings (and the input path as typed) differ on every run."""
PREPARE_SPEED = ("grounded_workers", "tokenize_batch_docs", "tokenizer_backend", "shard_rows")
"""prepare's speed and layout, which leave the examples as they are (the shards' own digests
say whether their layout differs)."""
NOT_THE_DATA = ("integrity", "tokenizer", "amazon_sft_version")
"""Manifest fields that name no example: the tokenizer as typed (its fingerprint stays), the
version that wrote it (the shards' digests say whether the examples differ)."""


COUNTS = (
    "rows",
    "tokens",
    "answer_tokens",
    "fill_ratio",
    "lines_read",
    "kept",
    "train_products",
    "closed_book_products",
    "grounded_docs",
    "grounded_absent_docs",
    "train_docs",
    "heldout_docs",
    "over_max_train_products",
    "probe_docs",
    "answer_truncated",
    "skipped",
    "documents_dropped",
)
"""The manifest's fields that prepare's report counts (``prepare._manifest`` takes each from it:
a count the report no longer has fails there, rather than be written 0; manifests written
before a count existed read it 0)."""


def data_digest(manifest: dict) -> str:
    """sha256 of what a prepared folder holds for training and evaluation: the manifest less its
    reports' digests, the fields ``NOT_THE_DATA``, and every setting of its run config but the
    data ones that shape examples. Preparing the same input again gives the same digest (an
    outside review: a requeue's re-prepare of unchanged data was refused by resume, and eval
    called it "prepared again since": the reports' timings differed; then a review of that fix:
    a train.lr or model.path given to prepare too changed it)."""
    body = {k: v for k, v in manifest.items() if k not in NOT_THE_DATA}
    digests = body.get("file_digests") or {}
    body["file_digests"] = {n: d for n, d in digests.items() if n not in REPORTS}
    config = body.get("config") if isinstance(body.get("config"), dict) else {}
    data = config.get("data") if isinstance(config.get("data"), dict) else {}
    unshaped = ("path", "verify", *PREPARE_SPEED)
    body["config"] = {"data": {k: v for k, v in data.items() if k not in unshaped}}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class DataIdentity:
    """A prepared folder's data, as a run records it and later compares it."""

    digest: str
    """``data_digest``: what a run records."""
    integrity: str
    """The manifest's integrity digest, which runs recorded before 2026-12-04: still accepted."""

    def names(self, recorded: str | None) -> bool:
        """Whether a run's recorded digest is of this data."""
        return bool(recorded) and recorded in (self.digest, self.integrity)


def seal(manifest: dict) -> dict:
    """The manifest with ``integrity``: the sha256 of everything else in it."""
    body = {k: v for k, v in manifest.items() if k != "integrity"}
    digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
    return {**body, "integrity": digest}


def write_manifest(folder: Path, manifest: Manifest) -> Manifest:
    """Seal and write, with the digests of the files it names as they are now; returns the
    sealed manifest."""
    from amazon_sft.data.shards import sha256_file  # shards imports this module

    names = [*manifest.files.values(), "report.md"]
    digests = {n: f"sha256:{sha256_file(folder / n)}" for n in names if (folder / n).is_file()}
    sealed = seal({**manifest.to_dict(), "file_digests": digests})
    (folder / MANIFEST).write_text(json.dumps(sealed, indent=2) + "\n")
    return Manifest.from_dict(sealed)


def edited_since_written(folder: Path, manifest: Manifest) -> list[str]:
    """The files prepare wrote into ``folder`` that changed since (the manifest's digests)."""
    from amazon_sft.data.shards import sha256_file  # shards imports this module

    return sorted(  # a digest of another kind (a development version's sampled one) is skipped
        name
        for name, digest in manifest.file_digests.items()
        if digest.startswith("sha256:")
        and (folder / name).is_file()
        and f"sha256:{sha256_file(folder / name)}" != digest
    )


def refuse_not_prepared_data(path: str | Path) -> None:
    """An empty path, or a training run's folder, where prepared data goes: "run prepare --out
    RUN first" was advice prepare then refused (a hostile user's trial)."""
    from amazon_sft.ownership import is_our_run  # it imports this module

    if str(path).strip() in ("", "."):  # Path("") reads as the current folder
        raise UserError(
            "the prepared data's path is empty (or the current folder, which holds no "
            f"{MANIFEST}): give the folder prepare wrote"
        )
    if Path(path).is_dir() and is_our_run(Path(path)):
        raise UserError(
            f"{path} is a training run's folder, not prepared data: give the folder prepare "
            "wrote (the run's config.yaml names it, data.path)"
        )


def refuse_a_catalogue_file(path: str | Path, config: list[str] | None = None) -> None:
    """The catalogue itself given where its prepared folder goes: say how to make the folder
    (in ``data/`` here: the file's own folder may be a shared or read-only one)."""
    if Path(path).is_file() and (Path(path).parent / MANIFEST).is_file():  # a file inside it
        raise UserError(
            f"{path} is a file of the prepared folder {Path(path).parent}: give the folder"
        )
    if Path(path).is_file():
        folder = Path("data") / (Path(path).name.split(".")[0] + "-prepared")
        command = prepare_command(folder, config, catalogue=str(path))
        raise UserError(
            f"{path} is a file, not a prepared folder: prepare it into one first (`{command}`), "
            f"then give that folder (train: data.path={folder}; ask, index, eval: the folder)"
        )


def shaping_overrides(overrides: list[str]) -> list[str]:
    """Of a command's dotted overrides, those a prepare for it must be given too: the model's
    (its tokenizer and template) and the data's, but where the data is.

    >>> shaping_overrides(["train.lr=1e-4", "model.tokenizer=tok", "data.path=d", "data.seed=3"])
    ['model.tokenizer=tok', 'data.seed=3']
    """
    keys = [o.split("=", 1)[0] for o in overrides]
    return [
        o
        for o, key in zip(overrides, keys)
        if key.startswith(("model.", "data.")) and key != "data.path"
    ]


def prepare_command(
    out: str | Path,
    config: list[str] | None,
    catalogue: str = "",
    source: str | Path | None = None,
) -> str:
    """The prepare command (shell-quoted) that makes ``out`` for a run of ``config`` (a config's
    name or YAML, then the overrides that shape the data; None: unknown), from ``catalogue``,
    else the one ``source`` (default ``out``) was made from where its report says so. A hint
    without them prepared for the default model, or another tokenizer, which the run then
    refused again.

    >>> prepare_command("data/nope", ["tiny", "model.tokenizer=my tok"])
    "amazon-sft prepare trn.json.gz --out data/nope --config tiny 'model.tokenizer=my tok'"
    """
    if not catalogue:
        catalogue = "trn.json.gz"
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            made = Path(source if source is not None else out)
            catalogue = json.loads((made / "report.json").read_text())["input_resolved"]
    words = ["amazon-sft", "prepare", str(catalogue), "--out", str(out)]
    words += ["--config", *config] if config else []
    return shlex.join(words)


def read_manifest(path: str | Path, config: list[str] | None = None) -> Manifest:
    """The manifest of a prepared folder, checked whole: valid JSON, every field there, and its
    own ``integrity`` digest matching (errors say how to make a good one, for ``config``: the
    run config that reads it, when known)."""
    file = Path(path) / MANIFEST
    # prepare --overwrite replaces only a folder whose manifest proves prepare wrote it: a
    # damaged one's hint said --overwrite, which prepare then refused (a review)
    redo = (
        f"remove {path} yourself (prepare will not replace a folder whose manifest is damaged), "
        f"then run `{prepare_command(path, config)}`"
    )
    refuse_a_catalogue_file(path, config)
    if not file.is_file():
        refuse_not_prepared_data(path)
        if (writer := writer_of(Path(path))) is not None:
            raise UserError(
                f"{path} is being written ({writer}): wait for it to end, then start again"
            )
        raise UserError(
            f"{file} not found: run `{prepare_command(path, config)}` first (or give a "
            "prepared folder)"
        )
    try:
        raw = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise UserError(f"{file} is unreadable or not JSON ({err}): {redo}") from None
    if not isinstance(raw, dict):
        raise UserError(f"{file} is not a JSON object: {redo}")
    try:
        manifest = Manifest.from_dict(raw, str(file))
    except UserError as err:
        raise UserError(f"{err}: {redo}") from None
    if seal(raw)["integrity"] != raw["integrity"]:
        raise UserError(
            f"{file} was edited after prepare wrote it (integrity digest differs): {redo}"
        )
    return manifest


def stale_split(manifest: Manifest, where: str) -> str | None:
    """A warning when ``where`` was split by an older version (held-out figures may count a
    near-duplicate of a training product as held out), else None."""
    from amazon_sft.data.split import SPLIT_VERSION

    if manifest.split_version >= SPLIT_VERSION:
        return None
    return (
        f"warning: {where} was split by split version {manifest.split_version} (< "
        f"{SPLIT_VERSION}): near-duplicate descriptions may sit on both sides of the held-out "
        "split; re-run amazon-sft prepare for held-out figures that hold"
    )
