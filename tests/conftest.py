"""Shared fixtures: the tiny config and tokenizer, a generated catalogue, one prepared folder."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

# Nothing in a test may reach the hub (the guide's rule, and this machine has no network): a
# name that is no local folder ("model.path=typo-model") spent ~70 s a launch in DNS retries
# before its one-line error. Offline, it fails at once; set before huggingface_hub reads it.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

# transformers binds its log handler to sys.stderr as it is when first configured: inside a test
# that captures output (capsys), a later test's warning then hit the closed capture ("--- Logging
# error ---" with a traceback: test_rows_longer_than_longropes_short_span_are_refused run alone).
# Configured here, it writes to the real stderr.
from transformers.utils import logging as _hf_logging

from amazon_sft.config import RunConfig, load_run_config
from amazon_sft.data.synthetic import write_catalogue
from amazon_sft.deepspeed_config import prebuilt_ops_dir
from amazon_sft.tokenizer import load_tokenizer

_hf_logging.get_logger("transformers")

REPO = Path(__file__).resolve().parents[1]
collect_ignore = ["stand_ins"]  # modules put on PYTHONPATH by tests, not tests themselves
# DeepSpeed compiles its CPU Adam (ZeRO offload) into TORCH_EXTENSIONS_DIR, by default one cache
# for every environment of the user whose build file names the environment's include paths: two
# checkouts' test runs each recompiled it (~80 s of both cores) after the other ran. One cache per
# environment; the training processes the tests launch inherit it.
os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(prebuilt_ops_dir()))
# Two xdist workers on two cores, each running torch (and the training processes it launches)
# with a thread per core: OpenMP threads spin waiting for the core the other worker holds. One
# thread each took test_resume_edges + test_train_e2e from 157 s to 128 s on 2 cores (-n 2).
if os.environ.get("PYTEST_XDIST_WORKER") and "OMP_NUM_THREADS" not in os.environ:
    import torch

    os.environ["OMP_NUM_THREADS"] = "1"  # the processes tests launch read it
    torch.set_num_threads(1)
# GGUF models converted once (amazon_sft/gguf_cache.py) into the environment's folder, not the
# user's ~/.cache; test processes and the commands they launch share it.
os.environ.setdefault("AMAZON_SFT_CACHE", str(Path(sys.prefix) / "amazon_sft_cache"))
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@pytest.fixture(scope="session")
def tiny_cfg() -> RunConfig:
    return load_run_config("tiny")


@pytest.fixture(scope="session")
def tiny_tok(tiny_cfg):
    return load_tokenizer(tiny_cfg.model)


@pytest.fixture()
def chat_tok(tiny_cfg):
    """The tiny tokenizer with a ChatML template and its special tokens, as instruct models have."""
    tok = load_tokenizer(tiny_cfg.model)
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tok.chat_template = CHATML
    return tok


@pytest.fixture(scope="session")
def catalogue(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("catalogue") / "trn.json.gz"
    write_catalogue(path, 2500, seed=3)
    return path


PREPARED_OVERRIDES = ["data.shard_rows=64"]
"""The ``prepared`` folder's config on top of tiny (tests that prepare it again use them too)."""


@pytest.fixture(scope="session")
def prepared(catalogue, tiny_cfg, tmp_path_factory) -> Path:
    from amazon_sft.prepare import prepare

    out = tmp_path_factory.mktemp("prepared") / "data"
    # small shards: this folder's ~430 rows span several, so shard boundaries are exercised
    prepare(catalogue, out, load_run_config("tiny", PREPARED_OVERRIDES), progress=False)
    return out


@pytest.fixture(scope="session")
def tiny_model_dir(tiny_cfg, tiny_tok, tmp_path_factory) -> Path:
    """The tiny Llama saved once with fixed random weights, so every run (1 process, DDP,
    ZeRO-2/3) starts from identical weights whatever zero.Init does to random init."""
    return save_random_model(
        tmp_path_factory.mktemp("tiny-model"), tiny_cfg, tiny_tok, "llama", tied=True
    )


def train_overrides(data_dir: Path, model_dir: Path, out_dir: Path, *extra: str) -> list[str]:
    """Dotted overrides for a short tiny run on prepared data from a saved model."""
    return [
        f"data.path={data_dir}",
        f"model.path={model_dir}",
        "model.tokenizer=builtin:tiny",
        f"out_dir={out_dir}",
        "train.trackers=[]",
        "train.warmup_steps=1",
        "train.lr=3e-3",
        *extra,
    ]


def train_command(data_dir: Path, model_dir: Path, out_dir: Path, *extra: str) -> list[str]:
    """The real entrypoint, as a subprocess command, for a tiny run (see train_overrides)."""

    script = Path(__file__).resolve().parents[1] / "amazon_sft" / "train.py"
    return [
        sys.executable,
        str(script),
        "--config",
        "tiny",
        *train_overrides(data_dir, model_dir, out_dir, *extra),
    ]


def train_here(*args: str) -> None:
    """``train``'s main in this process for a run whose files a test reads: the entrypoint's
    code without an interpreter's start and imports (~6 s a launch on the 2-core CI machine).
    What a launch prints, and how it exits or stops, is tested through a process. Accelerate's
    state, the root logger's handlers and level, the stop-signal handlers and any recorded stop
    are put back after it."""
    import logging
    import signal

    from accelerate.state import AcceleratorState, GradientState

    from amazon_sft import stop_signal, train

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level  # train's basicConfig(force=True) replaces them
    caught = {sig: signal.getsignal(sig) for sig in stop_signal.STOP_SIGNALS}  # the trainer's own
    stop_signal._received.clear()  # a stop an earlier in-process run recorded is not this one's
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    try:
        assert train.main(["--config", "tiny", *args]) == 0
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()
        for sig, handler in caught.items():
            signal.signal(sig, handler)
        stop_signal._received.clear()
        for handler in root.handlers[:]:
            root.removeHandler(handler)
        for handler in handlers:
            root.addHandler(handler)
        root.setLevel(level)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def tuned_run(prepared, tiny_model_dir, tmp_path_factory) -> Path:
    """A full fine-tune of the tiny model for 25 steps, through train's main."""
    out = tmp_path_factory.mktemp("tuned")
    train_here(*train_overrides(prepared, tiny_model_dir, out), "train.max_steps=25",
               "train.global_batch_size=4", "train.micro_batch_size=4")  # fmt: skip
    return out


# --- The shapes users run: a saved-and-reloaded model, 1024-token rows of real product text ---

REAL_ROWS = REPO.parent / "shared" / "data" / "amazontitles_real_head_sample.jsonl"
REAL_SHAPE_SEQ = 1024


def save_random_model(folder: Path, tiny_cfg, tiny_tok, model_type: str, tied: bool) -> Path:
    """A small random Llama/Mistral (grouped-query attention: 4 query heads, 2 key/value heads)
    written with ``save_pretrained``, so tests load it with ``from_pretrained`` as users do."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from amazon_sft.tokenizer import choose_pad_id

    torch.manual_seed(0)
    arch = {
        **tiny_cfg.model.arch,
        "model_type": model_type,
        "vocab_size": len(tiny_tok),
        "pad_token_id": choose_pad_id(tiny_tok),
        "tie_word_embeddings": tied,
    }
    if model_type == "mistral":
        arch["sliding_window"] = None
    AutoModelForCausalLM.from_config(AutoConfig.for_model(**arch)).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def mistral_model_dir(tiny_cfg, tiny_tok, tmp_path_factory) -> Path:
    """A tiny Mistral with an untied LM head, saved with save_pretrained."""
    return save_random_model(
        tmp_path_factory.mktemp("tiny-mistral"), tiny_cfg, tiny_tok, "mistral", tied=False
    )


def _long_generated_catalogue(path: Path) -> Path:
    """The generated catalogue with each description repeated to real lengths (hundreds of
    tokens), for machines without ../shared/data."""
    import orjson

    src = path.with_name("short.json")
    write_catalogue(src, 1500, seed=11)
    with open(path, "wb") as fh:
        for line in src.read_bytes().splitlines():
            try:
                row = orjson.loads(line)
            except orjson.JSONDecodeError:  # the generator's deliberately broken lines: kept
                fh.write(line + b"\n")
                continue
            if isinstance(row, dict) and isinstance(row.get("content"), str):
                row["content"] = " ".join([row["content"]] * 6)
            fh.write(orjson.dumps(row) + b"\n")
    return path


@pytest.fixture(scope="session")
def real_shape_data(tiny_cfg, tmp_path_factory) -> Path:
    """Prepared rows of 1024 tokens: the real AmazonTitles rows of ../shared/data when present
    (read there, never copied), else a generated catalogue with long descriptions."""
    from amazon_sft.config import load_run_config
    from amazon_sft.prepare import prepare

    root = tmp_path_factory.mktemp("real-shape")
    source = REAL_ROWS if REAL_ROWS.is_file() else _long_generated_catalogue(root / "trn.json")
    cfg = load_run_config(
        "tiny", [f"data.max_seq_len={REAL_SHAPE_SEQ}", "data.max_answer_tokens=512"]
    )
    prepare(source, root / "data", cfg, progress=False)
    return root / "data"


GROUNDED = [
    "data.max_seq_len=512",
    "data.grounded_fraction=0.5",
    "data.absent_fraction=0.3",
    "data.context_records=3",
    "data.context_record_tokens=40",
]
"""The grounded settings the grounded tests prepare with (small rows, three records)."""


@pytest.fixture(scope="module")
def grounded_prepared(catalogue, tmp_path_factory):
    """The catalogue prepared with ``GROUNDED``, once per test module that asks for it."""
    from amazon_sft.prepare import prepare

    out = tmp_path_factory.mktemp("grounded") / "data"
    prepare(catalogue, out, load_run_config("tiny", GROUNDED), progress=False)
    return out


@pytest.fixture()
def stand_ins(monkeypatch):
    """The CPU stand-ins of the CUDA flash kernels in place (tests/stand_ins/flash_kernels.py);
    yields the list of their calls."""
    from amazon_sft import attention

    from .stand_ins import flash_kernels

    flash_kernels.install(monkeypatch)
    flash_kernels.CALLS.clear()
    yield flash_kernels.CALLS
    attention._varlen_call.cache_clear()


@pytest.fixture()
def fresh_accelerate():
    """accelerate keeps one process-wide state; each run here sets its own precision."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    yield
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


def as_saved(final: Path) -> None:
    """``final``'s checksums written again after a test edited it into what a save would have
    written (a run trained with ``data.path=data``, say): the files a load reads are listed."""
    from amazon_sft.checkpoint_checksums import FINAL_UNLISTED, write_checksums

    write_checksums(final, skip=FINAL_UNLISTED)
