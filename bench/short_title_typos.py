"""Benchmark: retrieval of short titles (at most three words) typed with one typo, on the real
rows of ../shared/data; recall@1/@k per kind of typo, against a ``--base`` checkout.

python bench/short_title_typos.py --base /tmp/recall/base

Each short title whose lower-cased text is unique among the rows gets one typo in its longest
word (three letters or more): a letter dropped, two neighbours swapped, a letter doubled, or a
letter replaced by its keyboard neighbour; the question is the title so misspelt. The questions
are written as a question file and measured by bench/question_recall.py (the same end-to-end
path: ``index.search`` on the text, k records).
"""

from __future__ import annotations

import argparse
import json
import random
import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ROWS = REPO.parent / "shared" / "data" / "amazontitles_real_head_sample.jsonl"
# each letter's right-hand neighbour on a QWERTY row (the last one's left-hand one)
NEIGHBOUR = dict(zip("qwertyuiopasdfghjklzxcvbnm", "wertyuioposdfghjklkxcvbnmn", strict=True))


def typo(word: str, kind: str, rng: random.Random) -> str:
    """``word`` with one typo of ``kind`` at a random inner position.

    >>> typo("kitten", "drop", random.Random(0))
    'kittn'
    """
    i = rng.randrange(1, len(word) - 1) if len(word) > 2 else 1
    if kind == "drop":
        return word[:i] + word[i + 1 :]
    if kind == "swap":
        return word[: i - 1] + word[i] + word[i - 1] + word[i + 1 :]
    if kind == "double":
        return word[:i] + word[i] + word[i:]
    return word[:i] + NEIGHBOUR.get(word[i], word[i]) + word[i + 1 :]


def questions(rows: list[dict], seed: int) -> list[dict]:
    """One typo question per kind for each short, unique title."""
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["title"].lower()] = counts.get(row["title"].lower(), 0) + 1
    rng = random.Random(seed)
    out = []
    for line, row in enumerate(rows):
        title = row["title"]
        words = re.findall(r"[A-Za-z]+", title)
        if not row["content"].strip() or counts[title.lower()] > 1 or not 1 <= len(words) <= 3:
            continue
        longest = max(words, key=len)
        if len(longest) < 3 or "&" in title:
            continue
        for kind in ("drop", "swap", "double", "neighbour"):
            wrong = typo(longest.lower(), kind, rng)
            text = title.lower().replace(longest.lower(), wrong, 1)
            q = {"question": text, "kind": kind, "source": "real", "title": title, "line": line}
            out.append(q)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", help="another checkout to compare with (e.g. git archive main)")
    ap.add_argument("--k", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--limit", type=int, default=0, help="at most this many titles (0: all)")
    ap.add_argument("--show-misses", action="store_true")
    args = ap.parse_args()
    if not ROWS.is_file():
        raise SystemExit(f"{ROWS} is missing: this benchmark reads the real rows")
    rows = [json.loads(x) for x in ROWS.read_text(encoding="utf-8").splitlines() if x.strip()]
    qs = questions(rows, args.seed)
    if args.limit:
        qs = qs[: 4 * args.limit]
    print(f"{len(qs) // 4} short titles, {len(qs)} typo questions")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "short_title_typos.jsonl"
        path.write_text("".join(json.dumps(q) + "\n" for q in qs), encoding="utf-8")
        cmd = [sys.executable, str(REPO / "bench" / "question_recall.py"), str(path)]
        cmd += ["--k", str(args.k)] + (["--base", args.base] if args.base else [])
        cmd += ["--show-misses"] if args.show_misses else []
        sys.exit(subprocess.run(cmd, check=False).returncode)


if __name__ == "__main__":
    main()
