"""``amazon-sft eval`` / ``accelerate launch eval/evaluate.py``: score models on held-out and seen titles.

    amazon-sft eval --data DIR --model config:smollm2-135m --out runs/eval-base
    amazon-sft eval --data DIR --compare config:smollm2-135m runs/smollm2-lora --out runs/eval
    amazon-sft eval --data DIR --compare ... --questions questions.jsonl --out runs/eval-e2e

The prompts come from amazon_sft.prompts (phrasing 0), exactly as training renders them, with
the right record handed over for grounded splits ("oracle context"); ``--questions`` instead
asks free-form questions through ``ask``'s Answerer, end to end (evaluation/end_to_end.py).
"""

from __future__ import annotations

import gc
import sys
from contextlib import ExitStack
from pathlib import Path

from amazon_sft.bounds import check_prompt_fits, context_of
from amazon_sft.data.encode import closed_book_answer, word_starts
from amazon_sft.data.fingerprints import check_fingerprints
from amazon_sft.data.manifest import Manifest, read_manifest, stale_split
from amazon_sft.distributed import build_eval_accelerator
from amazon_sft.errors import KNOWN_FAILURES, known_failure
from amazon_sft.evaluation import end_to_end_run
from amazon_sft.evaluation.arguments import parse_args
from amazon_sft.evaluation.generation import Decoding, generate_answers, reference_nll
from amazon_sft.evaluation.items import (
    SPLIT_FILES,
    EvalItem,
    build_items,
    fewer_than_asked,
    read_eval_rows,
)
from amazon_sft.evaluation.loading import (
    compared_overrides,
    config_of,
    held_back_rows,
    load_for_eval,
    pick_device,
    saved_folder,
)
from amazon_sft.evaluation.oracle_scores import ROW_SCORES, compare, figure_intervals, summarise
from amazon_sft.evaluation.oracle_types import AnswerRow, OracleModel, OracleReport, SplitScores
from amazon_sft.evaluation.question_file import check_question_file
from amazon_sft.evaluation.report import write_report
from amazon_sft.evaluation.vllm_backend import check_vllm_usable, generate_with_vllm
from amazon_sft.exiting import exit_skipping_teardown
from amazon_sft.output_lock import DataReadLock, OutputLock
from amazon_sft.prompts import build_prompt_format, strip_citations
from amazon_sft.tokenizer import choose_pad_id, hf_encoder, tokenizer_fingerprint
from amazon_sft.trained_on import check_trained_on

GROUNDED_KEYS = ("context_records", "context_record_tokens")  # as prepare taught them


def score_model(
    spec, overrides, data_dir, manifest, splits, mode, index, decoding, accelerator, args
) -> tuple[str, dict, dict[str, list[EvalItem]], int]:
    """Generate and score one model on every split: (label, split -> per-example arrays, the
    items asked, the rows its run held back from training: ``train.validation_rows``). ``index`` is the catalogue grounded prompts retrieve from (None closed-book).
    Reference perplexity comes first: the vLLM backend hands the GPU to vLLM."""
    model, tok, cfg, label = load_for_eval(spec, overrides, pick_device())
    fmt = build_prompt_format(tok, cfg.data)
    check_fingerprints(manifest, tokenizer_fingerprint(tok), fmt.fingerprint(), str(data_dir),
                       config_of([spec], overrides), "--data", cfg.data.templates,
                       owned_by_a_run=True)  # fmt: skip
    builder = _grounded_builder(index, manifest, cfg, fmt, tok)
    items = build_items(splits, mode, fmt, builder, args.n)
    encode, pad_id = hf_encoder(tok), choose_pad_id(tok)
    bos = fmt.bos
    starts, limit = word_starts(tok), manifest.data["max_answer_tokens"]

    def cut(prompt_len: int, ids: list[int]) -> list[int]:  # as prepare cut the targets, for
        return closed_book_answer(prompt_len, ids, limit, manifest.max_seq_len, starts)

    prompts, nll = {}, {}  # both models whatever their own configs say
    for split, asked in items.items():
        prompts[split] = [bos + ids for ids in encode([it.prompt for it in asked])]
        answers = [
            # a grounded target is already cut to the record budget and ends with its citation
            [*(ids if it.context or it.absent else cut(len(p), ids)), tok.eos_token_id]
            for it, p, ids in zip(asked, prompts[split], encode([it.target for it in asked]))
        ]
        nll[split] = reference_nll(
            model, prompts[split], answers, pad_id, decoding.batch_size, accelerator
        )
    longest = max((len(p) for split in prompts.values() for p in split), default=0)
    check_prompt_fits(longest, decoding.max_new_tokens, context_of(model.config))
    if args.backend == "vllm":  # one export and one engine for all splits
        flat = generate_with_vllm(
            model,
            tok,
            [p for split in items for p in prompts[split]],
            decoding,
            args.seed,
            args.vllm_tensor_parallel,
            args.vllm_gpu_memory,
        )
        gens, start = {}, 0
        for split in items:
            gens[split] = flat[start : start + len(prompts[split])]
            start += len(gens[split])
    else:
        gens = {
            split: generate_answers(model, tok, p, decoding, pad_id, accelerator, desc=split)
            for split, p in prompts.items()
        }
    out = {
        split: {
            "answers": [g.text for g in gens[split]],
            "eos": [g.ended_with_eos for g in gens[split]],
            "nll": nll[split],
        }
        for split in items
    }
    del model
    gc.collect()
    return label, out, items, held_back_rows(spec)


def _open_index(mode: str, data_dir: Path):
    """The catalogue index, opened once for every model asked (None closed-book)."""
    if mode == "closed":
        return None
    from amazon_sft.answering.index import CatalogueIndex

    return CatalogueIndex(data_dir)


def _grounded_builder(index, manifest, cfg, fmt, tok):
    if index is None:
        return None
    import dataclasses

    from amazon_sft.data.grounded import GroundedBuilder

    taught = {k: manifest.data[k] for k in GROUNDED_KEYS if k in manifest.data}
    return GroundedBuilder(index, fmt, tok, dataclasses.replace(cfg.data, **taught))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    decoding = Decoding(
        args.max_new_tokens, args.repetition_penalty, args.no_repeat_ngram_size, args.batch_size
    )
    accelerator = build_eval_accelerator()
    with ExitStack() as held:
        # read from here to the report: a prepare --overwrite meanwhile is refused (it made
        # eval score the new catalogue's records against the old one's questions, exit 0)
        held.enter_context(DataReadLock(Path(args.data), shared=True, named=f"--data {args.data}"))
        manifest = _check_inputs(args, decoding, accelerator)  # a mistyped path locks nothing
        if accelerator.is_main_process:  # one writer of --out at a time, named to the second
            held.enter_context(OutputLock(Path(args.out), "eval"))
        return _evaluate(args, decoding, accelerator, manifest)


def _check_inputs(args, decoding: Decoding, accelerator) -> Manifest:
    """What the arguments name, checked before ``--out``'s lock file is made and before a
    model loads (SmolLM2: 25 s); the prepared folder's manifest."""
    if args.backend == "vllm":
        check_vllm_usable(decoding, accelerator.num_processes)
    manifest = read_manifest(
        Path(args.data), config_of(args.compare or [args.model], args.overrides)
    )
    for spec in args.compare or [args.model]:
        check_trained_on(saved_folder(spec), Path(args.data))
    if args.questions:
        check_question_file(Path(args.questions))
    return manifest


def _evaluate(args, decoding: Decoding, accelerator, manifest: Manifest) -> int:
    from accelerate.utils import set_seed

    data_dir = Path(args.data)
    if (note := stale_split(manifest, str(data_dir))) and accelerator.is_main_process:
        print(note, file=sys.stderr)
    if args.questions:
        return end_to_end_run.run(args, data_dir, accelerator)
    end_to_end_run.refuse_answering_flags(args)
    splits = {
        s: read_eval_rows(data_dir / f"{SPLIT_FILES[s]}.jsonl") for s in args.splits.split(",")
    }
    mode = resolve_mode(args.mode, manifest)
    if accelerator.is_main_process:
        for note in fewer_than_asked(splits, args.n, mode):
            print(note, file=sys.stderr)
    specs = dict(zip(("base", "tuned"), args.compare)) if args.compare else {"model": args.model}
    result = OracleReport(
        data=str(data_dir),
        mode=mode,
        decoding=vars(decoding) | {"greedy": True, "seed": args.seed, "backend": args.backend},
        seen_by_way=all("taught" in r for r in splits.get("seen", [])),
        data_rows=manifest.rows,
    )
    vectors: dict = {}
    index = _open_index(mode, data_dir)
    overrides = compared_overrides(specs, args.overrides)
    for name, spec in specs.items():
        set_seed(args.seed)
        label, scored, items, held = score_model(
            spec,
            overrides[name],
            data_dir,
            manifest,
            splits,
            mode,
            index,
            decoding,
            accelerator,
            args,
        )
        result.models[name] = OracleModel(label, spec, held)
        for split, asked in items.items():
            summary, vec = summarise(asked, scored[split])
            answers = scored[split]["answers"]
            vectors[(name, split)] = {
                **vec,
                "_preds": [strip_citations(a) for a in answers],
                "_raw": answers,
            }
            result.splits.setdefault(split, {})[name] = SplitScores(
                len(asked), summary, figure_intervals(vec, args.seed)
            )
    if args.compare:
        result.comparison = {
            s: compare(asked, vectors[("base", s)], vectors[("tuned", s)], args.seed)
            for s, asked in items.items()
        }
    for split, asked in items.items():
        for i, it in enumerate(asked):
            result.rows.append(
                AnswerRow(
                    split,
                    it.uid,
                    it.title,
                    it.reference,
                    [r.uid for r in it.context],
                    {m: vectors[(m, split)]["_raw"][i] for m in specs},
                    # each answer's outcomes as scored here: bench/grounded_intervals.py reads
                    # these rather than score again by a rule of its own
                    {
                        m: {
                            k: vectors[(m, split)][k][i]
                            for k in ROW_SCORES
                            if k in vectors[(m, split)]
                        }
                        for m in specs
                    },
                )
            )
    if accelerator.is_main_process:
        write_report(Path(args.out), result, args.examples)
        print(
            f"report: {Path(args.out) / 'report.md'} (also report.json, report.png, answers.jsonl)"
        )
    accelerator.wait_for_everyone()
    return 0


def resolve_mode(mode: str, manifest: Manifest) -> str:
    """``auto``: both modes when prepare taught grounded examples, closed-book otherwise."""
    if mode != "auto":
        return mode
    return "both" if manifest.grounded_docs > 0 else "closed"


def cli() -> None:
    try:
        code = main()
    except KNOWN_FAILURES as err:  # as amazon-sft eval says them
        said, code = known_failure("eval", err)
        print(said, file=sys.stderr)
    exit_skipping_teardown(code)  # launched on several ranks: gloo's teardown can abort a done run
