"""Loss normalisation, chunked cross-entropy, head calls, and packed rows equal to separate
documents on every attention path, at micro-batch 2, on models loaded with from_pretrained."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from amazon_sft.attention import packed_attention_inputs
from amazon_sft.config import load_run_config
from amazon_sft.data.batch import PackedBatch
from amazon_sft.loss import SummedAnswerLoss, chunked_cross_entropy, micro_loss_scale
from amazon_sft.metrics import FlopCounter
from amazon_sft.modeling import choose_attention, load_model

from .conftest import save_random_model
from .stand_ins import flash_kernels

CPU_PATHS = ["sdpa_per_document", "sdpa", "eager"]


@pytest.fixture(scope="module")
def saved_models(tiny_cfg, tiny_tok, tmp_path_factory):
    """A tied Llama and an untied Mistral, both GQA, written with save_pretrained."""
    return {
        kind: save_random_model(
            tmp_path_factory.mktemp(kind), tiny_cfg, tiny_tok, kind, tied=kind == "llama"
        )
        for kind in ("llama", "mistral")
    }


def _load(folder, attn, *extra, precision="no"):
    cfg = load_run_config(
        "tiny",
        [f"model.path={folder}", "model.tokenizer=builtin:tiny", f"train.attention={attn}", *extra],
    )
    from amazon_sft.tokenizer import load_tokenizer

    tok = load_tokenizer(cfg.model)
    return load_model(cfg, len(tok), 0, precision)


def _packed(rows: list[list[np.ndarray]], seq: int, vocab_seed: int = 0) -> PackedBatch:
    """A batch of rows, each the given documents then pad (id 0), labels on every real token
    but each document's first (as prepare lays them out)."""
    ids = np.zeros((len(rows), seq), dtype=np.int64)
    labels = np.full((len(rows), seq), -100, dtype=np.int64)
    pos = np.tile(np.arange(seq, dtype=np.int64), (len(rows), 1))
    lens = []
    for r, docs in enumerate(rows):
        at = 0
        for d in docs:
            ids[r, at : at + len(d)] = d
            labels[r, at + 1 : at + len(d)] = d[1:]
            pos[r, at : at + len(d)] = np.arange(len(d))
            at += len(d)
        if at < seq:
            pos[r, at:] = np.arange(seq - at)
        lens.append([len(d) for d in docs])
    return PackedBatch.from_rows(ids, labels, pos, lens, np.arange(len(rows)))


def _docs(seed, sizes):
    g = np.random.default_rng(seed)
    return [g.integers(4, 500, n) for n in sizes]


def test_accumulated_micro_batches_give_the_one_big_batch_gradient(saved_models):
    from accelerate import Accelerator

    rows = [_docs(i, [14 - 3 * i]) for i in range(4)]  # very different label counts per row
    big = SummedAnswerLoss(_load(saved_models["llama"], "sdpa_per_document").train(), 7)
    summed, n = big(_packed(rows, 16))
    (summed / n).backward()
    expected, true_mean = [p.grad.clone() for p in big.parameters()], float(summed.detach()) / n

    accelerator = Accelerator(gradient_accumulation_steps=2, cpu=True)
    model = accelerator.prepare(
        SummedAnswerLoss(_load(saved_models["llama"], "sdpa_per_document"), 7)
    )
    halves = [_packed(rows[:2], 16), _packed(rows[2:], 16)]
    n_step = float(sum(b.label_tokens for b in halves))
    mean_of_means = []
    for batch in halves:
        with accelerator.accumulate(model):
            summed, n_micro = model(batch)
            mean_of_means.append(float(summed.detach()) / n_micro)
            accelerator.backward(summed * micro_loss_scale(2, 1, n_step))
    for got, want in zip([p.grad for p in model.parameters()], expected):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)
    # the naive mean of per-micro-batch means is a different number here, so the test can fail
    assert abs(sum(mean_of_means) / 2 - true_mean) > 1e-3


@pytest.mark.parametrize("chunk", [1, 3, 1000])
def test_chunked_cross_entropy_equals_full_logits(chunk):
    torch.manual_seed(0)
    head = torch.nn.Linear(8, 50, bias=False)
    hidden = torch.randn(2, 9, 8, requires_grad=True)
    labels = torch.randint(0, 50, (2, 9))
    labels[0, :4] = -100
    total, n = chunked_cross_entropy(head, hidden, labels, chunk)
    total.backward()
    got = (hidden.grad.clone(), head.weight.grad.clone())
    hidden.grad = None
    head.weight.grad = None
    logits = head(hidden)[:, :-1]
    ref = F.cross_entropy(
        logits.reshape(-1, 50), labels[:, 1:].reshape(-1), reduction="sum", ignore_index=-100
    )
    ref.backward()
    assert n == int((labels[:, 1:] != -100).sum())
    torch.testing.assert_close(total, ref)
    torch.testing.assert_close(got[0], hidden.grad)
    torch.testing.assert_close(got[1], head.weight.grad)


def test_head_calls_depend_on_the_batch_shape_never_its_data():
    """ZeRO-3 gathers the head's weight at every call, with a collective: ranks whose batches
    hold different numbers of answer tokens (or none) must still call it equally often."""
    torch.manual_seed(0)
    head = torch.nn.Linear(8, 50, bias=False)
    sizes: list[int] = []
    head.register_forward_hook(lambda m, args, out: sizes.append(args[0].shape[0]))
    counts = []
    for n_labels in (0, 3, 17, 30):  # a padding-only batch, then 1, 2 and 2 chunks' worth
        labels = torch.full((2, 17), -100)
        flat = torch.full((2 * 16,), -100)
        flat[:n_labels] = 7
        labels[:, 1:] = flat.view(2, 16)
        sizes.clear()
        hidden = torch.randn(2, 17, 8, requires_grad=True)
        total, n = chunked_cross_entropy(head, hidden, labels, chunk_tokens=16)
        total.backward()  # the recomputation in backward calls the head again
        assert n == n_labels and max(sizes) <= 16
        counts.append(len(sizes))
        assert hidden.grad is not None and head.weight.grad is not None
    # 2 rows x 16 label slots / 16 per chunk = 2 calls forward, 2 recomputed: for every batch
    assert counts == [4, 4, 4, 4]


def _packed_vs_alone(
    lm, attn: str, device: str = "cpu", dtype=torch.float32, tol=1e-5, alone_by=None
):
    """Two rows (3 documents + padding; 1 document + padding) and a padding-only row through the
    product's path; each document's logits must equal the document run alone (by ``alone_by``,
    the same weights under another attention, when ``lm``'s cannot run a lone document)."""
    rows = [_docs(1, [37, 21, 9]), _docs(2, [50]), []]
    batch = _packed(rows, 80).to(device)
    lm = lm.to(device, dtype).eval()
    alone_by = lm if alone_by is None else alone_by.to(device, dtype).eval()
    with torch.no_grad():
        packed = lm(
            input_ids=batch.input_ids,
            position_ids=batch.position_ids,
            use_cache=False,
            **packed_attention_inputs(batch, attn),
        ).logits.float()
        for r, docs in enumerate(rows):
            start = 0
            for d in docs:
                ids = torch.as_tensor(d, device=device)[None]
                alone = alone_by(input_ids=ids, use_cache=False).logits[0].float()
                got = packed[r, start : start + len(d)]
                torch.testing.assert_close(got, alone, rtol=tol, atol=tol)
                start += len(d)
    return batch


@pytest.mark.parametrize("kind", ["llama", "mistral"])
@pytest.mark.parametrize("attn", CPU_PATHS)
def test_packed_rows_equal_documents_run_alone_at_micro_batch_2(attn, kind, saved_models):
    choose_attention("auto")  # registers the packed-row functions
    lm = _load(saved_models[kind], attn)
    _packed_vs_alone(lm, attn)
    # and the summed loss of the batch is the sum of the documents' losses
    rows = [_docs(1, [37, 21, 9]), _docs(2, [50])]
    wrapped = SummedAnswerLoss(lm.eval(), chunk_tokens=16)
    with torch.no_grad():
        total, n = wrapped(_packed(rows, 80))
        alone = [wrapped(_packed([[d]], len(d))) for docs in rows for d in docs]
    assert n == sum(k for _, k in alone)
    torch.testing.assert_close(total, sum(t for t, _ in alone), rtol=1e-5, atol=1e-4)


def test_attention_follows_the_batch_boundaries_not_position_ids(saved_models):
    """Same ids and restarting position ids, but boundaries that say one document per row: the
    documents now see each other, so it is the explicit boundaries that keep them apart."""
    choose_attention("auto")
    lm = _load(saved_models["llama"], "sdpa_per_document").eval()
    rows = [_docs(1, [37, 21, 9]), _docs(2, [50])]
    apart = _packed(rows, 80)
    one_doc = PackedBatch.from_rows(
        apart.input_ids.numpy(),
        apart.labels.numpy(),
        apart.position_ids.numpy(),  # still restarting at each document
        [[67], [50]],
        apart.rows.numpy(),
    )
    with torch.no_grad():
        logits = [
            lm(
                input_ids=b.input_ids,
                position_ids=b.position_ids,
                use_cache=False,
                **packed_attention_inputs(b, "sdpa_per_document"),
            ).logits
            for b in (apart, one_doc)
        ]
    torch.testing.assert_close(logits[0][:, :37], logits[1][:, :37])  # the first document
    assert not torch.allclose(logits[0][0, 37:67], logits[1][0, 37:67], atol=1e-4)


def _reference_varlen_2_10(
    query, key, value, cu_seq_q, cu_seq_k, max_q, max_k, is_causal=False, return_aux=None
):
    """torch 2.10's signature exactly (its varlen.py): is_causal, no ``scale`` (the kernel's
    own 1/sqrt(head_dim)), no window_size, no enable_gqa (key/value heads must be copied); the
    kernel's contract checked as for later versions (``tests/stand_ins/flash_kernels.py``)."""
    assert is_causal and query.shape[1] == key.shape[1] and return_aux is None
    flash_kernels.check_contract(query, key, value, cu_seq_q, cu_seq_k, max_q, max_k)
    return flash_kernels.reference_attention(query, key, value, cu_seq_q, True, None)


@pytest.mark.parametrize("scale", [None, 16**-0.5, 0.5])
def test_varlen_attn_on_torch_2_10_keeps_the_models_scale(scale, monkeypatch):
    """torch 2.10's varlen_attn takes no ``scale`` (it came with 2.11): the call passed
    ``scale=`` on every torch, so a first training step on 2.10 with a GPU was a TypeError (a
    kernel audit; the stand-in had a ``scale`` parameter the real function lacks). On 2.10 the
    query is scaled instead, so a model whose scale is not 1/sqrt(head_dim) keeps its own."""
    import torch.nn.attention.varlen as varlen

    from amazon_sft import attention

    monkeypatch.setattr(varlen, "varlen_attn", _reference_varlen_2_10)
    attention._varlen_call.cache_clear()
    try:
        q, k, v = (torch.randn(8, 2, 16, dtype=torch.bfloat16) for _ in range(3))
        cu = torch.tensor([0, 5, 8], dtype=torch.int32)
        out = attention._varlen_call()(q, k, v, cu, 5, scale)
    finally:
        attention._varlen_call.cache_clear()
    want = flash_kernels.reference_attention(q, k, v, cu, True, scale)
    torch.testing.assert_close(out, want, atol=2e-2, rtol=2e-2)


@pytest.mark.parametrize("version", ["2.11+", "2.10"])
def test_varlen_attn_glue_against_a_cpu_stand_in(version, saved_models, monkeypatch):
    """torch's varlen_attn runs on CUDA only: the product's call (flattening, int32 boundaries,
    causal flag and GQA across torch versions, half precision) is checked here with CPU
    stand-ins that enforce the kernel's contract; the real kernel by the GPU test below."""
    import torch.nn.attention.varlen as varlen

    from amazon_sft import attention

    flash_kernels.install(monkeypatch)
    if version == "2.10":
        monkeypatch.setattr(varlen, "varlen_attn", _reference_varlen_2_10)
    attention._varlen_call.cache_clear()
    try:
        assert choose_attention("auto")[0] == "varlen_attn"
        lm = _load(saved_models["mistral"], "varlen_attn", precision="bf16")  # fp32 weights
        _packed_vs_alone(lm, "varlen_attn", dtype=torch.bfloat16, tol=3e-2)
    finally:
        attention._varlen_call.cache_clear()


def test_flash_attention_2_glue_keeps_documents_apart_on_a_cpu_stand_in(saved_models, monkeypatch):
    """flash_attention_2's boundaries and causal flag come from transformers (cu_seqlens from
    position_ids; a mask, if one were passed, would override them): on CPU nothing checked that
    documents stay apart there (a kernel audit). Each packed document's logits against the same
    weights run alone with SDPA (the stand-in refuses the dense flash function)."""
    from amazon_sft import attention

    choose_attention("auto")
    reference = _load(saved_models["mistral"], "sdpa")
    flash_kernels.install(monkeypatch)
    attention._varlen_call.cache_clear()
    try:
        assert choose_attention("auto")[0] == "varlen_attn"  # both are offered: name the one
        lm = _load(saved_models["mistral"], "flash_attention_2", precision="bf16")
        _packed_vs_alone(
            lm, "flash_attention_2", dtype=torch.bfloat16, tol=3e-2, alone_by=reference
        )
        assert any(c["kernel"] == "flash_attn_varlen_func" for c in flash_kernels.CALLS)
    finally:
        attention._varlen_call.cache_clear()


GPU_PATHS = ["varlen_attn", "flash_attention_2", "sdpa_per_document"]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("attn", GPU_PATHS)
def test_packed_rows_equal_documents_on_gpu_at_micro_batch_2(attn, saved_models):
    import importlib.util

    from amazon_sft.attention import has_varlen_attn

    if attn == "flash_attention_2" and not importlib.util.find_spec("flash_attn"):
        pytest.skip("flash-attn is not installed")
    if attn == "varlen_attn" and not has_varlen_attn():
        pytest.skip("this torch has no torch.nn.attention.varlen")
    choose_attention("auto")
    lm = _load(saved_models["llama"], attn, precision="bf16")
    _packed_vs_alone(lm, attn, "cuda", torch.bfloat16, tol=3e-2)


def test_flop_count_names_each_term():
    counter = FlopCounter(
        n_trained=10,
        n_frozen=100,
        n_head=7,
        head_trained=False,
        n_head_adapters=0,
        layers=2,
        hidden=4,
        peak_flops=None,
    )
    body = (6 * 10 + 4 * 100) * 6
    assert counter.flops([[3, 1], [2]], answer_tokens=5) == body + 4 * 7 * 5 + 6 * 2 * 4 * 14


def test_flop_counter_leaves_out_the_input_embedding(saved_models, tiny_tok):
    """PaLM/torchtitan convention: the embedding lookup is no matmul; the head is charged once
    (tied or not), for answer positions only."""
    for kind in ("llama", "mistral"):
        lm = _load(saved_models[kind], "sdpa")
        c = FlopCounter.for_model(lm, peak_tflops=0, world_size=1)
        vocab_x_hidden = lm.get_input_embeddings().weight.numel()
        total = sum(p.numel() for p in lm.parameters())
        untied = 0 if kind == "llama" else vocab_x_hidden
        assert c.n_head == vocab_x_hidden and c.head_trained
        assert c.n_trained == total - vocab_x_hidden - untied and c.n_frozen == 0
    # MFU's peak is all ranks' together (a mutation audit: every test had one rank)
    four = FlopCounter.for_model(lm, peak_tflops=100, world_size=4)
    assert four.peak_flops == 4e14 and four.mfu(2e14, seconds=1.0) == 0.5


def test_flop_counter_leaves_out_both_embeddings_of_lora_modules_to_save(saved_models):
    """LoRA with ``modules_to_save=["embed_tokens"]`` keeps the frozen embedding beside its
    trained copy; the frozen one was charged as body weight (4 V d a token, ~7.5% of MFU on
    Llama-3-8B; an outside review). Neither embedding is a matmul."""
    from amazon_sft.config_run_parts import LoraConfig
    from amazon_sft.modeling import wrap_lora

    lm = _load(saved_models["mistral"], "sdpa")
    body = sum(p.numel() for n, p in lm.named_parameters() if "embed_tokens" not in n)
    body -= lm.get_output_embeddings().weight.numel()
    peft_lm = wrap_lora(lm, LoraConfig(modules_to_save=["embed_tokens"]))
    adapters = sum(p.numel() for n, p in peft_lm.named_parameters() if "lora_" in n)
    c = FlopCounter.for_model(peft_lm, peak_tflops=0, world_size=1)
    assert (c.n_trained, c.n_frozen, c.head_trained) == (adapters, body, False)


def test_flop_counter_charges_lora_on_the_head_as_adapters_on_answer_positions(saved_models):
    """A metrics review: LoRA targeting lm_head counted its adapters as the head being trained
    (the frozen head charged 6N an answer token, not 4N) and left them out of the trained
    weights: MFU 17% high on a tiny model. The head's adapters run where the head runs."""
    from amazon_sft.config_run_parts import LoraConfig
    from amazon_sft.modeling import wrap_lora

    lm = _load(saved_models["mistral"], "sdpa")
    head = lm.get_output_embeddings().weight.numel()
    peft_lm = wrap_lora(lm, LoraConfig(target_modules=["q_proj", "lm_head"], r=4))
    named = dict(peft_lm.named_parameters())
    on_head = sum(p.numel() for n, p in named.items() if "lora_" in n and "lm_head" in n)
    on_body = sum(p.numel() for n, p in named.items() if "lora_" in n and "lm_head" not in n)
    c = FlopCounter.for_model(peft_lm, peak_tflops=0, world_size=1)
    assert (c.head_trained, c.n_head, c.n_trained) == (False, head, on_body)
    lens, answers = [[100]], 40
    want = (6 * on_body + 4 * c.n_frozen) * 100 + (4 * head + 6 * on_head) * answers
    want += 6 * c.layers * c.hidden * 100**2
    assert c.flops(lens, answers) == want


def test_sdpa_per_document_generates_like_sdpa_on_left_padded_batches(saved_models):
    choose_attention("auto")
    ids = torch.tensor([[0, 0, 0, 5, 6, 7], [8, 9, 10, 11, 12, 13]])
    mask = torch.tensor([[0, 0, 0, 1, 1, 1], [1, 1, 1, 1, 1, 1]])
    outs = []
    for attn in ("sdpa", "sdpa_per_document"):
        lm = _load(saved_models["llama"], attn).eval()
        lm.config.use_cache = True
        with torch.no_grad():
            outs.append(
                lm.generate(
                    input_ids=ids,
                    attention_mask=mask,
                    max_new_tokens=8,
                    do_sample=False,
                    pad_token_id=0,
                )
            )
    assert torch.equal(outs[0], outs[1])


def test_attention_choice_follows_the_machine_and_the_precision(monkeypatch):
    from amazon_sft import attention
    from amazon_sft.errors import UserError

    monkeypatch.setattr(attention, "has_varlen_attn", lambda: True)  # a GPU with torch >= 2.10
    monkeypatch.setattr(attention, "has_flash_attn", lambda: False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert choose_attention("auto", "bf16")[0] == "varlen_attn"
    assert choose_attention("auto", "no")[0] == "sdpa"  # flash kernels need bf16
    with pytest.raises(UserError, match=r"train\.precision=bf16"):
        choose_attention("varlen_attn", "no")
    monkeypatch.setattr(attention, "has_varlen_attn", lambda: False)
    # on a GPU, no flash kernel: the block-diagonal SDPA mask, 32,241 tok/s on an H200, against
    # 3,081 for one SDPA call per document (docs/benchmarks.md)
    assert choose_attention("auto", "bf16")[0] == "sdpa"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # on CPU: per document
    assert choose_attention("auto", "bf16")[0] == "sdpa_per_document"
    assert choose_attention("auto", "no")[0] == "sdpa_per_document"
    with pytest.raises(UserError, match=r"torch >= 2\.10"):
        choose_attention("varlen_attn", "bf16")


def test_a_gpu_older_than_ampere_gets_no_flash_path(monkeypatch):
    """``auto`` picked varlen_attn on any CUDA GPU; the flash kernels need Ampere or newer
    ("FlashAttention only supports Ampere GPUs or newer") and failed at the first step."""
    from amazon_sft import attention

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (7, 5))
    assert not attention.has_varlen_attn() and not attention.has_flash_attn()
    assert choose_attention("auto")[0] == "sdpa"  # one masked call, not a call per document
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (9, 0))
    assert attention.has_varlen_attn()


@pytest.mark.parametrize(
    ("fields", "needle"),
    [
        ({"attn_logit_softcapping": 50.0}, "softcapping"),
        ({"final_logit_softcapping": 30.0}, "softcapping"),
        ({"head_dim": 12}, "head_dim 12"),
        ({"head_dim": 512}, "head_dim 512"),
        # an outside review: the chunked loss calls the LM head itself, so Granite's logits
        # division and Cohere's logit scale were dropped (loss 8.92 against the model's 4.67);
        # gpt-oss's attention sinks were dropped by varlen_attn
        ({"logits_scaling": 8.0}, "logits_scaling"),
        ({"logit_scale": 0.0625}, "logit_scale"),
        ({"model_type": "gpt_oss"}, "attention sinks"),
    ],
)
def test_a_model_the_attention_paths_cannot_compute_is_refused(fields, needle):
    """A kernel audit: Gemma 2's attention softcapping was dropped by varlen_attn and its final
    logit softcapping by the chunked loss, silently; a head size the flash kernels refuse
    failed at the first step."""
    from types import SimpleNamespace

    from amazon_sft.errors import UserError
    from amazon_sft.model_support import check_supported

    base = {"hidden_size": 64, "num_attention_heads": 4}
    config = SimpleNamespace(**{**base, **fields})
    with pytest.raises(UserError, match=needle):
        check_supported(config, "varlen_attn", "m")
    if "head_dim" in fields:  # per-document SDPA takes any head size
        check_supported(config, "sdpa_per_document", "m")
    check_supported(SimpleNamespace(**base), "varlen_attn", "m")
    check_supported(SimpleNamespace(**base, logits_scaling=1.0, logit_scale=1), "varlen_attn", "m")


def test_a_gpu_older_than_ampere_trains_fp32_not_emulated_bf16(monkeypatch):
    """A kernel-contract review: torch.cuda.is_bf16_supported() says True on a T4 or V100 by
    default (bf16 emulated, slowly: including_emulation=True), so ``auto`` picked bf16 there and
    ``train.precision=bf16`` was never refused. Stand-in: an sm_75 card as torch 2.13 answers."""
    from amazon_sft.config import load_run_config
    from amazon_sft.distributed import resolve_precision
    from amazon_sft.errors import UserError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)  # fmt: skip
    assert resolve_precision(load_run_config("tiny", ["train.precision=auto"])) == "no"
    with pytest.raises(UserError, match="this GPU has no bf16"):
        resolve_precision(load_run_config("tiny", ["train.precision=bf16"]))
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    assert resolve_precision(load_run_config("tiny", ["train.precision=auto"])) == "bf16"


def test_the_loss_selects_answer_positions_found_on_the_host_without_a_device_nonzero():
    """A kernel-contract review: the boolean mask over labels ran aten::nonzero twice a
    micro-batch, which on CUDA makes the host wait for the whole decoder forward before it can
    queue the head and backward (the docstrings said one host synchronisation a step). The
    batch carries the positions, found by numpy on the host; the loss is unchanged."""
    from torch.profiler import profile

    torch.manual_seed(0)
    head = torch.nn.Linear(8, 50, bias=False)
    ids = np.random.default_rng(0).integers(3, 50, size=(2, 9))
    labels = ids.copy()
    labels[0, :4] = labels[1, 6:] = -100
    batch = PackedBatch.from_rows(ids, labels, np.tile(np.arange(9), (2, 1)), [[9], [9]], np.arange(2))  # fmt: skip
    hidden = torch.randn(2, 9, 8)
    with profile() as prof:
        total, n = chunked_cross_entropy(head, hidden, batch.labels, 4, batch.label_positions)
    assert not [e.name for e in prof.events() if "nonzero" in e.name]
    ref, ref_n = chunked_cross_entropy(head, hidden, batch.labels, 4)  # positions found here
    torch.testing.assert_close(total, ref)
    assert n == ref_n == batch.label_tokens == int((batch.labels[:, 1:] != -100).sum())


def test_flash_attention_2_is_offered_only_when_transformers_would_use_flash_attn_2(
    monkeypatch, tmp_path
):
    """``has_flash_attn`` asked only whether a ``flash_attn`` module exists; flash-attn 4 (and an
    old flash-attn) ship one too. transformers then does not take it for ``flash_attention_2``:
    from 5.25 (which installs ``kernels``) it fetches ``kernels-community/flash-attn2`` from the
    hub instead, at the first model load, on a cluster node that cannot reach it."""
    from transformers.utils import import_utils

    from amazon_sft import attention
    from amazon_sft.errors import UserError

    # flash-attn 4 as pip installs it: module flash_attn, distribution flash-attn-4
    (tmp_path / "flash_attn").mkdir()
    (tmp_path / "flash_attn" / "__init__.py").write_text('__version__ = "4.0.0"\n')
    info = tmp_path / "flash_attn_4-4.0.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: flash-attn-4\nVersion: 4.0.0\n")
    (info / "top_level.txt").write_text("flash_attn\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    caches = (import_utils._package_distribution_mapping, import_utils.is_flash_attn_2_available)
    for cached in caches:
        cached.cache_clear()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (9, 0))
    try:
        assert not attention.has_flash_attn()
        with pytest.raises(UserError, match=r"flash-attn 2"):
            choose_attention("flash_attention_2", "bf16")
    finally:
        for cached in caches:
            cached.cache_clear()


def test_flop_counter_takes_the_attention_width_from_the_heads():
    """An outside review: the attention term used ``hidden_size``; a model whose heads are not
    hidden/heads wide (Mistral-Nemo: 32 heads x 128 = 4096 against 5120 hidden) runs its
    attention matmuls at heads x head_dim, and the count was 25% too high there."""
    from transformers import MistralConfig, MistralForCausalLM

    cfg = MistralConfig(
        vocab_size=64,
        hidden_size=64,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
    )
    c = FlopCounter.for_model(MistralForCausalLM(cfg), peak_tflops=0, world_size=1)
    assert (c.layers, c.hidden) == (1, 2 * 16)


@pytest.mark.parametrize("implementation", ["sdpa_per_document", "varlen_attn"])
def test_a_training_forward_reads_nothing_back_from_the_device(implementation, monkeypatch):
    """A loop-overhead review: transformers' ``create_causal_mask`` ran
    ``find_packed_sequence_indices`` on every training forward of the boundary paths, which
    tests ``.all()`` in an ``if``: one host synchronisation per micro-batch (18 a step at 18
    micro-batches), against the README's one a step, for a mask the boundaries make useless.
    The training forward reads nothing back; its loss is the block-diagonal mask path's."""
    from torch.profiler import profile
    from transformers import LlamaConfig, LlamaForCausalLM

    from amazon_sft import attention
    from amazon_sft.data.loader import position_ids

    attention.register()
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, attn_implementation="sdpa",
    )  # fmt: skip
    lm = LlamaForCausalLM(cfg).train()
    if implementation == "varlen_attn":  # the CUDA kernel's stand-in, which takes bf16 only
        flash_kernels.install(monkeypatch)
        lm = lm.to(torch.bfloat16)
    lens = [[10, 6], [9, 7]]
    ids = np.random.default_rng(0).integers(3, 100, size=(2, 16))
    labels = ids.copy()
    labels[:, :3] = -100
    pos = np.stack([position_ids(np.array(n), 16) for n in lens])
    batch = PackedBatch.from_rows(ids, labels, pos, lens, np.arange(2))
    expected = SummedAnswerLoss(lm, 8)(batch)[0]  # sdpa: the block-diagonal mask
    lm.config._attn_implementation = implementation
    with profile() as prof:
        loss = SummedAnswerLoss(lm, 8)(batch)[0]
    reads = [e.name for e in prof.events() if e.name in ("aten::_local_scalar_dense", "aten::is_nonzero")]  # fmt: skip
    assert reads == [], reads
    bf16 = {"rtol": 1e-2, "atol": 1e-2} if implementation == "varlen_attn" else {}
    torch.testing.assert_close(loss, expected, **bf16)  # bf16 sums in another order
