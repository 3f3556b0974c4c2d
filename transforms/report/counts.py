"""Run counts: ``(key, n)`` pairs taken off the PCollections, and the ledger rows of drops.

Counts are gathered inside the pipeline from the PCollections themselves
(documents read, dead letters, ledger rows, rows actually written to shards), so
the conservation check works on every runner, including those whose metrics are
partial.  A count key is a tuple of strings such as ``("ledger", "web", "dropped",
"dedup", "near_duplicate")``: its first field names the count, the rest are its
dimensions, and readers take fields by position instead of parsing a string.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import apache_beam as beam
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import MIN_TIMESTAMP
from apache_beam.utils.windowed_value import WindowedValue

from schemas.records import Document, LedgerRow

CountKey = tuple[str, ...]
"""A count's name and its dimensions, e.g. ``("shard_rows", "web")``."""


def count_key(*parts: str) -> CountKey:
    """The count key of ``parts``, e.g. ``count_key("ledger", "web", "written")``."""
    # tuple(): Beam's type inference takes a bare ``*parts`` for a str and would pick a str coder.
    return tuple(parts)


def display_key(key: CountKey) -> str:
    """``key`` as one string (``ledger|web|written``), the form ``report.json`` shows; never parsed back."""
    return "|".join(key)


def truncation_note(doc: Mapping[str, Any], detail: str = "") -> str:
    """``detail`` plus ``truncated_from=<bytes>`` when the reader cut the document's text.

    Args:
      doc: a document or a dedup stub.
      detail: the row's own detail.
    """
    if "truncated_from" not in doc:
        return detail
    note = f"truncated_from={doc['truncated_from']}"
    return f"{detail}; {note}" if detail else note


def ledger_drop(doc: Document, stage: str, reason: str, detail: str = "") -> LedgerRow:
    """The ledger row of a document dropped at ``stage`` for ``reason``.

    Args:
      doc: the document.
      stage: ``policy``, ``dedup`` or ``blend``.
      reason: short reason, also a counter name.
      detail: free text such as ``duplicate_of=<id>``.
    """
    return LedgerRow(
        id=doc["id"],
        source=doc["source"],
        fate="dropped",
        stage=stage,
        reason=reason,
        detail=truncation_note(doc, detail),
        narrative=doc.get("narrative", "none"),
        cluster_id=doc.get("cluster_id", ""),
        cluster_size=doc.get("cluster_size", 0),
        copies=0,
    )


class _SumInBundleFn(beam.DoFn):
    """Sums an element's ``(key, n)`` pairs per bundle and emits the partial sums when the bundle ends."""

    def __init__(self, pairs: Callable[[Any], Iterable[tuple[CountKey, int]]]) -> None:
        self._pairs = pairs
        self._counts: dict[CountKey, int] = {}

    def start_bundle(self) -> None:
        self._counts = {}

    def process(self, element: Any) -> None:
        for key, n in self._pairs(element):
            self._counts[key] = self._counts.get(key, 0) + n

    def finish_bundle(self) -> Iterator[WindowedValue]:
        for key, n in sorted(self._counts.items()):
            yield WindowedValue((key, n), MIN_TIMESTAMP, (GlobalWindow(),))


class SumBy(beam.PTransform):
    """Sums the ``(key, n)`` pairs of each element: partial sums per bundle, summed by ``WriteRunRecords``.

    The partial sums are per bundle, so a key may appear several times.  The run
    counts from about twenty PCollections, and a ``CombinePerKey`` each would add
    twenty shuffles (a fused stage each on the in-process runner, ~80 ms of CPU
    apiece) for sums that the report's single ``CombinePerKey`` computes anyway; and
    a pair per element would move as many elements as the counted PCollection.
    Counting needs the global window, which every PCollection of the mix uses.

    Args:
      pairs: element -> ``(count key, n)`` pairs.
    """

    def __init__(self, pairs: Callable[[Any], Iterable[tuple[CountKey, int]]]) -> None:
        super().__init__()
        self._pairs = pairs

    def expand(self, pcoll: beam.PCollection) -> beam.PCollection:
        return pcoll | "Sum" >> beam.ParDo(_SumInBundleFn(self._pairs))


class CountBy(beam.PTransform):
    """Counts elements by a key function (``SumBy`` with one ``(key, 1)`` pair per element).

    Args:
      key: element -> count key.
    """

    def __init__(self, key: Callable[[Any], CountKey]) -> None:
        super().__init__()
        self._key = key

    def expand(self, pcoll: beam.PCollection) -> beam.PCollection:
        key = self._key
        return pcoll | "Count" >> beam.ParDo(_SumInBundleFn(lambda element: ((key(element), 1),)))


def shard_counts(stats: Mapping[str, Any]) -> Iterator[tuple[CountKey, int]]:
    """Count pairs from one shard's stats: rows and first copies per source, rows written."""
    for source, n in stats["by_source"].items():
        yield count_key("shard_rows", source), n
    for source, n in stats["first_copies_by_source"].items():
        yield count_key("shard_docs", source), n
    yield count_key("stage", "write", "out"), stats["rows"]


def ledger_counts(row: Mapping[str, Any]) -> Iterator[tuple[CountKey, int]]:
    """Count pairs from one ledger row: its fate (and stage and reason), and copies written."""
    source = row["source"]
    if row["fate"] == "written":
        yield count_key("ledger", source, "written"), 1
        yield count_key("ledger_copies", source), int(row["copies"])
    else:
        yield count_key("ledger", source, "dropped", row["stage"], row["reason"]), 1
