"""Benchmark: CPU cost of a question through ``index.search`` at catalogue scale (generated
products), for exact-title, misspelt, Portuguese and very long questions, against a ``--base``
checkout.

python bench/query_cost.py --products 300000 --base /tmp/recall/base

The catalogue is bench/retrieval_speed.py's generated products. Each checkout builds its own
index of it (``build_index``, not a full prepare; the index format changed since issue 22 began,
so a base cannot read this checkout's), timed (wall seconds), in a process of its own, then
answers the same questions there. Printed: each build's seconds, and CPU milliseconds a question
per kind (after one warm-up question of each kind, whose one-off cost, the vocabulary by length
that repairs read, is printed apart), with the ratios to the base.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from checkout import REPO, code_path, emitted_by

sys.path.insert(0, code_path(sys.argv))


def write_catalogue(folder: Path, n: int) -> list[str]:
    """``n`` generated products as catalogue.jsonl; returns their titles."""
    import orjson

    from amazon_sft.data.synthetic import _product

    rng = random.Random(0)
    titles = []
    with open(folder / "catalogue.jsonl", "wb") as fh:
        for i in range(n):
            title, content = _product(rng, i)
            titles.append(title)
            rec = {"uid": f"{i:010d}", "title": title, "content": content, "split": "train"}
            fh.write(orjson.dumps(rec) + b"\n")
    return titles


def misspelt(title: str, rng: random.Random) -> str:
    """The title with two neighbouring letters of its longest word swapped.

    >>> misspelt("Wild Penguin Plush", random.Random(0))
    'Wild Pengiun Plush'
    """
    words = title.split()
    i = max(range(len(words)), key=lambda j: len(words[j]))
    w = words[i]
    if len(w) > 3:
        j = rng.randrange(1, len(w) - 2)
        words[i] = w[:j] + w[j + 1] + w[j] + w[j + 2 :]
    return " ".join(words)


def questions(titles: list[str], n: int) -> dict[str, list[str]]:
    """``n`` questions of each kind about randomly chosen titles."""
    rng = random.Random(1)
    picks = rng.sample(titles, n)
    vocab = list(dict.fromkeys(w.lower() for t in titles for w in t.split() if w.isalpha()))
    return {
        "exact": [f"Tell me about {t}" for t in picks],
        "typo": [misspelt(t, rng).lower() for t in picks],
        "portuguese": [f"Vocês têm o {t} em português? Qual é a garantia?" for t in picks],
        # up to 400 distinct catalogue words, what a 2,000-character request can hold: each
        # word looked up cost a pass over its postings (answering/repair.py MAX_LOOKUP_WORDS)
        "long": [" ".join(rng.sample(vocab, min(400, len(vocab)))) for _ in picks],
    }


def measure(folder: Path, asked: dict[str, list[str]], meaning: float = 0.0) -> dict[str, float]:
    """CPU ms a question per kind with this checkout's code (and each kind's warm-up);
    ``meaning``: ``--meaning-weight`` (answering/meaning.py; 0: words only)."""
    from amazon_sft.answering.index import CatalogueIndex

    index = CatalogueIndex(folder, meaning_weight=meaning) if meaning else CatalogueIndex(folder)
    out = {}
    for kind, texts in asked.items():
        t0 = time.process_time()
        index.search(texts[0], 3)
        out[f"{kind} first"] = 1000 * (time.process_time() - t0)
        t0 = time.process_time()
        for text in texts[1:]:
            index.search(text, 3)
        out[kind] = 1000 * (time.process_time() - t0) / max(len(texts) - 1, 1)
    return out


def build(folder: Path) -> dict[str, float]:
    """Wall seconds of this checkout's ``build_index`` over ``folder``'s catalogue.jsonl (it
    lived in answering/index.py before answering/index_build.py)."""
    try:
        from amazon_sft.answering.index_build import build_index
    except ImportError:
        from amazon_sft.answering.index import build_index
    start = time.perf_counter()
    build_index(folder)
    return {"build_s": time.perf_counter() - start}


def _run(code: str, folder: Path, asked_file: Path, meaning: float = 0.0) -> dict[str, float]:
    extra = ["--meaning-weight", str(meaning)] if meaning else []
    return emitted_by(__file__, code, ["--folder", str(folder), "--asked", str(asked_file), *extra])


def _own_index(code: str, tmp: Path, name: str) -> tuple[Path, float]:
    """A new folder with the catalogue (a hard link) and ``code``'s own index of it; the
    build's wall seconds."""
    folder = tmp / name
    shutil.rmtree(folder, ignore_errors=True)  # an earlier build's: each build starts bare
    folder.mkdir()
    (folder / "catalogue.jsonl").hardlink_to(tmp / "catalogue.jsonl")
    built = emitted_by(__file__, code, ["--folder", str(folder), "--asked", "-", "--build"])
    return folder, built["build_s"]


def _builds(codes: dict[str, str], tmp: Path, repeats: int) -> dict[str, tuple[Path, float]]:
    """Each checkout's index, built ``repeats`` times in turn (the order alternates, so neither
    always reads the catalogue from a warm page cache); the fastest build of each is kept."""
    best: dict[str, tuple[Path, float]] = {}
    for round_ in range(repeats):
        for name in list(codes)[:: -1 if round_ % 2 else 1]:
            folder, seconds = _own_index(codes[name], tmp, name)
            best[name] = (folder, min(seconds, best.get(name, (folder, seconds))[1]))
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--products", type=int, default=300_000)
    ap.add_argument("--queries", type=int, default=100, help="questions of each kind")
    ap.add_argument("--base", help="another checkout to compare with (e.g. git archive main)")
    ap.add_argument("--code", help="the checkout measured (default: this one)")
    ap.add_argument(
        "--meaning-weight",
        type=float,
        default=0.0,
        help="measure this checkout with --meaning-weight GAMMA, and words only beside it",
    )
    ap.add_argument("--folder", help=argparse.SUPPRESS)
    ap.add_argument("--asked", help=argparse.SUPPRESS)
    ap.add_argument("--emit", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--build", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument(
        "--build-repeats", type=int, default=2, help="index builds of each checkout (the fastest)"
    )
    args = ap.parse_args()
    if args.emit and args.build:
        print(json.dumps(build(Path(args.folder))))
        return
    if args.emit:
        asked = json.loads(Path(args.asked).read_text(encoding="utf-8"))
        print(json.dumps(measure(Path(args.folder), asked, args.meaning_weight)))
        return

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        titles = write_catalogue(tmp, args.products)
        asked_file = tmp / "asked.json"
        asked_file.write_text(json.dumps(questions(titles, args.queries)), encoding="utf-8")
        del titles
        codes = {"this": str(REPO), **({"base": args.base} if args.base else {})}
        built = _builds(codes, tmp, args.build_repeats)
        folder, seconds = built["this"]
        now = _run(str(REPO), folder, asked_file, args.meaning_weight)
        name = (
            f"--meaning-weight {args.meaning_weight:g}" if args.meaning_weight else "this checkout"
        )
        columns = {name: now}
        if args.meaning_weight:
            columns["words only"] = _run(str(REPO), folder, asked_file)  # the same code
        builds = f"index built in {seconds:.1f} s"
        if args.base:
            base_folder, base_seconds = built["base"]
            columns["base"] = _run(args.base, base_folder, asked_file)
            builds += f" (the base's: {base_seconds:.1f} s, ratio {seconds / base_seconds:.2f}x)"
        builds += f", wall, the fastest of {args.build_repeats} each, taking turns"
    print(f"{args.products} products, {builds}; CPU ms a question:")
    names, rest = list(columns), list(columns)[1:]
    print("| kind | " + " | ".join(names) + " |" + "".join(f" ratio to {n} |" for n in rest))
    print("|---|" + "---|" * (len(names) + len(rest)))
    for kind, ms in now.items():
        cells = [f"{columns[n][kind]:.1f}" for n in names] + [f"{ms / columns[n][kind]:.2f}x" for n in rest]  # fmt: skip
        print(f"| {kind} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
