"""A generated catalogue in the real ``trn.json`` format, for tests and the offline demo.

The real rows are not ours to ship, so this writes look-alikes with the real file's quirks: HTML
entities and stray tags, the "--This text refers to ... edition." note, empty (about 35%), tiny and
title-equal contents, repeated rows, missing uids and a few malformed lines of every kind the
reader must survive. Same seed, same bytes.
"""

from __future__ import annotations

import gzip
import itertools
import os
import random
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson

from amazon_sft.atomic import staging_name

_KINDS: dict[str, dict[str, list[str]]] = {
    "book": {
        "title": [
            "The {adj} {noun} of {place}",
            "{name}'s {noun}: A Novel",
            "A Field Guide to {topic}",
            "{topic} for Beginners, {nth} Edition",
        ],
        "sentence": [
            "In this {adj} story, {name} travels to {place} in search of the lost {noun}.",
            "A {adj} introduction to {topic}, written for curious readers of every age.",
            "{name} draws on years of research to explain {topic} in plain language.",
            "Readers will follow {name} through {place}, where every {noun} hides a secret.",
            "This {nth} edition adds new chapters on {topic} and {count} illustrations.",
        ],
    },
    "electronics": {
        "title": [
            "{brand} {gadget} {model} with {feature}",
            "{brand} {model} {gadget}, {color}",
        ],
        "sentence": [
            "The {brand} {gadget} delivers {feature} in a {adj} {color} case.",
            "It weighs only {count} grams and charges fully in {small} hours.",
            "Pairs with phones and laptops and keeps a charge for {count} hours.",
            "Includes a {small}-year warranty and a USB-C cable.",
        ],
    },
    "toy": {
        "title": ["{adj} {animal} Plush Toy, {color}", "Girls Ballet Tutu {color} {size}"],
        "sentence": [
            "A soft {animal} made from {material} that children love to hug.",
            "Measures {count} centimetres and is safe for ages {small} and up.",
            "High quality {small} layer tutu, perfect for dance practice and recitals.",
        ],
    },
    "kitchen": {
        "title": ["{brand} {material} {utensil}, {size}", "{adj} {utensil} Set of {small}"],
        "sentence": [
            "This {utensil} is made of {material} and is dishwasher safe.",
            "The {adj} design heats evenly and cleans in seconds.",
            "A set of {small} pieces, each {count} millimetres wide.",
        ],
    },
    "music": {
        "title": ["{adj} {noun} ({genre} Album)", "Live at {place} - {name}"],
        "sentence": [
            "{name} returns with {count} new {genre} songs recorded live at {place}.",
            "A {adj} {genre} record that mixes old favourites with new material.",
        ],
    },
}
_WORDS: dict[str, list[str]] = {
    "adj": [
        "Quiet",
        "Golden",
        "Hidden",
        "Silver",
        "Bright",
        "Ancient",
        "Gentle",
        "Wild",
        "Modern",
        "Classic",
        "Tiny",
        "Grand",
    ],
    "noun": [
        "River",
        "Garden",
        "Lantern",
        "Harbor",
        "Mirror",
        "Forest",
        "Compass",
        "Bridge",
        "Island",
        "Letter",
        "Clock",
    ],
    "place": [
        "Lisbon",
        "Kyoto",
        "Manaus",
        "Oslo",
        "Recife",
        "Dublin",
        "Cairo",
        "Quebec",
        "Porto",
        "Salvador",
    ],
    "name": [
        "Ana",
        "Bruno",
        "Clara",
        "Diego",
        "Elena",
        "Felipe",
        "Grace",
        "Hugo",
        "Irene",
        "Jonas",
        "Laura",
        "Marco",
    ],
    "topic": [
        "Astronomy",
        "Gardening",
        "Chess",
        "Baking",
        "Photography",
        "Sailing",
        "Birdwatching",
        "Pottery",
    ],
    "nth": ["Second", "Third", "Fourth", "Fifth"],
    "brand": ["Zentra", "Vexo", "Lumio", "Acorn", "Kestrel", "Nimbus", "Orbit", "Polar"],
    "gadget": [
        "Headphones",
        "Speaker",
        "Charger",
        "Keyboard",
        "Mouse",
        "Webcam",
        "Router",
        "Smartwatch",
    ],
    "model": [f"{a}{n}" for a in "XQZRT" for n in (10, 20, 30, 50, 100, 200, 300)],
    "feature": ["Noise Cancelling", "Fast Charging", "Bluetooth 5.3", "4K Video", "Backlit Keys"],
    "color": ["Neon Pink", "Neon Blue", "Black", "White", "Forest Green", "Navy"],
    "animal": ["Bear", "Bunny", "Fox", "Owl", "Turtle", "Elephant", "Penguin"],
    "size": ["Small", "Medium", "Large", "10-inch", "12-inch"],
    "material": [
        "cotton",
        "stainless steel",
        "cast iron",
        "bamboo",
        "silicone",
        "recycled plastic",
    ],
    "utensil": ["Skillet", "Spatula", "Knife", "Cutting", "Board", "Saucepan", "Whisk"],
    "genre": ["Jazz", "Samba", "Folk", "Rock", "Bossa", "Nova", "Blues"],
}
_ENTITIES = [
    ("'", "&#8217;"),
    ("-", "&#8211;"),
    (" - ", " &mdash; "),
    ("&", "&amp;"),
    (" ", "&#160;"),
]
_MALFORMED = [
    b'{"uid": "B000BAD001", "title": "Truncated line", "content": "no end',
    b"[1, 2, 3]",
    b'{"uid": "B000BAD002", "title": 12345, "content": "title is a number"}',
    b'{"uid": "B000BAD003", "content": "the title is missing"}',
    b'{"uid": "B000BAD004", "title": "Bad bytes \xff\xfe here", "content": "invalid utf-8"}',
    b"not json at all",
]


GENERATOR_VERSIONS = (1, 2)
"""1: every sentence of a description draws its own words, so a description rarely names its
title's brand, animal or place (the hand-written questions of eval/questions/ are about version
1's catalogue). 2: a product's title and description share one draw, so the description is
about the titled product and products can be told apart by it (the demo's catalogue), and no two
described products share a title (the 1,000 real rows share none; at 4,000 lines three products
were "Quiet Whisk Set of 6": a title then named no one product)."""
_MORE_SENTENCES = {  # version 2 only: facts the attribute questions ask about
    "book": ["Written by {name}, this {adj} book runs to {count} pages."],
    "electronics": ["The {model} comes in {color} and is sold by {brand}."],
    "toy": ["The {color} {animal} is made from {material} by {brand}."],
    "kitchen": ["Made by {brand} from {material}, the {utensil} measures {count} millimetres."],
    "music": ["Performed by {name}, the album holds {small} {genre} tracks recorded in {place}."],
}


def _values(rng: random.Random) -> dict:
    values = {k: rng.choice(v) for k, v in _WORDS.items()}
    values.update(count=rng.randint(12, 900), small=rng.randint(2, 6))
    return values


def _fill(template: str, rng: random.Random) -> str:
    return template.format(**_values(rng))


def _product(rng: random.Random, index: int, version: int = 1) -> tuple[str, str]:
    kind = rng.choice(list(_KINDS))
    spec = _KINDS[kind]
    if version >= 2:
        return _product_v2(rng, index, kind, spec)
    title = _fill(rng.choice(spec["title"]), rng)
    if rng.random() < 0.5:  # keeps titles mostly distinct, as in the real catalogue
        title += f" #{index}"
    n_sentences = rng.randint(2, 6)
    content = " ".join(_fill(rng.choice(spec["sentence"]), rng) for _ in range(n_sentences))
    if kind == "book" and rng.random() < 0.3:
        content += f"--This text refers to the{rng.choice(['Paperback', 'Hardcover'])}edition."
    return title, content


def _product_v2(rng: random.Random, index: int, kind: str, spec: dict) -> tuple[str, str]:
    """Title and description from one draw of words; sentences without repeats."""
    values = _values(rng)
    title = rng.choice(spec["title"]).format(**values)
    if rng.random() < 0.5:
        title += f" #{index}"
    pool = spec["sentence"] + _MORE_SENTENCES[kind]
    picked = rng.sample(pool, min(len(pool), rng.randint(2, 5)))
    content = " ".join(t.format(**values) for t in picked)
    if kind == "book" and rng.random() < 0.3:
        content += f"--This text refers to the{rng.choice(['Paperback', 'Hardcover'])}edition."
    return title, content


def _add_quirks(title: str, content: str, rng: random.Random) -> tuple[str, str]:
    if rng.random() < 0.15:
        plain, entity = rng.choice(_ENTITIES)
        content = content.replace(plain, entity, 2)
        title = title.replace(plain, entity, 1)
    if rng.random() < 0.08:
        content = content.replace(". ", ".<br> ", 1).replace(" a ", " a <b>", 1) + "</b>"
    return title, content


def generate_rows(n_rows: int, seed: int = 0, version: int = 1) -> tuple[list[bytes], Counter]:
    """``n_rows`` JSON lines (as bytes, no newline) and a count of each quirk written;
    ``version``: one of ``GENERATOR_VERSIONS``."""
    made: Counter = Counter()
    return list(iter_rows(n_rows, seed, version, made)), made


def iter_rows(n_rows: int, seed: int, version: int, made: Counter) -> Iterator[bytes]:
    """``generate_rows``' lines one by one, counting each quirk into ``made``: a file of them
    is written as they come (the list and its joined copy took 950 MB for 200,000 rows, so
    ``synth`` of the catalogue's 1.3M rows needed 6 GB: a hostile user's trial)."""
    if version not in GENERATOR_VERSIONS:
        raise ValueError(f"generator version must be one of {GENERATOR_VERSIONS}, got {version}")
    rng = random.Random(seed)
    written: list[tuple[str, str, str]] = []
    titled: set[str] = set()  # version 2: the 1,000 real rows share no title; nor do its products
    for index in range(n_rows):
        roll = rng.random()
        if roll < 0.005:
            yield _MALFORMED[made["malformed"] % len(_MALFORMED)]
            made["malformed"] += 1
            continue
        if roll < 0.035 and written:
            uid, title, content = rng.choice(written)  # an exact repeat, as the real file has
            made["duplicate"] += 1
        else:
            uid = f"{rng.randrange(10**10):010d}"
            title, content = _product(rng, index, version)
            r = rng.random()
            if r < 0.35:
                content, made["empty_content"] = "", made["empty_content"] + 1
            elif r < 0.36:
                content, made["content_is_title"] = title, made["content_is_title"] + 1
            elif r < 0.37:
                content, made["short_content"] = (
                    rng.choice(["TUtu", "ok", "N/A"]),
                    made["short_content"] + 1,
                )
            elif version >= 2:  # a described product (prepare keeps it): its own title
                if title.lower() in titled:  # no draw: every later row stays as it was
                    title += f" #{index}"
                titled.add(title.lower())
            title, content = _add_quirks(title, content, rng)
            written.append((uid, title, content))
        row: dict = {
            "title": title,
            "content": content,
            "target_ind": [index % 97],
            "target_rel": [1.0],
        }
        if rng.random() < 0.02:
            made["no_uid"] += 1
        else:
            row = {"uid": uid, **row}
        yield orjson.dumps(row)


def write_catalogue(
    path: str | Path,
    n_rows: int,
    seed: int = 0,
    version: int = 1,
    before_swap: Callable[[Path], None] | None = None,
) -> Counter:
    """Write a generated catalogue to ``path`` (``.gz`` compresses); returns the quirk counts.
    ``before_swap`` is given the whole file written beside ``path`` before it takes its place
    (synth records its digest there)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    made: Counter = Counter()
    lines = iter_rows(n_rows, seed, version, made)
    # written beside it, then renamed: a kill or a full disk never leaves a cut file at ``path``
    staging = staging_name(path)
    try:
        if path.suffix.lower() == ".gz":
            # no time and the final name in the header: the same seed gives the same bytes
            with (
                open(staging, "wb") as raw,
                gzip.GzipFile(
                    path.name[: -len(".gz")], "wb", compresslevel=1, fileobj=raw, mtime=0
                ) as fh,
            ):
                _write_lines(fh, lines)
        else:
            with open(staging, "wb") as fh:
                _write_lines(fh, lines)
        if before_swap is not None:
            before_swap(staging)
        os.replace(staging, path)
    finally:
        staging.unlink(missing_ok=True)
    return made


def _write_lines(fh, lines: Iterator[bytes], batch: int = 4096) -> None:
    """Each line and its newline, a batch at a time (one write a line is slow in gzip)."""
    while chunk := list(itertools.islice(lines, batch)):
        fh.write(b"\n".join(chunk) + b"\n")
