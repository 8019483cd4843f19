"""The training model as the entrypoint builds it, from a folder written with save_pretrained, at
real shapes (1024-token rows, micro-batch 2): training mode, checkpointing that really
recomputes, per-rank dropout streams."""

import warnings
from types import SimpleNamespace

import pytest
import torch

from amazon_sft.config import load_run_config
from amazon_sft.data.loader import PackedLoader
from amazon_sft.data.shards import PackedShards
from amazon_sft.distributed import seed_per_rank
from amazon_sft.tokenizer import load_tokenizer
from amazon_sft.train import build_model

from .conftest import REAL_SHAPE_SEQ


def _build(model_dir, *extra):
    from accelerate import Accelerator

    cfg = load_run_config(
        "tiny",
        [
            f"model.path={model_dir}",
            "model.tokenizer=builtin:tiny",
            f"data.max_seq_len={REAL_SHAPE_SEQ}",
            *extra,
        ],
    )
    return build_model(cfg, load_tokenizer(cfg.model), Accelerator(cpu=True))


def _layer_calls(model, batch) -> int:
    """Calls of the first decoder layer's attention during one forward + backward. (transformers
    checkpoints a layer's ``forward``, so hooks on the layer itself never see the replay; its
    submodules' pre-hooks do.)"""
    attention = model.lm.get_decoder().layers[0].self_attn
    calls = []
    handle = attention.register_forward_pre_hook(lambda *_: calls.append(1))
    summed, n = model(batch)
    (summed / n).backward()
    handle.remove()
    return len(calls)


@pytest.mark.parametrize("checkpointing", [True, False])
def test_pretrained_model_trains_in_train_mode_and_checkpointing_recomputes(
    checkpointing, tiny_model_dir, real_shape_data
):
    flag = f"train.gradient_checkpointing={str(checkpointing).lower()}"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = _build(tiny_model_dir, flag)
    deprecated = [str(w.message) for w in caught if "deprecated" in str(w.message)]
    assert not deprecated, deprecated  # transformers' renamed checkpointing API, in every log
    assert model.training and model.lm.training  # from_pretrained alone returns eval mode
    batch = next(iter(PackedLoader(PackedShards(real_shape_data), micro_batch_size=2)))
    assert batch.input_ids.shape == (2, REAL_SHAPE_SEQ) and len(batch.doc_lens[0]) > 1
    # with checkpointing each layer runs again in backward: 2 calls, else 1
    assert _layer_calls(model, batch) == (2 if checkpointing else 1)


def test_each_rank_draws_its_own_dropout_masks():
    draws = []
    for rank in (0, 1, 0):
        seed_per_rank(1234, SimpleNamespace(process_index=rank))
        draws.append(torch.nn.functional.dropout(torch.ones(64), p=0.5))
    assert not torch.equal(draws[0], draws[1])  # rank 0 and rank 1 differ
    assert torch.equal(draws[0], draws[2])  # and each rank is reproducible


def test_the_real_shape_fallback_builds_without_the_shared_rows(tmp_path):
    """Without ../shared/data the fallback catalogue crashed on the generator's deliberately
    broken lines (a kernel-contract audit): every real-shape test errored on such a machine."""
    import orjson

    from .conftest import _long_generated_catalogue

    path = _long_generated_catalogue(tmp_path / "trn.json")
    long = 0
    for line in path.read_bytes().splitlines():
        try:
            row = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        long += isinstance(row, dict) and len(str(row.get("content"))) > 1000
    assert long > 500


def test_every_batch_has_positions_that_restart_where_its_boundaries_are(real_shape_data):
    """The attention paths read ``cu_seqlens``, the model's RoPE reads ``position_ids``: true by
    construction, tied by no test (a kernel audit). Each position is its index less the start
    of its segment, on every batch of the real-shape rows, padding tails included."""
    loader = PackedLoader(PackedShards(real_shape_data), 2)
    for batch, _ in zip(loader, range(20)):
        cu = batch.cu_seqlens.long()
        starts = torch.repeat_interleave(cu[:-1], cu.diff())
        flat = batch.position_ids.flatten()
        assert torch.equal(flat, torch.arange(flat.numel()) - starts)
        assert batch.max_segment_len == int(cu.diff().max())
        moved = batch.to("meta")
        assert all(
            getattr(moved, k).device.type == "meta"
            for k in ("input_ids", "labels", "position_ids", "cu_seqlens")
        )


def test_varlen_attention_refuses_dropout_in_training():
    """varlen_attn has no dropout: a model with attention dropout must not train without it."""
    from amazon_sft.attention import varlen_attention

    q = torch.zeros(1, 2, 4, 8)
    cu = torch.tensor([0, 4], dtype=torch.int32)
    with pytest.raises(ValueError, match="attention_dropout=0"):
        varlen_attention(
            SimpleNamespace(training=True), q, q, q, None, dropout=0.1, cu_seq_lens_q=cu,
            max_length_q=4,
        )  # fmt: skip
