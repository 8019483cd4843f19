"""The run configuration: nested dataclasses, one docstring under each field.

Shipped configs live in ``amazon_sft/configs/<name>.yaml``; ``load_run_config`` reads one (or a
path) and applies dotted overrides such as ``data.max_seq_len=1024``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from amazon_sft.config_data_parts import CleanConfig, QuestionMix
from amazon_sft.config_loader import load_config
from amazon_sft.config_model_part import ModelConfig, home
from amazon_sft.config_run_parts import CheckpointConfig, LoraConfig, check_ranges
from amazon_sft.config_train_part import TrainConfig
from amazon_sft.errors import UserError

MAX_SEED = 2**32 - 1
"""numpy's legacy seeding (accelerate's ``set_seed``) takes seeds in [0, 2**32 - 1]."""


def check_seed(value: int, key: str) -> None:
    """A seed every RNG it reaches accepts.

    >>> check_seed(-1, "seed")
    Traceback (most recent call last):
    amazon_sft.errors.UserError: seed must be in [0, 4294967295] (numpy's seed range), got -1
    """
    if not 0 <= value <= MAX_SEED:
        raise UserError(f"{key} must be in [0, {MAX_SEED}] (numpy's seed range), got {value}")


DEFAULT_CONFIG = "smollm2-135m"
"""The config used when none is named: the real pretrained model that works offline."""


@dataclass
class DataConfig:
    path: str = "data/prepared"
    """The folder ``amazon-sft prepare`` wrote (manifest.json and shards); training reads it."""
    max_seq_len: int = 2048
    """Tokens per packed row. Documents are packed into rows of exactly this length. At most
    the model's context (``max_position_embeddings``): checked by prepare and at model load."""
    max_answer_tokens: int = 512
    """Token budget of one description; longer ones are cut (and counted), EOS kept after."""
    heldout_fraction: float = 0.01
    """Share of distinct titles held out for evaluation, chosen by a stable hash of the title."""
    max_train_products: int | None = None
    """Teach only the first N training products (after cleaning and the held-out split); later
    training rows are counted as ``over_max_train_products`` and stay in catalogue.jsonl (split
    ``untaught``). For small runs that must see a few products many times. None: all."""
    phrasings_per_doc: int = 1
    """Questions each product is taught with: first the canonical phrasing (index 0, the one
    evaluation and answering ask), then others picked by a stable hash of the uid. More than 1
    teaches the model to answer other wordings (English and Portuguese) of the same question,
    at one more copy of the document each; at most the number of phrasings (9 builtin)."""
    closed_book_fraction: float = 1.0
    """Share of training products taught closed-book (the title question, the description as
    answer), picked by a stable hash of the uid. 1.0: all of them."""
    grounded_fraction: float = 0.0
    """Share of training products also taught grounded (RAFT): a question (any phrasing, EN/PT)
    with ``context_records`` catalogue records retrieved for it from the training split, the
    right one at a random place among hard negatives, and as answer its description followed by
    ``[source: uid]``. Picked by a stable hash of the uid. Costs one retrieval per product."""
    grounded_questions: int = 1
    """Grounded examples per picked training product, each with its own question (its kind
    drawn from ``question_mix`` by a hash of the uid and the example's number): more ways of
    asking for the same products, at that many times the retrieval and tokens."""
    context_records: int = 3
    """Records in a grounded prompt (the right one plus hard negatives)."""
    context_record_tokens: int = 160
    """Token budget of each record's description in a grounded prompt; the answer quotes the
    right record as shown, so this also caps grounded answers."""
    absent_fraction: float = 0.1
    """Share of grounded examples whose right record is left out of the context (another hard
    negative takes its place) and whose answer says, in the question's language, that the
    catalogue has no such product."""
    paired_absent: bool = False
    """Teach every abstention (right record left out by ``absent_fraction``, or missed by
    retrieval) beside its twin: the same question with the product shown among the same hard
    negatives, answered and cited. Then only the record's presence, never the question's
    wording, separates answering from abstaining. Adds one example per abstention."""
    question_mix: QuestionMix = field(default_factory=QuestionMix)
    """Kinds of grounded questions (title, fragment, reorder, typo, portuguese, descriptive,
    attribute) and their shares; the default asks the title phrasings only."""
    series_distractors: int = 1
    """Same-series products (titles that differ only by "Book 2", "Vol. 3", "#12", an edition)
    put among a grounded example's records in place of the last hard negatives, when the
    training split has them: the twins a user's question most often confuses."""
    grounded_shortlist: int = 2000
    """Candidates scored exactly per grounded *title* question (and series stem) that has a
    common word (one in more than 5,000 products of a field: answering/batched.py), chosen by a
    cheap estimate: their records are hard negatives around the right one. The other kinds show
    what ``ask`` retrieves, so they are ranked as ``ask`` ranks (10,000). At 1.3M products
    (docs/benchmarks.md) 2,000 costs ~0.7x the CPU of 10,000 a question and keeps the same
    first product; ~80% of an 11-product hard-negative list is the same. Below 5,000 products
    a word (every test here) it changes nothing. Raise it for lists closer to ``ask``'s."""
    grounded_workers: int = 0
    """Processes that retrieve the records of grounded examples (a query or two per grounded
    product, ~10 ms of CPU an example at 1.3M products: an hour in one process). 0: one per
    CPU core, up to 16, when there are more than 4,096 grounded products, else 1 (a worker
    takes seconds to start). The shards are the same for any count."""
    probe_size: int = 1000
    """How many *training* titles to write to seen_probe.jsonl for measuring catalogue recall."""
    templates: str = "builtin"
    """Question phrasings YAML; ``builtin`` is amazon_sft/templates/questions.yaml."""
    use_chat_template: bool = True
    """Render prompts with the tokenizer's chat template when it has one (plain otherwise)."""
    system_prompt: str | None = None
    """A system message for chat templates; None keeps the template's own default."""
    shard_rows: int = 4096
    """Packed rows per shard file. prepare buffers one shard in memory (rows x max_seq_len x 5
    bytes): refused when that is over a quarter of the machine's memory."""
    tokenize_batch_docs: int = 4096
    """Documents tokenized per batch (the fast tokenizer parallelises inside a batch)."""
    tokenizer_backend: str = "auto"
    """``hf`` (the fast tokenizer), ``sentencepiece`` (its C++ library, checked to give the
    same ids) or ``auto`` (sentencepiece when the check passes)."""
    seed: int = 1234
    """Seeds the shuffled row order the loader reads."""
    verify: str = "quick"
    """How training checks the shards against the manifest before reading them: ``quick``
    (sizes + a digest of each file's ends and 64 sampled blocks, ~0.4 MB read per file), ``full``
    (sha256 of every byte) or ``none``. The manifest's own integrity digest is always checked."""
    clean: CleanConfig = field(default_factory=CleanConfig)
    """Cleaning steps, each switchable and counted in the report."""

    def __post_init__(self) -> None:
        self.path, self.templates = home(self.path), home(self.templates)
        if self.max_seq_len < 16:
            raise UserError(f"data.max_seq_len must be >= 16, got {self.max_seq_len}")
        if self.max_answer_tokens < 1:
            raise UserError(f"data.max_answer_tokens must be >= 1, got {self.max_answer_tokens}")
        if not 0.0 <= self.heldout_fraction < 1.0:
            raise UserError(f"data.heldout_fraction must be in [0, 1), got {self.heldout_fraction}")
        if self.max_train_products is not None and self.max_train_products < 1:
            raise UserError(
                f"data.max_train_products must be >= 1 or null (all), got {self.max_train_products}"
            )
        for key in ("closed_book_fraction", "grounded_fraction", "absent_fraction"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                raise UserError(f"data.{key} must be in [0, 1], got {getattr(self, key)}")
        if self.closed_book_fraction == 0 and self.grounded_fraction == 0:
            raise UserError(
                "data.closed_book_fraction and data.grounded_fraction are both 0: nothing to "
                "teach; raise one of them"
            )
        if self.series_distractors < 0:
            raise UserError(f"data.series_distractors must be >= 0, got {self.series_distractors}")
        if self.grounded_questions < 1:
            raise UserError(
                f"data.grounded_questions must be >= 1 (examples per grounded product), got "
                f"{self.grounded_questions}"
            )
        if self.grounded_shortlist < 100:
            raise UserError(
                f"data.grounded_shortlist must be >= 100 (ask uses 10000), got "
                f"{self.grounded_shortlist}"
            )
        if self.grounded_workers < 0:
            raise UserError(
                f"data.grounded_workers must be >= 0 (0: one per CPU core), got "
                f"{self.grounded_workers}"
            )
        if self.context_records < 1 or self.context_record_tokens < 8:
            raise UserError(
                "data.context_records must be >= 1 and data.context_record_tokens >= 8, got "
                f"{self.context_records} and {self.context_record_tokens}"
            )
        if self.phrasings_per_doc < 1:
            raise UserError(f"data.phrasings_per_doc must be >= 1, got {self.phrasings_per_doc}")
        check_ranges(
            ("data.probe_size", self.probe_size, self.probe_size >= 0, ">= 0"),
            ("data.shard_rows", self.shard_rows, self.shard_rows >= 1, ">= 1"),
            (
                "data.tokenize_batch_docs",
                self.tokenize_batch_docs,
                self.tokenize_batch_docs >= 1,
                ">= 1",
            ),
        )
        if self.verify not in ("quick", "full", "none"):
            raise UserError(f"data.verify must be quick, full or none, got {self.verify!r}")
        check_seed(self.seed, "data.seed")
        if self.tokenizer_backend not in ("auto", "hf", "sentencepiece"):
            raise UserError(
                f"data.tokenizer_backend must be auto, hf or sentencepiece, "
                f"got {self.tokenizer_backend!r}"
            )


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    """Which model and tokenizer."""
    data: DataConfig = field(default_factory=DataConfig)
    """How raw trn.json becomes packed rows, and where they are."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """Optimisation, precision, attention and logging."""
    lora: LoraConfig = field(default_factory=LoraConfig)
    """Low-rank adapters; off means full fine-tuning."""
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    """Resumable checkpoints."""
    deepspeed: str | None = None
    """DeepSpeed config: zero2, zero3, zero3_offload (ds_configs/<name>.json) or a JSON path.
    None uses the one accelerate launch was given, if any. "auto" values are filled from here."""
    resume: str = "none"
    """none (a new run: refused if out_dir already holds one, unless overwrite), auto (the newest
    complete checkpoint in out_dir that loads, if any) or a checkpoint folder: a path, or
    ``checkpoints/step-N`` / ``step-N`` (N padded or not) inside out_dir."""
    overwrite: bool = False
    """With resume=none: move a previous run's outputs (metrics, checkpoints, final model, logs)
    into ``out_dir/previous/<UTC time>/`` first, instead of refusing to mix two runs in one
    folder. Nothing is deleted, and files the run did not write are never touched."""
    out_dir: str = "runs/default"
    """Where training writes checkpoints, logs and the final model."""
    seed: int = 1234
    """Global seed for model init and dropout (the data order has its own, data.seed)."""

    def __post_init__(self) -> None:
        self.out_dir, self.resume, self.deepspeed = map(
            home, (self.out_dir, self.resume, self.deepspeed)
        )
        check_seed(self.seed, "seed")
        if not self.out_dir.strip():  # Path("") is the current folder: training would write there
            raise UserError("out_dir is empty: name the run's folder, e.g. out_dir=runs/my-run")
        if not self.data.path.strip():  # read as the current folder: "out_dir is inside it"
            raise UserError(
                "data.path is empty: give the prepared folder (prepare's --out), e.g. "
                "data.path=data/prepared"
            )
        if not self.resume.strip():  # read as the current folder: "no COMPLETE file"
            raise UserError("resume is empty: give none (a new run), auto, or a checkpoint folder")


def load_run_config(
    name_or_path: str | None = None, overrides: list[str] | None = None
) -> RunConfig:
    """A shipped config by name (``tiny``, ``smollm2-135m``, ...) or a YAML path, plus overrides."""
    cfg = load_config(RunConfig, name_or_path or DEFAULT_CONFIG, overrides)
    asked_arch = [o for o in overrides or [] if o.split("=", 1)[0].startswith("model.arch")]
    if asked_arch and cfg.model.path != "random":  # a saved model keeps its own architecture
        raise UserError(
            f"{asked_arch[0].split('=', 1)[0]} shapes only model.path=random; the model at "
            f"{cfg.model.path} keeps its own architecture: remove the override"
        )
    return cfg
