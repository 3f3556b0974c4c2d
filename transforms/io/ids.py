"""Duplicate ids within a source: fail, rekey from position, or keep the first.

Dedup, the ledger and the shards all key on the document id, so two records of one
source sharing an id would be merged or counted as one without a trace.  ``UniqueIds``
finds ids seen more than once (one shuffle of ``(id, location)`` pairs, never of
documents) and applies the source's ``duplicate_ids`` policy:

- ``error`` (default): the job fails with one line naming the source, the id and two
  of its locations;
- ``rekey``: every record of a repeated id gets ``<id>@<file>@<offset>``, unique by position;
- ``keep-first``: the record at the smallest ``(path, offset)`` keeps the id; the others
  go to the ledger (stage ``read``, reason ``duplicate_id``, detail naming the first).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

import apache_beam as beam
from apache_beam.metrics import Metrics

from schemas.records import Document
from transforms.report.counts import ledger_drop

NAMESPACE = "tropemix.read"
DROPPED = "dropped"
Location = tuple[str, int]


class DuplicateIdError(ValueError):
    """Two records of one source share an id and the policy is ``error``."""


class Repeats(NamedTuple):
    """How often an id occurs, and its two first locations."""

    times: int
    first: list[Location]


class _RepeatsFn(beam.CombineFn):
    """Counts an id's locations and keeps the two smallest, so the first is found in any order."""

    def create_accumulator(self) -> Repeats:
        return Repeats(0, [])

    def add_input(self, acc: Repeats, loc: Location) -> Repeats:
        path, offset = loc
        return Repeats(acc.times + 1, sorted([*acc.first, (path, offset)])[:2])

    def merge_accumulators(self, accs: Iterable[Repeats]) -> Repeats:
        accs = list(accs)
        return Repeats(sum(a.times for a in accs), sorted(loc for a in accs for loc in a.first)[:2])

    def extract_output(self, acc: Repeats) -> Repeats:
        return acc


def _where(loc: Location) -> str:
    return f"{loc[0]}@{loc[1]}"


def _fail(item: tuple[str, Repeats], source: str) -> None:
    doc_id, repeats = item
    raise DuplicateIdError(
        f"duplicate id in source {source!r}: {doc_id!r} occurs {repeats.times} times, first at "
        f"{', '.join(_where(loc) for loc in repeats.first)}; fix the input or set the source's "
        "duplicate_ids to 'rekey' or 'keep-first'"
    )


class _ApplyFn(beam.DoFn):
    def __init__(self, policy: str) -> None:
        self._policy = policy
        self._counter = Metrics.counter(NAMESPACE, f"duplicate_ids.{policy}")

    def process(self, doc: Document, repeated: dict[str, Repeats]) -> Iterator[Any]:
        repeats = repeated.get(doc["id"])
        if repeats is None:
            yield doc
            return
        self._counter.inc()
        loc = (doc["src_path"], doc["src_offset"])
        if self._policy == "rekey":
            yield {**doc, "id": f"{doc['id']}@{os.path.basename(loc[0])}@{loc[1]}"}
        elif loc == tuple(repeats.first[0]):
            yield doc
        else:
            detail = f"first_at={_where(repeats.first[0])}"
            yield beam.pvalue.TaggedOutput(DROPPED, ledger_drop(doc, "read", "duplicate_id", detail))


class IdsResult(NamedTuple):
    """What ``UniqueIds`` returns.

    Attributes:
      kept: the documents, each id once (rekeyed or first kept, by the policy).
      dropped: ledger rows of the records ``keep-first`` removed.
    """

    kept: beam.PCollection
    dropped: beam.PCollection


class UniqueIds(beam.PTransform):
    """Applies a source's ``duplicate_ids`` policy; returns an ``IdsResult``.

    Args:
      source: source name, for the error message.
      policy: ``error``, ``rekey`` or ``keep-first``.
    """

    def __init__(self, source: str, policy: str) -> None:
        super().__init__()
        self._source = source
        self._policy = policy

    def expand(self, docs: beam.PCollection) -> IdsResult:
        repeated = (
            docs
            | "Locations" >> beam.Map(lambda d: (d["id"], (d["src_path"], d["src_offset"])))
            | "CountIds" >> beam.CombinePerKey(_RepeatsFn())
            | "Repeated" >> beam.Filter(lambda kv: kv[1].times > 1)
        )
        if self._policy == "error":
            failed = repeated | "FailOnRepeat" >> beam.Map(_fail, self._source)
            # The documents wait for the check, so a repeat stops the job before anything uses them.
            checked = docs | "AfterCheck" >> beam.Map(lambda d, _: d, beam.pvalue.AsList(failed))
            return IdsResult(checked, docs.pipeline | "NoDrops" >> beam.Create([]))
        applied = docs | "ApplyPolicy" >> beam.ParDo(
            _ApplyFn(self._policy), beam.pvalue.AsDict(repeated)
        ).with_outputs(DROPPED, main="kept")
        return IdsResult(applied.kept, applied[DROPPED])
