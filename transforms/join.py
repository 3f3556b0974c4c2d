"""Keyed joins: ``CoGroup``, a ``CoGroupByKey`` whose inputs share one coder.

``beam.CoGroupByKey`` tags each input with a ``Map`` whose output coder is inferred
from that input's type hints.  When those coders differ from the coder of their
``Flatten`` (the union type), the in-process FnApiRunner inserts a ``Transcode``
stage per input that decodes and re-encodes every element: 70 extra stages in the
``build_mix`` graph, ~60 elements per document.  Tagging every input with one declared
type gives all of them the Flatten's coder, so no input is transcoded; on Dataflow and
Flink the graph is the same shuffle either way.

Inputs named in ``opaque`` (document bodies) cross the shuffle as pickled bytes: the
FnApiRunner decodes every grouped value into Python objects in its driver and encodes
it again, and its Flatten read re-encodes every element, so an opaque 11 KB document is
copied as bytes instead of being decoded and encoded field by field four times; it
also keeps the driver's buffers compact.  Pickle is what Beam's own coders fall back
to; the bytes never leave the job.
"""

from __future__ import annotations

import pickle
from collections.abc import Collection, Iterable, Sequence
from typing import Any

import apache_beam as beam

# One element type for every tagged input, so every input gets the Flatten's coder.
TAGGED = tuple[Any, tuple[str, Any]]


def _tag(kv: tuple[Any, Any], tag: str) -> tuple[Any, tuple[str, Any]]:
    return kv[0], (tag, kv[1])


def _tag_packed(kv: tuple[Any, Any], tag: str) -> tuple[Any, tuple[str, bytes]]:
    return kv[0], (tag, pickle.dumps(kv[1], protocol=pickle.HIGHEST_PROTOCOL))


def _same(item: tuple[Any, tuple[str, Any]]) -> tuple[Any, tuple[str, Any]]:
    return item


def collect(
    item: tuple[Any, Iterable[tuple[str, Any]]], tags: Sequence[str], opaque: Collection[str] = ()
) -> tuple[Any, dict[str, list[Any]]]:
    """``(key, {tag: [values]})`` from a key's tagged values, every tag present, as CoGroupByKey gives.

    Args:
      item: ``(key, [(tag, value), ...])`` from the GroupByKey.
      tags: the input tags, in input order.
      opaque: tags whose values arrive pickled.
    """
    key, tagged = item
    grouped: dict[str, list[Any]] = {tag: [] for tag in tags}
    for tag, value in tagged:
        grouped[tag].append(pickle.loads(value) if tag in opaque else value)
    return key, grouped


class CoGroup(beam.PTransform):
    """Joins a dict of ``(key, value)`` PCollections into ``(key, {tag: [values]})``.

    Same output as ``beam.CoGroupByKey`` on a dict, without the per-input transcode
    stages (module docstring).  Keys must be deterministically encodable (str, int,
    bytes, float and tuples of them), as for any GroupByKey.

    Args:
      opaque: input tags whose values cross the shuffle as pickled bytes (large values
        such as document bodies; module docstring).
    """

    def __init__(self, opaque: Collection[str] = ()) -> None:
        super().__init__()
        self._opaque = frozenset(opaque)

    def expand(self, pcolls: dict[str, beam.PCollection]) -> beam.PCollection:
        tags = list(pcolls)
        tagged = [
            pcoll
            | f"Tag[{tag}]"
            >> beam.Map(_tag_packed if tag in self._opaque else _tag, tag).with_output_types(TAGGED)
            for tag, pcoll in pcolls.items()
        ]
        return (
            tagged
            | "Flatten" >> beam.Flatten().with_output_types(TAGGED)
            # A GroupByKey gives its input a deterministic key coder.  Were that input
            # the Flatten, its coder would differ from the tagged inputs' and each would
            # be transcoded; this step (fused with the Flatten's read) takes the change.
            | "ForGrouping" >> beam.Map(_same).with_output_types(TAGGED)
            | "GroupByKey" >> beam.GroupByKey()
            | "Collect" >> beam.Map(collect, tags, self._opaque)
        )
