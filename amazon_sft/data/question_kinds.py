"""Questions of every kind a shopper types, generated from a catalogue record itself.

Grounded training used to ask only the nine template phrasings around the exact title, and a
tuned model learned to match the exact title (issue 22: 0.49 right citations end to end). These
generators write the other kinds from the product's own title and description: a fragment of
the title, the title with a word dropped and the rest reordered, the title with typos, Portuguese
phrasings, a descriptive question from description words that are not in the title, and an
attribute question ("who wrote ...?") whose answer is one sentence of the description.

Every generator is pure and deterministic: its choices come from a ``random.Random`` seeded by a
blake2b hash of the uid and the kind, so a rerun (and any worker count) writes the same question.
A generator returns None when the record cannot make that kind (a one-word title has no fragment);
the builder then asks the title question instead.
"""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass

KINDS = ("title", "fragment", "reorder", "typo", "portuguese", "descriptive", "attribute")
"""The question kinds, in ``data.question_mix`` order; ``title`` is the template phrasings."""

_WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)?")
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'“])")
_STOP_WORDS = (
    "a an and the of for in on with to by at from is it its this that these every each new your "
    "you are be or as all made into over our their his her was were has have will can one"
)
_STOP = set(_STOP_WORDS.split())
_PORTUGUESE = (
    "Vocês têm {t}?",
    "Me fale sobre {t}",
    "O que é {t}?",
    "Procuro {t}",
    "Qual é a descrição de {t}?",
    "quero saber mais sobre {t}",
)
_FRAGMENT = ("{t}", "do you have {t}", "tell me about {t}", "{t}?", "info on {t} please")
_TYPO = ("{t}", "tell me about {t}", "do you sell {t}", "what is {t}")
_DESCRIPTIVE = (
    "I'm looking for something with {p}",
    "the one about {p}",
    "which product mentions {p}?",
    "do you have anything with {p}?",
)
_ATTRIBUTES = (  # (what the sentence says, the question it answers); {t} is a short title
    (re.compile(r"\b(?:written|illustrated|edited|translated)\s+by\b|\bauthor\b", re.I),
     "who wrote {t}?"),
    (re.compile(r"\b(?:paperback|hardcover|kindle|audio ?cd|dvd|blu-ray|vinyl)\b", re.I),
     "what format is {t}?"),
    (re.compile(r"\bages?\s+\d+|\byears? old\b|\bfor (?:kids|children|toddlers|adults)\b", re.I),
     "what age is {t} for?"),
    (re.compile(r"\bwarranty\b", re.I), "what warranty does {t} have?"),
    (re.compile(r"\b\d+\s*(?:pages|songs|tracks|recipes|illustrations|pieces)\b", re.I),
     "how many are in {t}?"),
    (re.compile(r"\bmade (?:of|from)\b", re.I), "what is {t} made of?"),
    (re.compile(r"\bperformed by\b|\brecorded (?:live )?(?:at|in)\b", re.I), "who plays on {t}?"),
    (re.compile(r"\b(?:weighs|measures|grams|centimetres|inches|millimetres)\b", re.I),
     "how big is {t}?"),
)  # fmt: skip
_KEYBOARD = dict(zip("qwertyuiopasdfghjklzxcvbnm", "wqrtyuiopsadfghjklzxcvbnmn"))


@dataclass(frozen=True)
class KindQuestion:
    """A generated question, its kind and language, and (attribute kind) the sentence of the
    description that answers it."""

    kind: str
    text: str
    language: str = "en"
    lead: str | None = None


def rng_for(uid: str, kind: str) -> random.Random:
    """The random source of one product and kind: the same on every machine and run.

    >>> rng_for("B01", "typo").random() == rng_for("B01", "typo").random()
    True
    """
    digest = hashlib.blake2b(f"{kind}:{uid}".encode(), digest_size=8).digest()
    return random.Random(int.from_bytes(digest, "big"))


def words(text: str) -> list[str]:
    """The words of a text, as written (apostrophes kept inside a word).

    >>> words("Ana's Garden: A Novel (2nd ed.)")
    ["Ana's", 'Garden', 'A', 'Novel', '2nd', 'ed']
    """
    return _WORD.findall(text)


def fragment(title: str, uid: str) -> KindQuestion | None:
    """A run of consecutive title words, at least two and at most all but one.

    >>> q = fragment("The Golden Lantern of Lisbon", "B01")
    >>> q.kind, " ".join(q.text.split()) != "The Golden Lantern of Lisbon"
    ('fragment', True)
    >>> fragment("Tutu", "B01") is None
    True
    """
    w = words(title)
    if len(w) < 3:
        return None
    rng = rng_for(uid, "fragment")
    best: list[str] = []
    for _ in range(6):  # the most telling of a few runs with two words that are not stop words
        size = rng.randint(2, len(w) - 1)
        start = rng.randrange(len(w) - size + 1)
        run = w[start : start + size]
        if len([x for x in run if x.lower() not in _STOP]) >= 2 and _telling(run) > _telling(best):
            best = run
    if not best:
        return None
    return KindQuestion("fragment", rng.choice(_FRAGMENT).format(t=" ".join(best).lower()))


def reorder(title: str, uid: str) -> KindQuestion | None:
    """The title words with one stop word (or the last word) dropped and the rest shuffled.

    >>> q = reorder("Zentra Speaker X20 with Bluetooth", "B01")
    >>> q.kind, sorted(q.text.split()) == sorted("zentra speaker x20 bluetooth".split())
    ('reorder', True)
    """
    w = [x.lower() for x in words(title)]
    if len(w) < 3:
        return None
    rng = rng_for(uid, "reorder")
    stops = [i for i, x in enumerate(w) if x in _STOP]
    del w[rng.choice(stops) if stops else rng.randrange(len(w))]
    for _ in range(4):  # a shuffle that changes nothing teaches nothing new
        shuffled = rng.sample(w, len(w))
        if shuffled != w:
            break
    return KindQuestion("reorder", " ".join(shuffled))


def misspell(word: str, rng: random.Random) -> str:
    """One character edit inside a word (first letter kept): a swap, a drop, a doubled letter or
    a neighbouring key.

    >>> misspell("Lantern", random.Random(0)) != "Lantern"
    True
    """
    i = rng.randrange(1, len(word) - 1)
    edit = rng.randrange(4)
    if edit == 0 and word[i] != word[i + 1]:
        return word[:i] + word[i + 1] + word[i] + word[i + 2 :]
    if edit == 1:
        return word[:i] + word[i + 1 :]
    if edit == 2:
        return word[:i] + word[i] + word[i:]
    near = _KEYBOARD.get(word[i].lower(), "e")
    return word[:i] + (near if near != word[i] else "x") + word[i + 1 :]


def typo(title: str, uid: str) -> KindQuestion | None:
    """The title, lower-cased, with one or two of its longer words misspelt.

    >>> q = typo("Girls Ballet Tutu Neon Pink", "B01")
    >>> q.kind, q.text != "girls ballet tutu neon pink"
    ('typo', True)
    >>> typo("A B", "B01") is None
    True
    """
    w = [x.lower() for x in words(title)]
    long = [i for i, x in enumerate(w) if len(x) >= 4 and not any(c.isdigit() for c in x)]
    if not long:
        return None
    rng = rng_for(uid, "typo")
    for i in rng.sample(long, min(len(long), rng.randint(1, 2))):
        w[i] = misspell(w[i], rng)
    return KindQuestion("typo", rng.choice(_TYPO).format(t=" ".join(w)))


def portuguese(title: str, uid: str) -> KindQuestion:
    """A Portuguese question around the title (proper names stay English, as users write them).

    >>> portuguese("Silver Harbor", "B01").language
    'pt'
    """
    rng = rng_for(uid, "portuguese")
    return KindQuestion("portuguese", rng.choice(_PORTUGUESE).format(t=title), "pt")


def descriptive(title: str, content: str, uid: str) -> KindQuestion | None:
    """Three to five consecutive description words, none of them a title word (or a stop word
    at either end): the product asked for by what it is.

    >>> q = descriptive("Quiet Bear Plush", "A soft toy made from organic cotton. Quiet.", "B01")
    >>> q.kind, "bear" in q.text.lower()
    ('descriptive', False)
    >>> descriptive("Quiet Bear", "Quiet bear.", "B01") is None
    True
    """
    banned = {x.lower() for x in words(title)}
    w = words(content)
    runs, run = [], []
    for x in [*w, ""]:
        if x and x.lower() not in banned:
            run.append(x)
            continue
        while run and run[0].lower() in _STOP:
            run.pop(0)
        while run and run[-1].lower() in _STOP:
            run.pop()
        if len([y for y in run if y.lower() not in _STOP]) >= 2:
            runs.append(run)
        run = []
    if not runs:
        return None
    rng = rng_for(uid, "descriptive")
    best: list[str] = []
    for _ in range(8):  # the most telling of a few windows (stop words trimmed at the ends)
        run = rng.choice(runs)
        size = min(len(run), rng.randint(3, 5))
        start = rng.randrange(len(run) - size + 1)
        window = run[start : start + size]
        while window and window[0].lower() in _STOP:
            window.pop(0)
        while window and window[-1].lower() in _STOP:
            window.pop()
        if len([y for y in window if y.lower() not in _STOP]) >= 2 and (
            _telling(window) > _telling(best)
        ):
            best = window
    if not best:
        return None
    phrase = " ".join(best).lower()
    return KindQuestion("descriptive", rng.choice(_DESCRIPTIVE).format(p=phrase))


def _telling(window: list[str]) -> int:
    """How much a phrase singles a product out, roughly: names, numbers and long words (shared
    boilerplate is mostly short common words).

    >>> _telling(["written", "by", "Diego", "in", "1999"]) > _telling(["for", "every", "age"])
    True
    """
    return sum(
        (w[:1].isupper() and n > 0) + any(c.isdigit() for c in w) + (len(w) >= 7)
        for n, w in enumerate(window)
    )


def sentences(content: str) -> list[str]:
    """The description's sentences.

    >>> sentences("A soft bear. It is 30 cm tall! Ages 3+.")
    ['A soft bear.', 'It is 30 cm tall!', 'Ages 3+.']
    """
    return [s.strip() for s in _SENTENCE.split(content) if s.strip()]


def attribute(title: str, content: str, uid: str) -> KindQuestion | None:
    """A question about one fact the description states, and the sentence that states it (the
    answer leads with it): "who wrote X?" when a sentence says "written by".

    >>> q = attribute("The Lantern", "A story. Written by Ana Lopes in 1999.", "B01")
    >>> q.text, q.lead
    ('who wrote the lantern?', 'Written by Ana Lopes in 1999.')
    >>> attribute("The Lantern", "A story about the sea.", "B01") is None
    True
    """
    found = [
        (s, ask)
        for s in sentences(content)
        for pattern, ask in _ATTRIBUTES
        if pattern.search(s) and len(s) <= 300
    ]
    if not found:
        return None
    rng = rng_for(uid, "attribute")
    sentence, ask = rng.choice(found)
    short = " ".join(words(re.split(r"[:(\[]", title)[0] or title)[:6]).lower()
    return KindQuestion("attribute", ask.format(t=short), lead=sentence)


def make_question(kind: str, product: dict) -> KindQuestion | None:
    """The question of ``kind`` for a product record (``uid``, ``title``, ``content``); None for
    ``title`` (the template phrasings, rendered by the prompt format) or when the record cannot
    make that kind.

    >>> make_question("portuguese", {"uid": "B1", "title": "X Y", "content": ""}).language
    'pt'
    >>> make_question("nonsense", {"uid": "B1", "title": "X", "content": ""})
    Traceback (most recent call last):
    ValueError: unknown question kind 'nonsense' (one of title, fragment, reorder, typo, portuguese, descriptive, attribute)
    """
    uid, title, content = str(product["uid"]), product["title"], product.get("content", "")
    if kind == "title":
        return None
    if kind in _FROM_TITLE:
        return _FROM_TITLE[kind](title, uid)
    if kind in _FROM_DESCRIPTION:
        return _FROM_DESCRIPTION[kind](title, content, uid)
    raise ValueError(f"unknown question kind {kind!r} (one of {', '.join(KINDS)})")


_FROM_TITLE = {"fragment": fragment, "reorder": reorder, "typo": typo, "portuguese": portuguese}
_FROM_DESCRIPTION = {"descriptive": descriptive, "attribute": attribute}
