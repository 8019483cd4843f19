"""What prepare's streaming stage leaves for the next ones (``amazon_sft.prepare``), typed once:
the grounded stage (``grounded_stage``) adds to it too."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from amazon_sft.data.encode import DocumentEncoder
from amazon_sft.data.reading import ReadStats
from amazon_sft.data.spill import Spill


@dataclass
class Streamed:
    """What the streaming stage leaves for the next ones."""

    spill: Spill
    encoder: DocumentEncoder
    stats: ReadStats
    dropped: Counter
    scrubbed: int
    modified: dict
    counts: dict
    hist: dict
    probes: dict
    seconds: dict
    grounded_unanswered: set[str] = field(default_factory=set)
    """The grounded stage's picked products with no kept example answered with their own
    record yet (``data.taught.not_taught``), kept up to date batch by batch: about
    ``data.absent_fraction`` of them when abstentions are not paired."""
