"""A question file (``amazon-sft eval --questions``) about the held-out products of a prepared
catalogue: a few questions of each kind (data/question_kinds.py), and questions about products the
catalogue does not hold (held-out products taken out of retrieval, and invented ones).

The demo writes one for the catalogue it prepared and reports the end-to-end figures on it; the
copy for the demo's default catalogue is eval/questions/demo_heldout.jsonl (a test checks the two
agree). The questions come from the same generators as training's, about products training never
saw: they measure the real path (retrieval, k records, the model) on new products, not on
questions someone outside the project wrote (eval/questions/ has those).
"""

from __future__ import annotations

from pathlib import Path

import orjson

from amazon_sft.data.grounded import uid_share
from amazon_sft.data.question_kinds import KINDS, make_question
from amazon_sft.evaluation.question_products import catalogue_records

INVENTED = (  # products no catalogue here holds: the answer must say so
    "do you sell the Quasar Toaster Q900 in chrome?",
    "Tell me about the novel Midnight Orchards of Reykjavik",
    "Vocês têm o Tambor Elétrico Zumbi 3000?",
)
DEMO_KINDS = ("typo", "portuguese", "descriptive")
"""The kinds of the demo's first three questions; its fourth is an invented product."""


def heldout_questions(prepared: Path, per_kind: int = 5, source: str = "generated") -> list[dict]:
    """Question rows (``question``, ``kind``, ``source``, ``uid`` or ``absent``) about held-out
    products of ``prepared``: ``per_kind`` of each kind, each about a different product where
    there are enough, then ``per_kind`` held-out products taken out of retrieval and the
    ``INVENTED`` ones. Same folder, same rows."""
    rows = catalogue_records(prepared / "catalogue.jsonl")
    held = sorted(
        (r for r in rows if r.get("split") == "heldout"),
        key=lambda r: uid_share(str(r["uid"]), "q:"),
    )
    out: list[dict] = []
    used: set[str] = set()
    for kind in KINDS[1:]:
        made = 0
        for fresh in (True, False):  # other products first, then any that can make the kind
            for product in held:
                uid = str(product["uid"])
                if made == per_kind or (fresh and uid in used):
                    continue
                q = make_question(kind, product)
                if q is not None and not any(o["question"] == q.text for o in out):
                    out.append({"question": q.text, "kind": kind, "source": source, "uid": uid})
                    used.add(uid)
                    made += 1
    spare = [r for r in held if str(r["uid"]) not in used] or held
    for product in spare[:per_kind]:  # the whole title: no other product is the one asked for
        text = f"do you have {product['title']}?"
        out.append({"question": text, "kind": "absent", "source": source, "absent": product["uid"]})
    out += [{"question": t, "kind": "absent", "source": source, "uid": "absent"} for t in INVENTED]
    return out


def write_questions(rows: list[dict], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    return path


def demo_questions(rows: list[dict]) -> list[str]:
    """The demo's four questions: its first typo, Portuguese and descriptive question, then an
    invented product.

    >>> demo_questions([{"question": "a", "kind": "typo"}, {"question": "b", "kind": "portuguese"},
    ...                 {"question": "c", "kind": "descriptive"}])
    ['a', 'b', 'c', 'do you sell the Quasar Toaster Q900 in chrome?']
    """
    first = {}
    for r in rows:
        first.setdefault(r["kind"], r["question"])
    return [first[k] for k in DEMO_KINDS if k in first] + [INVENTED[0]]
