"""Loss normalisation, chunked cross-entropy, and packed rows equal to separate documents."""

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoConfig, AutoModelForCausalLM

from amazon_sft.loss import SummedAnswerLoss, chunked_cross_entropy, micro_loss_scale
from amazon_sft.metrics import FlopCounter
from amazon_sft.modeling import choose_attention


def _tiny_lm(attn="sdpa", seed=0, vocab=64):
    torch.manual_seed(seed)
    config = AutoConfig.for_model(
        "llama",
        vocab_size=vocab,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
    )
    return AutoModelForCausalLM.from_config(config, attn_implementation=attn)


def _batch(n_rows, seq, seed):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, 64, (n_rows, seq), generator=g)
    labels = ids.clone()
    for i in range(n_rows):  # very different label counts per row: where a mean of means goes wrong
        labels[i, : 2 + 5 * i] = -100
    pos = torch.arange(seq).repeat(n_rows, 1)
    return ids, pos, labels


def _grads(model):
    return [p.grad.detach().clone() for p in model.parameters()]


def test_accumulated_micro_batches_give_the_one_big_batch_gradient():
    from accelerate import Accelerator

    ids, pos, labels = _batch(4, 16, seed=1)
    big = SummedAnswerLoss(_tiny_lm(), chunk_tokens=7)
    summed, n = big(ids, pos, labels)
    (summed / n).backward()
    expected, true_mean = _grads(big), float(summed.detach()) / n

    accelerator = Accelerator(gradient_accumulation_steps=2, cpu=True)
    model = accelerator.prepare(SummedAnswerLoss(_tiny_lm(), chunk_tokens=7))
    n_step = float((labels[:, 1:] != -100).sum())
    mean_of_means = []
    for rows in (slice(0, 2), slice(2, 4)):
        with accelerator.accumulate(model):
            summed, n_micro = model(ids[rows], pos[rows], labels[rows])
            mean_of_means.append(float(summed.detach()) / n_micro)
            accelerator.backward(summed * micro_loss_scale(2, 1, n_step))
    for got, want in zip(_grads(model), expected):
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


@pytest.mark.parametrize("attn", ["sdpa_per_document", "sdpa", "eager"])
def test_packed_row_equals_documents_run_alone(attn):
    choose_attention("auto")  # registers sdpa_per_document
    lm = _tiny_lm(attn).eval()
    g = torch.Generator().manual_seed(3)
    docs = [torch.randint(4, 64, (n,), generator=g) for n in (7, 5, 3)]
    row = torch.cat([*docs, torch.zeros(1, dtype=torch.long)])[None]  # one pad token at the end
    pos = torch.cat([torch.arange(len(d)) for d in docs] + [torch.arange(1)])[None]
    with torch.no_grad():
        packed = lm(input_ids=row, position_ids=pos, use_cache=False).logits[0]
        start = 0
        for d in docs:
            alone = lm(input_ids=d[None], use_cache=False).logits[0]
            torch.testing.assert_close(packed[start : start + len(d)], alone, rtol=1e-5, atol=1e-5)
            start += len(d)
    # and the loss of the packed row is the sum of the documents' losses
    labels = row.clone()
    labels[0, -1] = -100
    for s in (0, 7, 12):
        labels[0, s] = -100
    wrapped = SummedAnswerLoss(lm, chunk_tokens=4)
    with torch.no_grad():
        total, _ = wrapped(row, pos, labels)
        alone = sum(wrapped(d[None], torch.arange(len(d))[None], d[None].clone())[0] for d in docs)
    torch.testing.assert_close(total, alone, rtol=1e-5, atol=1e-5)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_packed_row_equals_documents_with_flash_or_sdpa_on_gpu():
    import importlib.util

    attn = "flash_attention_2" if importlib.util.find_spec("flash_attn") else "sdpa_per_document"
    choose_attention("auto")
    lm = _tiny_lm(attn).to("cuda", torch.bfloat16).eval()
    docs = [torch.randint(4, 64, (n,), device="cuda") for n in (9, 6)]
    row = torch.cat(docs)[None]
    pos = torch.cat([torch.arange(len(d), device="cuda") for d in docs])[None]
    with torch.no_grad():
        packed = lm(input_ids=row, position_ids=pos, use_cache=False).logits[0].float()
        alone = lm(input_ids=docs[1][None], use_cache=False).logits[0].float()
    torch.testing.assert_close(packed[9:], alone, rtol=2e-2, atol=2e-2)


def test_flop_count_names_each_term():
    counter = FlopCounter(n_trainable=10, n_frozen=100, layers=2, hidden=4, peak_flops=None)
    assert counter.flops([[3, 1], [2]]) == (6 * 10 + 4 * 100) * 6 + 6 * 2 * 4 * (9 + 1 + 4)


def test_sdpa_per_document_generates_like_sdpa_on_left_padded_batches():
    choose_attention("auto")
    ids = torch.tensor([[0, 0, 0, 5, 6, 7], [8, 9, 10, 11, 12, 13]])
    mask = torch.tensor([[0, 0, 0, 1, 1, 1], [1, 1, 1, 1, 1, 1]])
    outs = []
    for attn in ("sdpa", "sdpa_per_document"):
        lm = _tiny_lm(attn, seed=4).eval()
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
