"""Report excerpts: a few documents per narrative, and what the trope model read of them."""

from __future__ import annotations

from typing import Any

import apache_beam as beam

from transforms.classify.gate import ai_context
from transforms.text import stable_hash

EXCERPT_CHARS = 400


def excerpt_of(text: str) -> str:
    """What the trope model read of a document (its AI context), else its start, cut at
    ``EXCERPT_CHARS``."""
    return (ai_context(text) or text)[:EXCERPT_CHARS]


class SampleExcerpts(beam.PTransform):
    """Up to ``n`` documents per narrative, chosen by a hash of their id (the same on every run).

    Returns one ``{narrative: [{id, source, excerpt}, ...]}`` dict.

    Args:
      n: excerpts per narrative.
    """

    def __init__(self, n: int) -> None:
        super().__init__()
        self._n = n

    def expand(self, docs: beam.PCollection) -> beam.PCollection:
        # The context is computed for the sampled documents only, not for every one.
        def as_dicts(pairs: list[tuple[str, list[tuple[int, str, str, str]]]]) -> dict[str, Any]:
            return {
                narrative: [{"id": i, "source": s, "excerpt": excerpt_of(t)} for _, i, s, t in sorted(rows)]
                for narrative, rows in sorted(pairs)
            }

        return (
            docs
            | "Key"
            >> beam.Map(
                lambda d: (d["narrative"], (stable_hash("excerpt", d["id"]), d["id"], d["source"], d["text"]))
            )
            | "Smallest" >> beam.combiners.Top.PerKey(self._n, key=lambda row: -row[0])
            | "AllNarratives" >> beam.combiners.ToList()
            | "AsDict" >> beam.Map(as_dicts)
        )
