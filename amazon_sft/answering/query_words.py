"""What a shopper's question means, as words the catalogue uses: the question's own scaffolding
dropped, and a Portuguese question's product words put in English.

The catalogue is English; shoppers ask "tell me about ...", "who wrote ...", "do you have ...", or
ask in Portuguese about an English title ("Quero o romance da Hilary Mantel sobre Thomas
Cromwell"). Scaffolding words match thousands of descriptions ("tell", "wrote", "looking") and
push the product down; Portuguese words match nothing, or worse, are "repaired" into unrelated
English words. So, before the question is tokenized like the index:

- English question phrases are dropped;
- a question detected as Portuguese (its function words and accents outnumber English ones)
  loses its Portuguese function words, and its other words go through a glossary of about
  2,600 product and book words (``assets/glossary_pt_en.txt``), then suffix rules (-ção ->
  -tion, -dade -> -ty, ...) for the rest.
  Proper names pass through unchanged: they are what the English title shares.

The glossary is hand-written from general knowledge of Portuguese (no library offline does this:
a translation model is hundreds of MB; a dictionary package would bring every sense of every
word, and a product search needs the one sense shoppers use).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from importlib.resources import files

ENGLISH_PHRASES = (
    "tell me about",
    "tell me more about",
    "can you tell me",
    "could you tell me",
    "what can you tell me about",
    "do you have",
    "do you sell",
    "do you carry",
    "have you got",
    "is there",
    "are there",
    "i am looking for",
    "i'm looking for",
    "im looking for",
    "looking for",
    "i want",
    "and want",
    "want to",
    "just got",
    "i'd like",
    "i would like",
    "i need",
    "what is",
    "what's",
    "what are",
    "who wrote",
    # who did the book's other work: the verb is no title word ("who illustrated the
    # gruffalo?" found "The Illustrated Man" 5.6 times ahead; "who moved" opens a title)
    "who illustrated",
    "who drew",
    "who narrates",
    "who narrated",
    "who translated",
    "who edited",
    "who photographed",
    "who is the author of",
    "who is",
    "how many",
    "how much",
    "how long",
    "how old",
    "which",
    "please",
    "anything about",
    "something about",
    "info on",
    # Portuguese openings too short to be detected as Portuguese ("Procuro Ice Station Zebra")
    "procuro",
    "quero saber mais sobre",
    "quero saber sobre",
)
_ENGLISH = re.compile(
    r"\b(?:"
    + "|".join(re.escape(p) for p in sorted(ENGLISH_PHRASES, key=len, reverse=True))
    + r")\b",
    re.IGNORECASE,
)


def composed(text: str) -> str:
    """``text`` in Unicode's composed form (NFC), as a question is looked up: "é" typed as "e"
    and a combining accent (NFD) is one word character, not a word split at the mark.

    >>> composed("Parame\u0301dico") == "Paramédico"
    True
    """
    return text if unicodedata.is_normalized("NFC", text) else unicodedata.normalize("NFC", text)


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Words that only a Portuguese sentence has (not English, not usual in English titles).
PORTUGUESE_MARKERS = _words(
    "o os as do da dos das de em no na nos nas um uma uns umas que com para sobre quero queria "
    "tem têm temos vocês voces voce você livro livros é são não ao aos à às pelo pela pelos pelas meu "
    "minha meus minhas seu sua seus suas ele ela eles elas este esta esse essa isso qual quais "
    "quem onde como mais muito quanto quanta quantos quantas foi ser está estão procuro "
    "gostaria preciso algum alguma há tenho sou filho filha"
)
PORTUGUESE_AND = re.compile(r"(?<=\w )e(?= \w)")
"""Portuguese "and": a lower-case "e" alone between two words ("Asterix e os Godos"); not a
marker word, as "e" is English in "e-book" and "vitamin E"."""
ENGLISH_MARKERS = _words(
    "the of and is for with about by to in my what who how this that i it are from an "
    "was his her their you your have has"
)
# Portuguese words of the question itself, dropped like English stop words.
PORTUGUESE_STOP = _words(
    "o os a as do da dos das de em no na nos nas num numa um uma uns umas que com para sobre "
    "quero queria tem têm temos vocês voces voce você é são não ao aos à às pelo pela pelos pelas "
    "meu minha meus minhas seu sua seus suas ele ela eles elas este esta esse essa isso isto "
    "qual quais quem onde como mais muito quanto quanta quantos quantas foi ser está estão "
    "procuro gostaria preciso algum alguma há tenho sou se me mim por e ou mas já também "
    "lá aqui cujo cuja era eram tinha fala fale diga existe alguém depois antes até entre "
    "sem sob seja ter nesse nessa neste nesta dele dela deles delas desse dessa deste desta "
    "saber info aquele aquela aqueles aquelas daquele daquela naquele naquela"
)

GLOSSARY_FILE = files("amazon_sft") / "assets" / "glossary_pt_en.txt"
"""Portuguese -> English product words, one sense (the shopper's): ``pt:en`` pairs, accents
stripped on lookup, ``#`` lines are comments."""
GLOSSARY = dict(
    pair.split(":")
    for line in GLOSSARY_FILE.read_text(encoding="utf-8").splitlines()
    if not line.startswith("#")
    for pair in line.split()
)

# (Portuguese ending, English ending), longest first: cognates the glossary does not list.
SUFFIXES = (
    ("coes", "tions"),
    ("cao", "tion"),
    ("idades", "ities"),
    ("idade", "ity"),
    ("dade", "ty"),
    ("encia", "ence"),
    ("ancia", "ance"),
    ("ismo", "ism"),
    ("ista", "ist"),
    ("osa", "ous"),
    ("oso", "ous"),
    ("mente", "ly"),
    ("avel", "able"),
    ("ivel", "ible"),
    ("ario", "ary"),
    ("aria", "ary"),
    ("ica", "ic"),
    ("ico", "ic"),
    ("ivo", "ive"),
    ("iva", "ive"),
    ("ia", "y"),
)
_WORD = re.compile(r"\w+(?:'\w+)?", re.UNICODE)


def plain(word: str) -> str:
    """The word lower-cased, accents removed.

    >>> plain("Crônicas"), plain("EXPEDIÇÃO")
    ('cronicas', 'expedicao')
    """
    decomposed = unicodedata.normalize("NFKD", word.lower())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


ALSO_ENGLISH = frozenset({"as", "do", "no"})
"""Portuguese signs that are English words too: ``is_portuguese(..., strict=True)`` counts them
only in a question without English function words ("what do poeple do all day richard scary"
has two and "what"; "vovó vigarista do David Walliams" has one and none)."""


PORTUGUESE_OPENINGS = frozenset(
    {"vocês", "voces", "vcs", "você", "voce", "tem", "têm", "quero", "queria", "procuro"}
    | {"procurando", "busco", "estou", "tô", "preciso", "gostaria", "vende", "vendem", "existe"}
    | {"há", "qual", "quais", "quem", "onde", "quanto", "quantos", "quantas", "cadê", "oi", "olá"}
    | {"pode", "ainda", "alguém", "sobre", "descreve", "fala", "fale", "me fale", "me fala"}
    | {"me diga", "me diz", "me mostre", "me mostra", "me conte", "me conta", "me explica"}
)
"""The words a Portuguese request opens with (``is_portuguese(..., strict=True)``): a shopper
names an English title in Portuguese ("Vocês vendem The Tale of the Pie and the Patty-Pan?"),
whose English words outnumber the Portuguese ones."""


def is_portuguese(question: str, strict: bool = False) -> bool:
    """Whether the question is in Portuguese: at least two Portuguese signs (function words,
    or letters English does not use: ã õ ç ê ô â) and more of them than English function words;
    ``strict``, for a reply in the shopper's language (a wrong guess is read, not searched
    with): the signs that are English words too (``ALSO_ENGLISH``) count only where no English
    function word is, and a question that opens as a Portuguese request
    (``PORTUGUESE_OPENINGS``) is Portuguese whatever title it names.

    >>> is_portuguese("Quero o romance da Hilary Mantel sobre Thomas Cromwell")
    True
    >>> is_portuguese("the story of a man and his dog"), is_portuguese("Pelúcia de elefante")
    (False, True)
    >>> is_portuguese("Asterix e os Godos"), is_portuguese("an e-book on knitting")
    (True, False)
    >>> q = "what do poeple do all day richard scary"
    >>> is_portuguese(q), is_portuguese(q, strict=True)
    (True, False)
    >>> q = "Vocês vendem The Tale of the Pie and the Patty-Pan?"
    >>> is_portuguese(q), is_portuguese(q, strict=True)
    (False, True)
    """
    words = [w.lower() for w in _WORD.findall(question)]
    if (
        strict
        and words
        and (words[0] in PORTUGUESE_OPENINGS or " ".join(words[:2]) in PORTUGUESE_OPENINGS)
    ):
        return True
    en = sum(w in ENGLISH_MARKERS for w in words)
    markers = PORTUGUESE_MARKERS - ALSO_ENGLISH if strict and en else PORTUGUESE_MARKERS
    accents = set("ãõçêôâáíóú")
    if strict and not any(w in markers for w in words):
        accents = set("ãõçêôâà")  # á í ó ú é are Spanish too: "Gabriel García Márquez books"
    pt = sum(w in markers or bool(set(w) & accents) for w in words)
    pt += len(PORTUGUESE_AND.findall(question))
    return pt >= 2 and pt > en


def english_word(word: str, known: Callable[[str], bool] | None = None) -> str:
    """A Portuguese word in English: the glossary's word, else a cognate ending, else the word
    itself (a name; accents kept, the index tokenizes them as the title does). With ``known``
    (does the index have this lower-cased word?), a word the catalogue has is kept before any
    suffix rule: a Portuguese question names an English title's words as they are
    ("Me fale sobre Britannica Mosaica": "mosaica" would become "mosaic", then be "repaired").

    >>> english_word("Crônicas"), english_word("independência"), english_word("Cromwell")
    ('chronicles', 'independence', 'Cromwell')
    >>> english_word("expedição"), english_word("universidade")
    ('expedition', 'university')
    >>> english_word("Mosaica"), english_word("Mosaica", known=lambda w: w == "mosaica")
    ('mosaic', 'Mosaica')
    >>> english_word("aria")  # no ending rule for a word two letters longer than the ending
    'aria'
    """
    key = plain(word)
    if key in GLOSSARY:
        return GLOSSARY[key]
    if known is not None and known(word.lower()):
        return word  # the catalogue has it (an English title's word): a suffix rule would break it
    for ending, english in SUFFIXES:
        if key.endswith(ending) and len(key) > len(ending) + 2:
            return key[: -len(ending)] + english
    return word


def english_query(question: str, known: Callable[[str], bool] | None = None) -> str:
    """The question as the words to look up: English question phrases dropped; a Portuguese
    question's function words dropped and its other words put in English (``known``: see
    ``english_word``). A word written with a capital after the first, that the catalogue has
    as it is (``known``), is a name and kept: "Paulo Coelho" is not "Paulo bunny".

    >>> english_query("Tell me about Mog's Kittens")
    "Mog's Kittens"
    >>> english_query("O Festim dos Corvos, o quarto livro")
    'feast crows fourth book'
    >>> english_query("tem alguma biografia do Paulo Coelho?", known=lambda w: w in {"paulo", "coelho"})
    'biography Paulo Coelho'
    >>> english_query("tem pelúcia de coelho?", known=lambda w: w == "coelho")
    'plush bunny'
    >>> english_query("Coelho de pelúcia", known=lambda w: w == "coelho")  # the first word
    'bunny plush'
    """
    if is_portuguese(question):
        words = _WORD.findall(question)
        kept = [
            w
            if n and w[0].isupper() and known is not None and known(w.lower())
            else english_word(w, known)
            for n, w in enumerate(words)
            if w.lower() not in PORTUGUESE_STOP
        ]
        return " ".join(kept)
    return " ".join(_ENGLISH.sub(" ", question).split())
