"""Answering: retrieval recall on paraphrased questions, ask/chat through the CLI, export."""

import io
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import orjson
import pytest
import torch

from amazon_sft.answering.index import CatalogueIndex
from amazon_sft.answering.index_build import build_index
from amazon_sft.data.split import normalise_title

from .conftest import as_saved, train_here, train_overrides

REPO = Path(__file__).resolve().parents[1]
EN_PT = [
    "What is {t}?",
    "Tell me about {t}",
    "Can you describe the product '{t}'?",
    "What are the main features of {t}?",
    "Qual é a descrição de {t}?",
    "Me fale sobre {t}",
]
RECALL_FLOOR_FULL = 0.90  # the whole title, quoted in any of the phrasings
RECALL_FLOOR_PARTIAL = 0.85  # lower-cased, punctuation dropped, commonest word missing


def _cli(*args, **kw):
    return subprocess.run(
        [sys.executable, "-m", "amazon_sft.cli", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=600,
        **kw,
    )


def _records(prepared, n=120):
    seen, out = set(), []
    for line in (prepared / "catalogue.jsonl").read_bytes().splitlines():
        rec = orjson.loads(line)
        key = normalise_title(rec["title"])
        if key not in seen:
            seen.add(key)
            out.append(rec)
    return out[:n]


def _recall(index, records, variant) -> float:
    hits = 0
    for i, rec in enumerate(records):
        question = EN_PT[i % len(EN_PT)].format(t=variant(rec["title"]))
        top = index.search(question, 1)
        hits += bool(top) and normalise_title(top[0].title) == normalise_title(rec["title"])
    return hits / len(records)


def _drop_commonest(title: str, counts: Counter) -> str:
    words = normalise_title(title).split()
    if len(words) > 2:
        words.remove(max(words, key=lambda w: counts[w]))
    return " ".join(words)


def test_retrieval_recall_at_1_on_paraphrased_questions(prepared):
    stats = build_index(prepared)
    index = CatalogueIndex(prepared)
    records = _records(prepared)
    full = _recall(index, records, lambda t: t)
    # partly quoted: lower-cased, punctuation gone, and the title's most common word left out
    counts = Counter(w for r in records for w in normalise_title(r["title"]).split())
    partial = _recall(index, records, lambda t: _drop_commonest(t, counts))
    print(f"recall@1 full {full:.3f}, partial {partial:.3f} over {len(records)} titles ({stats})")
    assert full >= RECALL_FLOOR_FULL
    assert partial >= RECALL_FLOOR_PARTIAL


def test_sources_only_needs_no_model_and_prints_json(prepared):
    title = _records(prepared, 1)[0]["title"]
    proc = _cli(
        "ask", f"Tell me about {title}", "--index", str(prepared), "--sources-only", "--json"
    )
    assert proc.returncode == 0, proc.stderr
    sources = json.loads(proc.stdout)["sources"]
    assert sources[0]["title"] == title and {"uid", "title", "score"} <= set(sources[0])


def test_sources_only_json_echoes_the_question_as_it_was_read(prepared, capsys):
    """An outside trial: a question byte that is not UTF-8 (a Latin-1 terminal's "café") came
    back in ``--sources-only --json`` as a lone-surrogate escape, which strict JSON readers
    refuse; the answering path echoes the question as it read it (U+FFFD, spaces collapsed),
    and so does this one now."""
    from amazon_sft.cli import main

    asked = "whisk  caf" + chr(0xDCE9)  # how Python reads argv's byte 0xe9
    assert main(["ask", asked, "--index", str(prepared), "--sources-only", "--json"]) == 0
    line = capsys.readouterr().out
    assert "\\udc" not in line, line
    assert json.loads(line)["question"] == "whisk caf\N{REPLACEMENT CHARACTER}"


def test_sources_only_reads_the_gate_and_refuses_what_it_cannot_do(prepared, capsys):
    """A new user's run: ``--sources-only`` took ``--abstain-below -1`` and ``--quote-when-sure``
    silently (checked only when a model loads) and never said what the gate would do; a question
    past ``MAX_QUESTION_CHARS`` was cut without a word. Now the options are checked first, the
    gate (retrieval only) is reported, and a long question is refused. Through ``cli.main`` in
    this process (a subprocess costs ~7 s of imports a call), once as the real command."""
    from amazon_sft.cli import main

    def run(*args: str) -> tuple[int, str, str]:
        code = main(list(args))
        out, err = capsys.readouterr()
        return code, out, err

    title = _records(prepared, 1)[0]["title"]
    only = ["ask", f"Tell me about {title}", "--index", str(prepared), "--sources-only"]
    for args, needle in (
        ([*only, "--abstain-below", "-1"], "--abstain-below must be"),
        ([*only, "--gate", "off", "--quote-when-sure"], "--abstain-below RATIO"),
        ([*only, "--quote-when-sure"], "--sources-only"),
        ([*only, "--abstain-below", "1.4", "--quote-when-sure"], "--sources-only"),
        (["ask", "Tell " * 500, "--index", str(prepared), "--sources-only"], "at most 2000"),
        # a ratio under 1 never doubts (the first record scores at least the second), so the
        # gate said "sure" of every question: refused, naming 1 (the other rules only)
        ([*only, "--abstain-below", "0.5"], "under 1"),
        # the refusal names the option that is wrong, not every count option
        ([*only, "--k", "0"], "--k must be >= 1"),
    ):
        code, _, err = run(*args)
        assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, args
    assert "--max-new-tokens" not in run(*only, "--k", "0")[2]
    proc = _cli(*only, "--abstain-below", "-1")  # the real command: one line, exit 2
    assert proc.returncode == 2 and "--abstain-below must be" in proc.stderr
    assert "Traceback" not in proc.stderr
    sure, unsure, off = (
        json.loads(run(*only, "--json", *extra)[1])
        for extra in (["--abstain-below", "1"], ["--abstain-below", "1e9"], ["--gate", "off"])
    )
    assert sure["doubtful"] is False and unsure["doubtful"] is True and "doubtful" not in off
    text = run(*only, "--abstain-below", "1e9")[1]
    assert "ask abstains" in text and title in text


def test_chat_sources_only_needs_no_model_and_keeps_going(prepared, capsys, monkeypatch):
    """``ask --sources-only`` looked products up without a model; ``chat`` had no such option and
    loaded a model for a shopper who only wanted the records. Now chat takes it: each question's
    records (and the gate's verdict), a refused question is one line and the chat goes on, and
    no model is loaded."""
    from amazon_sft.answering import commands
    from amazon_sft.cli import main

    title = _records(prepared, 1)[0]["title"]
    typed = [f"Tell me about {title}", "Tell " * 500, "", "exit"]
    monkeypatch.setattr("sys.stdin", io.StringIO("\n".join(typed) + "\n"))  # a pipe's lines

    def no_model(args):
        raise AssertionError("chat --sources-only loaded a model")

    monkeypatch.setattr(commands, "_session", no_model)
    code = main(["chat", "--index", str(prepared), "--sources-only", "--gate", "words"])
    out = capsys.readouterr().out
    assert code == 0
    assert title in out and "Retrieval is sure (--abstain-below 1.4): chat answers" in out
    assert "amazon-sft chat: the question is 2499 characters; at most 2000" in out
    code = main(["chat", "--sources-only"])  # one line naming --index, before any prompt
    err = capsys.readouterr().err
    assert code == 2 and "--index" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("leave", ["sair", "Quit", "/exit", " EXIT "])
def test_chat_ends_on_the_words_people_type_to_leave(prepared, capsys, monkeypatch, leave):
    """The course's users write Portuguese: "sair" was sent to retrieval as a question, and so
    were "Quit" and "/exit"; after it, nothing more is read."""
    from amazon_sft.cli import main

    asked = []

    class Typed(io.StringIO):
        def readline(self, size=-1):
            asked.append(1)
            return super().readline(size)

    monkeypatch.setattr("sys.stdin", Typed(f"{leave}\nnever read\n"))
    code = main(["chat", "--index", str(prepared), "--sources-only", "--gate", "words"])
    out = capsys.readouterr().out
    assert code == 0 and len(asked) == 1, out
    assert "'sair'" in out  # the banner names it


def test_ask_json_and_chat_with_a_trained_model(prepared, tuned_run):
    other, title = (r["title"] for r in _records(prepared, 3)[1:])
    proc = _cli(
        "ask",
        f"Tell me about {other}",
        f"Qual é a descrição de {title}?",
        "--model",
        str(tuned_run),
        "--index",
        str(prepared),
        "--json",
        "--max-new-tokens",
        "12",
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    first, out = (json.loads(line) for line in proc.stdout.strip().splitlines()[-2:])
    assert first["sources"][0]["title"] == other  # one JSON line per question, in order
    assert isinstance(out["answer"], str) and out["sources"][0]["title"] == title
    assert 0.0 <= out["sources"][0]["answer_rougeL"] <= 1.0
    chat = _cli(
        "chat",
        "--model",
        str(tuned_run),
        "--index",
        str(prepared),
        "--max-new-tokens",
        "8",
        input=f"{'Tell ' * 500}\nTell me about {title}\nexit\n",
    )
    assert (
        chat.returncode == 0 and "Nearest catalogue records" in chat.stdout and title in chat.stdout
    )
    assert "amazon-sft chat: the question is 2499 characters; at most 2000" in chat.stdout


def test_ask_and_chat_say_when_the_answer_is_not_the_models_own(prepared, tuned_run):
    """Printed answers say when the gate wrote them: quoted (retrieval sure, the tiny random
    model cites nothing, so the first record is quoted) or abstained (retrieval not sure), as
    ``--json`` says with ``quoted`` / ``doubtful``; an answer the model wrote (``--gate off``)
    gets no mark."""
    title = _records(prepared, 1)[0]["title"]
    common = ("--model", str(tuned_run), "--index", str(prepared), "--max-new-tokens", "6",
              "--grounded")  # fmt: skip
    quoted = _cli("ask", f"Tell me about {title}", *common, "--abstain-below", "1",
                  "--quote-when-sure")  # fmt: skip
    assert quoted.returncode == 0, quoted.stderr[-2000:]
    assert "(the first record's answer: retrieval was sure" in quoted.stdout
    doubtful = _cli("chat", *common, "--abstain-below", "1e9", input=f"{title}\nexit\n")
    assert doubtful.returncode == 0, doubtful.stderr[-2000:]
    assert "(abstained without generating: retrieval was not sure" in doubtful.stdout
    plain = _cli("ask", f"Tell me about {title}", *common, "--gate", "off")
    assert plain.returncode == 0 and "retrieval was" not in plain.stdout


def test_an_abstention_by_the_gate_says_why(prepared, tuned_run, capsys):
    """The gate's abstention names its reason (``doubt.doubt_reason``) in the printed answer, in
    ``--json`` (``doubt``) and with ``--sources-only``: a shopper told "not sure" can tell a
    close second record from another book's title; an answer the gate let through has none.
    Through ``cli.main`` in this process (the printed answer once as the real command)."""
    from amazon_sft.cli import main

    def out(*args: str) -> str:
        assert main(list(args)) == 0, args
        return capsys.readouterr().out

    title = _records(prepared, 1)[0]["title"]
    common = ("--model", str(tuned_run), "--index", str(prepared), "--max-new-tokens", "4",
              "--grounded", "--abstain-below", "1e9")  # fmt: skip
    printed = _cli("ask", f"Tell me about {title}", *common)
    assert printed.returncode == 0, printed.stderr[-2000:]
    assert "times the second's (under 1e+09); the gate, --abstain-below;" in printed.stdout
    line = json.loads(out("ask", f"Tell me about {title}", *common, "--json"))
    assert line["doubtful"] and "times the second's" in line["doubt"]
    only = ("--index", str(prepared), "--sources-only", "--abstain-below")
    gated = json.loads(out("ask", f"Tell me about {title}", *only, "1e9", "--json"))
    sure = json.loads(out("ask", f"Tell me about {title}", *only, "1", "--json"))
    assert "times the second's" in gated["doubt"] and sure["doubt"] is None
    said = out("ask", f"Tell me about {title}", *only, "1e9")
    assert "Retrieval is not sure (--abstain-below 1000000000.0): the first record's" in said


def test_bad_questions_and_options_are_one_line_errors(prepared, tuned_run, capsys):
    """Options that cannot work together are refused in one line naming the flag, exit 2: in
    this process through ``cli.main`` (each a subprocess cost ~7 s of imports), and once as
    the real command, without a traceback."""
    from amazon_sft.cli import main

    ask = ["ask", "x", "--model", str(tuned_run), "--index", str(prepared)]

    def refused(args: list[str]) -> str:
        assert main(args) == 2, args
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "Traceback" not in err, err
        return err

    for args, needle in (
        (["ask", "x", "--sources-only"], "--index"),
        ([*ask, "--max-new-tokens", "0"], "--max-new-tokens"),
        ([*ask, "--gate", "off", "--quote-when-sure"], "(the gate off has none)"),
        # the closed-book model's answer has no records for the gate: one the user asked for
        (["ask", "x", "--model", str(tuned_run), "--quote-when-sure"], "leave --quote-when"),
        (["serve", "--model", str(tuned_run), "--abstain-below", "-2"], "--abstain-below"),
        ([*ask, "--quote-when-sure", "--abstain-below", "0"], "--abstain-below RATIO > 0"),
        # the gate reads the records of a grounded prompt: a closed-book answer has none
        ([*ask, "--closed-book", "--abstain-below", "1.4"], "--grounded"),
    ):
        assert needle in refused(args), args
    # the refusal names the flags given, not one that was not
    alone = refused([*ask, "--closed-book", "--abstain-below", "1.4"])
    both = refused([*ask, "--closed-book", "--abstain-below", "1.4", "--quote-when-sure"])
    assert "--quote-when-sure" not in alone and "--quote-when-sure" in both and "--grounded" in both
    proc = _cli(*ask, "--closed-book", "--abstain-below", "1.4")  # the real command
    assert proc.returncode == 2 and "--grounded" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.e2e
def test_lora_answers_merged_and_export_reloads_with_the_same_logits(
    prepared, tiny_model_dir, tmp_path
):
    run = tmp_path / "lora"
    train_here(*train_overrides(prepared, tiny_model_dir, run), "train.max_steps=3",
               "lora.enabled=true", "lora.r=4")  # fmt: skip
    # ask, serve and eval answer with the adapters merged into the base (each step of generation
    # ran three matmuls a projection), with the logits of the adapters kept apart
    from peft import PeftModel

    from amazon_sft.evaluation.loading import _no_lora, load_for_eval
    from amazon_sft.modeling import load_model, peft_quietly
    from amazon_sft.tokenizer import choose_pad_id

    answering, tok, cfg, _ = load_for_eval(str(run), [], "cpu")
    assert not any("lora" in name for name, _ in answering.named_parameters())
    base = load_model(_no_lora(cfg), len(tok), choose_pad_id(tok), "no")
    with peft_quietly():
        apart = PeftModel.from_pretrained(base, str(run / "final")).eval()
    ids = torch.tensor([[1, 5, 9, 14, 3]])
    with torch.no_grad():
        torch.testing.assert_close(answering(input_ids=ids).logits, apart(input_ids=ids).logits)
    out = tmp_path / "exported"
    proc = _cli("export", str(run), "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(out)  # plain transformers, no peft
    assert not any("lora" in name for name, _ in model.named_parameters())
    assert (out / "tokenizer.json").is_file() and (out / "README.md").is_file()
    with torch.no_grad():
        assert torch.isfinite(model(input_ids=torch.tensor([[1, 5, 9]])).logits).all()
    _serves_as_trained(out, cfg, tok, model)
    # ask, eval and serve take the export as they take the run ("checksums.json is missing ...
    # re-run training" before), its files verified
    exported, _, _, label = load_for_eval(str(out), [], "cpu")
    assert label == f"tuned {out}"
    with torch.no_grad():
        torch.testing.assert_close(exported(input_ids=ids).logits, model(input_ids=ids).logits)
    again = _cli("export", str(run), "--out", str(out))
    assert again.returncode == 2 and "not empty" in again.stderr


def _serves_as_trained(out, cfg, tok, model) -> None:
    """What a serving stack reads (a helper's audit): the prompt its chat template builds is
    the one trained on, BOS included (a plain-prompt model had no template; ``tok(text)`` lost
    the BOS); the pad is the model's; generation is ``ask``'s (the defaults stopped at 20
    tokens, before the citation); files transformers 4 reads too; the README shows the prompt."""
    from transformers import AutoTokenizer, GenerationConfig

    from amazon_sft.prompts import ContextRecord, build_prompt_format
    from amazon_sft.tokenizer import hf_encoder

    served = AutoTokenizer.from_pretrained(out)
    fmt = build_prompt_format(tok, cfg.data)
    turn = fmt.grounded("Tell me about X", [ContextRecord("B01", "X", "A soft bear.")])
    trained = fmt.bos + hf_encoder(tok)([fmt.wrap(turn)])[0]
    messages = [{"role": "user", "content": turn}]
    ids = served.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    assert list(getattr(ids, "input_ids", ids)) == trained
    assert served.pad_token_id == model.config.pad_token_id and served.padding_side == "left"
    generation = GenerationConfig.from_pretrained(out)
    assert generation.do_sample is False and generation.max_new_tokens == 160
    assert generation.eos_token_id == model.config.eos_token_id
    config = json.loads((out / "config.json").read_text())
    rope = config.get("rope_parameters") or {}
    assert config.get("rope_theta") == rope.get("rope_theta", config.get("rope_theta"))
    assert "rope_theta" in config  # transformers 4 read 10000 when it was only in rope_parameters
    tokenizer_config = json.loads((out / "tokenizer_config.json").read_text())
    assert tokenizer_config["tokenizer_class"] == "PreTrainedTokenizerFast"
    readme = (out / "README.md").read_text()
    taught = cfg.data.grounded_fraction > 0  # the card prompts as the run was trained
    assert ("Catalogue records:" in readme and "[source: uid]" in readme) is taught
    assert fmt.question("TITLE") in readme and (out / "amazon_sft_config.yaml").is_file()


def test_the_mode_and_the_index_are_checked_before_a_model_loads(
    prepared, tuned_run, monkeypatch, tmp_path, capsys
):
    """A refusal that needs only the run's config comes before the model's load (25 s for
    SmolLM2): the gate on a closed-book answer, and a missing prepared folder. Without
    ``--index`` the folder is the model config's ``data.path``, which the message names as
    such, with the flag that fixes it."""
    import amazon_sft.evaluation.loading as loading
    from amazon_sft.cli import main

    monkeypatch.setattr(loading, "load_for_eval", lambda *a, **k: pytest.fail("loaded a model"))
    monkeypatch.chdir(tmp_path)  # config:smollm2-135m's data.path is relative: not here
    for args, needles in (
        (["ask", "x", "--model", str(tuned_run), "--index", str(prepared), "--closed-book",
          "--abstain-below", "1.4"], ["--grounded"]),
        (["ask", "x", "--model", "config:smollm2-135m", "--index", str(prepared),
          "--abstain-below", "2.0"], ["--grounded"]),
        (["ask", "x", "--model", "config:smollm2-135m", "--grounded"],
         ["no --index given", "data.path", "--index"]),
        (["serve", "--model", "config:smollm2-135m", "--grounded"], ["--index"]),
    ):  # fmt: skip
        assert main(args) == 2
        err = capsys.readouterr().err.strip()
        assert all(n in err for n in needles) and len(err.splitlines()) == 1, err


def _refused_before_any_answer(capsys, args: list[str], *needles: str) -> None:
    from amazon_sft.cli import main

    assert main(args) == 2, args
    out, err = capsys.readouterr()
    lines = [x for x in err.splitlines() if x.startswith("amazon-sft ask: error:")]
    assert out == "" and len(lines) == 1 and "Traceback" not in err, (out, err)
    assert all(n in lines[0] for n in needles), lines[0]


def test_every_question_is_checked_before_the_model_loads(prepared, monkeypatch, capsys):
    """``ask "mogs kittens" "" "the prophet"`` answered the first question, then stopped at
    the empty one, the third never asked; an over-long one among several was refused before
    any. Each question's text is checked before the model loads (retrieval alone too), and
    the refusal names the question by its position."""
    import amazon_sft.evaluation.loading as loading

    monkeypatch.setattr(loading, "load_for_eval", lambda *a, **k: pytest.fail("loaded a model"))
    common = ["--model", "config:tiny", "--index", str(prepared)]
    for questions, needles in (
        (["mogs kittens", "", "the prophet"], ["question 2 of 3", "empty"]),
        (["mogs kittens", "the prophet", " \n "], ["question 3 of 3", "empty"]),
        (["mogs kittens", "Tell " * 500], ["question 2 of 2", "2499 characters; at most 2000"]),
    ):
        for only in ([], ["--sources-only"]):
            _refused_before_any_answer(capsys, ["ask", *questions, *common, *only], *needles)


def test_a_question_the_model_cannot_take_is_refused_before_any_is_answered(prepared, capsys):
    """What needs the model (the prompt must fit its context) is checked for every question
    after the load and before the first answer: the first question was answered, then the
    second refused."""
    long = "Quokka Lantern 7 8 9 " * 90  # about 1,100 tokens: over the tiny model's 1,024
    args = ["ask", "Tell me about a speaker", long, "--model", "config:tiny", "--grounded"]
    _refused_before_any_answer(
        capsys, [*args, "--index", str(prepared)], "question 2 of 2", "shorten the question"
    )


def test_an_empty_answer_is_said_to_be_empty(capsys):
    """A 3-step model streamed 18 blank lines as its answer and nothing said so."""
    from types import SimpleNamespace

    from amazon_sft.answering.shown import print_how

    print_how(SimpleNamespace(doubtful=False, quoted=False, answer="\n\n  \n"))
    assert "answer is empty" in capsys.readouterr().out
    print_how(SimpleNamespace(doubtful=False, quoted=False, answer="A lamp. [uid 1]"))
    assert capsys.readouterr().out == ""


def test_a_streamed_answer_prints_no_leading_blank_lines(capsys):
    """A new user's walkthrough: a tiny model's empty answer streamed about 8 blank lines before
    "(the model's answer is empty ...)", which read as broken. Leading white space is not shown
    (the answer itself, in --json and the API, is unchanged)."""
    from amazon_sft.answering.shown import AnswerPrinter

    show = AnswerPrinter()
    for piece in ["\n", "\n  ", "\n", "A lamp", "\n", "that glows."]:
        show(piece)
    assert capsys.readouterr().out == "A lamp\nthat glows."
    show = AnswerPrinter()
    for piece in ["\n"] * 8:
        show(piece)
    assert capsys.readouterr().out == ""


@pytest.fixture(scope="module")
def other_prepared(tmp_path_factory) -> Path:
    """A prepared folder of another catalogue (other products, another manifest)."""
    from amazon_sft.config import load_run_config
    from amazon_sft.data.synthetic import write_catalogue
    from amazon_sft.prepare import prepare

    root = tmp_path_factory.mktemp("other")
    write_catalogue(root / "trn.json.gz", 200, seed=5)
    prepare(root / "trn.json.gz", root / "data", load_run_config("tiny"), progress=False)
    return root / "data"


def _run_whose_data_path_is_relative(tuned_run: Path, where: Path) -> Path:
    """The tuned run's saved model, its config's data.path as a user types it: ``data``."""
    import shutil

    import yaml

    run = where / "run"
    shutil.copytree(tuned_run / "final", run / "final")
    config = run / "final" / "amazon_sft_config.yaml"
    saved = yaml.safe_load(config.read_text())
    saved["data"]["path"] = "data"
    config.write_text(yaml.safe_dump(saved))
    as_saved(run / "final")
    return run


def test_ask_without_index_answers_from_the_data_the_run_was_trained_on(
    prepared, other_prepared, tuned_run, tmp_path, monkeypatch, capsys
):
    """``data.path`` is kept as typed (``data``): from another project's folder, which has a
    ``data`` of its own, ``ask`` answered from that other catalogue and said nothing. It uses
    the prepared folder the run recorded; when that is gone and ``data`` here is another one,
    it refuses, naming --index."""
    import shutil

    from amazon_sft.cli import main

    run = _run_whose_data_path_is_relative(tuned_run, tmp_path)
    elsewhere = tmp_path / "other_project"
    shutil.copytree(other_prepared, elsewhere / "data")
    monkeypatch.chdir(elsewhere)
    title = json.loads((prepared / "heldout.jsonl").read_text().splitlines()[0])["title"]
    ask = ["ask", f"Tell me about {title}", "--model", str(run), "--max-new-tokens", "2", "--json"]
    assert main(ask) == 0, capsys.readouterr().err[-2000:]
    shown = json.loads(capsys.readouterr().out)
    ours = {json.loads(x)["uid"] for x in (prepared / "catalogue.jsonl").read_text().splitlines()}
    assert shown["sources"] and {s["uid"] for s in shown["sources"]} <= ours
    assert title in shown["prompt"]  # the prompt as sent (closed-book here), to send elsewhere

    moved = tmp_path / "trained_on.json"
    (run / "final" / "trained_on.json").rename(moved)
    recorded = json.loads(moved.read_text())
    (run / "final" / "trained_on.json").write_text(
        json.dumps({**recorded, "folder": str(tmp_path / "gone")})
    )
    as_saved(run / "final")
    assert main(ask) == 2
    err = capsys.readouterr().err.strip()
    assert "--index" in err and "trained on" in err and len(err.splitlines()) == 1, err
    # with --index given, the record is not consulted (it refused, saying "no --index given")
    assert main([*ask, "--index", str(prepared)]) == 0, capsys.readouterr().err[-2000:]
    assert json.loads(capsys.readouterr().out)["sources"]


def test_sources_only_without_index_reads_the_runs_record(
    prepared, other_prepared, tuned_run, tmp_path, monkeypatch, capsys
):
    """``--sources-only`` refused without --index even when --model names a run that records
    the prepared folder it was trained on; it shows that folder's records, as ask does."""
    import shutil

    from amazon_sft.cli import main

    run = _run_whose_data_path_is_relative(tuned_run, tmp_path)
    elsewhere = tmp_path / "other_project"
    shutil.copytree(other_prepared, elsewhere / "data")
    monkeypatch.chdir(elsewhere)
    title = json.loads((prepared / "heldout.jsonl").read_text().splitlines()[0])["title"]
    ask = ["ask", f"Tell me about {title}", "--model", str(run), "--sources-only", "--json"]
    assert main(ask) == 0, capsys.readouterr().err[-2000:]
    shown = json.loads(capsys.readouterr().out)
    ours = {json.loads(x)["uid"] for x in (prepared / "catalogue.jsonl").read_text().splitlines()}
    assert shown["sources"] and {s["uid"] for s in shown["sources"]} <= ours


def test_export_names_its_run_argument_not_an_option_it_lacks(tmp_path):
    (tmp_path / "notes").mkdir()
    proc = _cli("export", str(tmp_path / "notes"), "--out", str(tmp_path / "x"))
    assert proc.returncode == 2 and f"RUN {tmp_path / 'notes'}: no " in proc.stderr, proc.stderr
    assert "--model" not in proc.stderr


@pytest.mark.parametrize("spec", ["config:tiny", "amazon_sft/configs/tiny.yaml"])
def test_export_of_a_base_model_is_refused_not_carded_as_fine_tuned(spec, tmp_path):
    """An outside review: ``export config:tiny`` wrote a model card saying "a model fine-tuned
    by amazon_sft", and eval then titled its report "tuned". A base model needs no export."""
    proc = _cli("export", spec, "--out", str(tmp_path / "x"))
    assert proc.returncode == 2 and "is a base model, not a training run" in proc.stderr, (
        proc.stderr
    )
    assert not (tmp_path / "x").exists()


def test_a_changed_model_config_is_refused_as_damage(tuned_run, tmp_path):
    """final/config.json was not checksummed: one more layer loaded with random weights and
    answered dots, a bare {"model_type": "llama"} built a default-size Llama (24 GB, killed)."""
    import shutil

    from amazon_sft.errors import UserError
    from amazon_sft.evaluation.loading import load_for_eval

    run = tmp_path / "run"
    shutil.copytree(tuned_run / "final", run / "final")
    config = run / "final" / "config.json"
    saved = json.loads(config.read_text())
    config.write_text(json.dumps({**saved, "num_hidden_layers": saved["num_hidden_layers"] + 1}))
    with pytest.raises(
        UserError,
        match=r"config\.json (does not match its checksum|is missing or has the wrong size)",
    ):
        load_for_eval(str(run), [], "cpu")


def test_messages_for_a_run_without_a_model_yet_and_for_data_prepared_again(prepared, tmp_path):
    """A stopped run (checkpoints, no final/) was "not an amazon_sft training output?"; eval on
    the very folder prepared again (another digest) told the user to pass that same folder."""
    from amazon_sft.errors import UserError
    from amazon_sft.evaluation.loading import saved_folder
    from amazon_sft.trained_on import TrainedOn, check_trained_on, write_trained_on

    stopped = tmp_path / "stopped"
    (stopped / "checkpoints" / "step-00000004").mkdir(parents=True)
    with pytest.raises(UserError, match=r"no saved model \(final/\) yet, only checkpoints"):
        saved_folder(str(stopped))
    # a run before its first checkpoint: its marker and config.yaml only (a docs audit)
    started = tmp_path / "started"
    started.mkdir()
    (started / ".amazon_sft_run.json").write_text("{}")
    with pytest.raises(UserError, match=r"no saved model \(final/\) yet, nor a checkpoint"):
        saved_folder(str(started))
    data, model = tmp_path / "data", tmp_path / "final"
    data.mkdir()
    model.mkdir()
    (data / "manifest.json").write_bytes((prepared / "manifest.json").read_bytes())
    write_trained_on(model, TrainedOn(str(data.resolve()), "old"))
    with pytest.raises(UserError, match="was prepared again since the model was trained on it"):
        check_trained_on(model, data)
    # ask without --index said the folder was "neither at DATA nor at DATA" (a new user's
    # walkthrough): it is there, prepared again
    from amazon_sft.trained_on import index_folder_for

    with pytest.raises(UserError, match=r"was prepared again since.*--index \S*data"):
        index_folder_for(model, str(data))
    # another prepared folder at data.path was never the one trained on: not "prepared again"
    write_trained_on(model, TrainedOn(str(tmp_path / "elsewhere"), "old"))
    with pytest.raises(UserError, match="is neither at"):
        index_folder_for(model, str(data))


def test_export_in_bfloat16_holds_the_rounded_weights(tuned_run, tmp_path, capsys):
    """Exports were always float32 (538 MB for SmolLM2, 28 GB for a 7B): ``--dtype bfloat16``
    saves the weights rounded once, checked against them in float32."""
    from safetensors import safe_open

    from amazon_sft.cli import main

    out = tmp_path / "bf16"
    assert main(["export", str(tuned_run), "--out", str(out), "--dtype", "bfloat16"]) == 0
    assert "max logit difference" in capsys.readouterr().out
    with safe_open(out / "model.safetensors", "pt") as saved:
        dtypes = {saved.get_tensor(name).dtype for name in saved.keys()}  # noqa: SIM118
    assert dtypes == {torch.bfloat16}
    assert json.loads((out / "config.json").read_text())["torch_dtype"] == "bfloat16"


@pytest.mark.e2e
def test_export_checks_the_merge_against_the_adapters_kept_apart(
    prepared, tiny_model_dir, tmp_path, monkeypatch
):
    """export "compares its logits with base + adapter", but it loaded the run already merged
    (as answering does), so it compared the merge with itself (a new user's walkthrough: "max
    logit difference 0.00e+00"). A merge that went wrong must be refused."""
    from peft.tuners.lora import LoraModel

    from amazon_sft.answering.export import export_model
    from amazon_sft.errors import UserError

    run = tmp_path / "lora"
    train_here(*train_overrides(prepared, tiny_model_dir, run), "train.max_steps=2",
               "lora.enabled=true", "lora.r=4")  # fmt: skip
    real_merge = LoraModel.merge_and_unload

    def bad_merge(self, *args, **kwargs):
        merged = real_merge(self, *args, **kwargs)
        with torch.no_grad():
            merged.get_output_embeddings().weight.add_(0.5)
        return merged

    monkeypatch.setattr(LoraModel, "merge_and_unload", bad_merge)
    with pytest.raises(UserError, match="logits differ"):
        export_model(str(run), tmp_path / "exported")
    assert not (tmp_path / "exported").exists()


def test_an_export_keeps_which_data_it_was_trained_on_and_its_card_may_be_edited(
    prepared, tuned_run, tmp_path, capsys
):
    """An export dropped ``trained_on.json``, so ``eval --model EXPORT --data OTHER`` scored
    "held-out" products the model was trained on; and its checksums covered its README and
    generation_config.json, so editing the model card before an upload made ask, eval and serve
    call the model damaged (an outside review). The export keeps the record, and checks what
    the run's final/ checks (weights, shape configs) and its tokenizer."""
    from amazon_sft.cli import main
    from amazon_sft.errors import UserError
    from amazon_sft.evaluation.loading import load_for_eval, saved_folder
    from amazon_sft.trained_on import read_trained_on

    out = tmp_path / "exported"
    assert main(["export", str(tuned_run), "--out", str(out)]) == 0
    assert read_trained_on(out) == read_trained_on(saved_folder(str(tuned_run)))
    (out / "README.md").write_text("# My product model\n\nEdited before the upload.\n")
    gen = json.loads((out / "generation_config.json").read_text())
    (out / "generation_config.json").write_text(json.dumps({**gen, "max_new_tokens": 200}))
    load_for_eval(str(out), [], "cpu")  # not "damaged"
    # what makes the answers is still checked: the tokenizer and its chat template among them
    listed = json.loads((out / "checksums.json").read_text())
    assert "tokenizer_config.json" in listed and "amazon_sft_config.yaml" in listed
    assert not {"README.md", "generation_config.json"} & set(listed)
    weights = out / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8])
    with pytest.raises(UserError, match=r"model\.safetensors"):
        load_for_eval(str(out), [], "cpu")


@pytest.mark.e2e
def test_a_lora_run_whose_base_was_replaced_since_is_refused_not_answered_with(
    prepared, tiny_cfg, tiny_tok, tmp_path, monkeypatch
):
    """A LoRA run's final/ holds only the adapter; ask, eval, serve and export put it on
    whatever ``model.path`` holds now. A base re-saved with other weights since was used
    silently (an outside review; other shapes gave a traceback). The run records its base's
    weight digests, and a base that differs is refused in one line naming model.path."""
    import shutil

    from transformers import AutoModelForCausalLM

    from amazon_sft.errors import UserError
    from amazon_sft.evaluation.loading import load_for_eval
    from tests.conftest import save_random_model

    base = save_random_model(tmp_path / "base", tiny_cfg, tiny_tok, "llama", tied=True)
    run = tmp_path / "lora"
    train_here(*train_overrides(prepared, base, run), "train.max_steps=2", "lora.enabled=true",
               "lora.r=4")  # fmt: skip
    load_for_eval(str(run), [], "cpu")  # the base it was trained on: fine
    config = base / "config.json"  # the same weights read otherwise: another model too
    saved = config.read_text()
    config.write_text(json.dumps({**json.loads(saved), "rms_norm_eps": 0.1}))
    with pytest.raises(UserError, match=r"model\.path.*config\.json differ"):
        load_for_eval(str(run), [], "cpu")
    config.write_text(saved)
    # a hub name's weights are not here before its load: checked once the load brought them
    from amazon_sft import lora_base

    found = iter([None, {"model.safetensors": "0" * 64}])
    monkeypatch.setattr(lora_base, "base_weights_digest", lambda *_: next(found))
    with pytest.raises(UserError, match=r"model\.path.*differ"):
        load_for_eval(str(run), [], "cpu")
    monkeypatch.undo()
    model = AutoModelForCausalLM.from_pretrained(base)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01)
    shutil.rmtree(base)
    model.save_pretrained(base)  # same shapes, other weights
    with pytest.raises(UserError, match=r"model\.path.*differ"):
        load_for_eval(str(run), [], "cpu")


def test_sources_only_says_when_the_gate_had_one_record_and_no_rival(prepared, capsys, monkeypatch):
    """A new user's walkthrough: "Me fale sobre o Nintendo Switch" retrieved one unrelated book,
    and --sources-only said "Retrieval is sure" as for a record far ahead of the next. With one
    record there is no ratio to read: the verdict says so."""
    from amazon_sft.answering import ask
    from amazon_sft.cli import main

    record = _records(prepared, 1)[0]
    one = [{"uid": record["uid"], "title": record["title"], "content": "c", "score": 0.7}]
    monkeypatch.setattr(ask, "sources_only", lambda question, index, k: one)
    asked = ["ask", record["title"], "--index", str(prepared), "--sources-only", "--gate", "words"]
    code = main(asked)
    out = capsys.readouterr().out
    assert code == 0 and "only one record matched: no second to be ahead of" in out, out


def test_the_json_prompt_is_the_text_of_the_ids_the_model_was_given(prepared, tuned_run):
    """``prompt`` is "the text the model was given ... special tokens already there", to send an
    exported model elsewhere with ``add_special_tokens`` false; for a plain-format model (a
    tokenizer without a chat template) it lacked the BOS the ids begin with, so such a server
    was sent a prompt the model was never trained on (an outside review)."""
    from amazon_sft.answering.ask import Answerer
    from amazon_sft.answering.index import CatalogueIndex
    from amazon_sft.evaluation.loading import load_for_eval
    from amazon_sft.prompts import build_prompt_format

    model, tok, cfg, _ = load_for_eval(str(tuned_run), [], "cpu")
    fmt = build_prompt_format(tok, cfg.data)
    assert fmt.bos, "the tiny tokenizer's plain format starts with BOS"
    answerer = Answerer(model, tok, fmt, CatalogueIndex(prepared), cfg.data)
    question = f"Tell me about {_records(prepared, 1)[0]['title']}"
    plan = answerer.plan(question, max_new_tokens=2)
    shown = answerer.answer(plan, max_new_tokens=2).fields()["prompt"]
    assert tok(shown, add_special_tokens=False)["input_ids"] == plan.ids


def test_a_lora_run_whose_base_moved_says_where_its_base_is_named(
    prepared, tiny_model_dir, tmp_path
):
    """A LoRA run whose base folder moved said "could not load model '...'; check model.path"
    from ask and export, which take no model.path= (an outside review): it names where the base
    is looked for, and a link there is enough (the base's weights are checked against the
    adapter's record)."""
    import shutil

    from amazon_sft.errors import UserError
    from amazon_sft.evaluation.loading import load_for_eval

    base, run = tmp_path / "base", tmp_path / "lora"
    shutil.copytree(tiny_model_dir, base)
    train_here(*train_overrides(prepared, base, run), "train.max_steps=1", "lora.enabled=true",
               "lora.r=2")  # fmt: skip
    base.rename(tmp_path / "moved")
    with pytest.raises(UserError) as err:
        load_for_eval(str(run), [], "cpu")
    said = str(err.value)
    assert str(base) in said and "a link there to where it is now" in said, said
    # the advice works (its earlier one, edit model.path in the saved config, now fails that
    # file's checksum: a review)
    base.symlink_to(tmp_path / "moved")
    load_for_eval(str(run), [], "cpu")


def test_export_into_an_empty_folder_keeps_its_mode_and_group(tuned_run, tmp_path):
    """An empty ``--out`` the user made for a team (group nogroup, setgid, 2770) was replaced by
    the export's own folder (root:root, 755): teammates lost access (an outside review). The
    export takes on the folder's mode and group, as files made inside it would."""
    import os
    import stat

    from amazon_sft.cli import main

    out = tmp_path / "shared"
    out.mkdir()
    os.chown(out, -1, 65534)
    os.chmod(out, 0o2770)
    assert main(["export", str(tuned_run), "--out", str(out)]) == 0
    got = out.stat()
    assert stat.S_IMODE(got.st_mode) == 0o2770 and got.st_gid == 65534
    assert all(p.stat().st_gid == 65534 for p in out.rglob("*"))


def test_an_exported_card_prompts_as_the_run_was_trained(tiny_tok):
    """The card told every export to send a question with 3 retrieved records and expect
    ``[source: uid]``, also a model trained closed-book only (``data.grounded_fraction`` 0, the
    default of every shipped config but one), which ``ask`` itself asks closed-book (an outside
    review, loading exports with plain transformers)."""
    from amazon_sft.answering.export_files import export_readme
    from amazon_sft.config import load_run_config
    from amazon_sft.prompts import build_prompt_format

    for fraction, closed, grounded in ((0.0, 1.0, False), (0.5, 1.0, True), (1.0, 0.0, True)):
        cfg = load_run_config(
            "tiny", [f"data.grounded_fraction={fraction}", f"data.closed_book_fraction={closed}"]
        )
        fmt = build_prompt_format(tiny_tok, cfg.data)
        card = export_readme("m", "tiny", cfg, fmt, None)
        assert ("Catalogue records:" in card and "[source: uid]" in card) is grounded, card
        assert (fmt.question("TITLE") in card) is (closed > 0), card  # grounded only: a review
        assert ("not taught to read catalogue records" in card) is not grounded, card


def test_a_quoted_answer_is_not_said_to_lack_a_citation_it_had(capsys):
    """A new user's trial: the model answered "[source: <the first record>]" alone (no
    description), the gate quoted the record, and ask said "the model's answer did not cite
    it"; with --no-quote-when-sure the answer showed that citation."""
    from types import SimpleNamespace

    from amazon_sft.answering.shown import print_how

    print_how(SimpleNamespace(doubtful=False, quoted=True, answer="A lamp. [source: B1]"))
    out = capsys.readouterr().out
    assert "did not cite it" not in out and "without copying its description" in out, out
