"""Many small records per shuffled element: lists per key and bundle.

A runner's cost per shuffled element (encoding, the data plane, grouping) dominates
a shuffle of small records.  ``ListsPerKey`` buffers a bundle's records into one
list per key, so that cost is paid once per list; a ``GroupByKey`` or
``CoGroupByKey`` after it brings every list of a key together.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Iterator
from typing import Any

import apache_beam as beam
from apache_beam.pvalue import TaggedOutput
from apache_beam.transforms.window import GlobalWindows

# Records of small types (ids, hashes, nodes) a bundle buffers before it flushes:
# tens of MB of tuples.  Writers of whole documents pass a smaller bound.
MAX_BUFFERED_ITEMS = 1 << 18


class ListsPerKeyFn(beam.DoFn):
    """``ListsPerKey`` as a bare ``DoFn``, which can also compute the records it lists.

    Unrolled loops use it to keep their job graph small: one transform per step
    instead of a step and a composite.

    Args:
      key_of: record -> key.
      value_of: record -> the value kept in the list.
      max_items: records buffered before a flush (default ``MAX_BUFFERED_ITEMS``).
      records_of: input element -> the records it stands for (default: itself); the
        ``TaggedOutput`` values it yields pass through unlisted, to side outputs.
    """

    def __init__(
        self,
        key_of: Callable[[Any], Hashable],
        value_of: Callable[[Any], Any],
        max_items: int | None,
        records_of: Callable[[Any], Iterable[Any]] | None = None,
    ) -> None:
        self._key_of = key_of
        self._value_of = value_of
        self._max_items = max_items
        self._records_of = records_of
        self._lists: dict[Hashable, list[Any]] = {}
        self._buffered = 0

    def start_bundle(self) -> None:
        self._lists, self._buffered = {}, 0

    def process(self, item: Any) -> Iterator[Any]:
        for record in self._records_of(item) if self._records_of else (item,):
            if isinstance(record, TaggedOutput):
                yield record
                continue
            self._lists.setdefault(self._key_of(record), []).append(self._value_of(record))
            self._buffered += 1
            if self._buffered >= (self._max_items or MAX_BUFFERED_ITEMS):
                yield from self._flush()

    def finish_bundle(self) -> Iterator[Any]:
        # Batch pipelines run in the global window, as BatchElements assumes too.
        for item in self._flush():
            yield GlobalWindows.windowed_value(item)

    def _flush(self) -> Iterator[tuple[Hashable, list[Any]]]:
        lists, self._lists, self._buffered = self._lists, {}, 0
        yield from lists.items()


class ListsPerKey(beam.PTransform):
    """Records -> ``(key, list of values)``, one list per key and bundle (flushed when full).

    A key may get several lists (one per bundle, or per flush); group them after.

    Args:
      key_of: record -> key.
      value_of: record -> the value kept in the list.
      max_items: records buffered before a flush (default ``MAX_BUFFERED_ITEMS``), so
        memory stays bounded whatever the bundle size.
    """

    def __init__(
        self,
        key_of: Callable[[Any], Hashable],
        value_of: Callable[[Any], Any],
        max_items: int | None = None,
    ) -> None:
        super().__init__()
        self._fn = ListsPerKeyFn(key_of, value_of, max_items)

    def expand(self, records: beam.PCollection) -> beam.PCollection:
        return records | "Lists" >> beam.ParDo(self._fn)
