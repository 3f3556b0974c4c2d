"""Beam building blocks the stages share: lists per key, groups by partition, connected components.

Lists per key
-------------
Many small records per shuffled element: lists per key and bundle.

A runner's cost per shuffled element (encoding, the data plane, grouping) dominates
a shuffle of small records.  ``ListsPerKey`` buffers a bundle's records into one
list per key, so that cost is paid once per list; a ``GroupByKey`` or
``CoGroupByKey`` after it brings every list of a key together.

``GroupByPartition`` does both for keyed items: every item of a partition of the
key space, in lists, under one key.  Dedup groups its exact groups and LSH buckets
that way (``transforms/dedup/exact.py``, ``transforms/dedup/lsh.py``).

Connected components
--------------------
Exact connected components: large-star / small-star (Kiveris et al., 2014).

"Connected Components in MapReduce and Beyond" (SoCC 2014) alternates two steps on
an edge set until every component is a star around its minimum node:

* large-star, at each node ``u`` with lowest neighbour-or-self ``m(u)``: every
  neighbour ``v > u`` is linked to ``m(u)`` instead of ``u``;
* small-star, at each node ``v`` with lowest neighbour-or-self ``m``: ``v`` and its
  smaller neighbours are linked to ``m``.

Both keep the components, and the alternation needs O(log^2 n) rounds in the worst
case and about log n on real graphs, where min-label propagation needs as many
rounds as the longest path to a component's minimum.  A Beam graph cannot loop, so
the rounds are unrolled up to ``max_rounds`` and the labels are released only once a
check has found every node settled (see ``settled``); otherwise the job fails with
``ComponentsNotConverged``.

Each step groups the edge records of a partition of the node space (``salt_of``)
in lists (``ListsPerKeyFn`` above): the runner moves one element per list, not
per edge.  The step functions are pure: ``local_components`` runs the same rounds
without a runner, for tests and measurement.

Hand-written because no library runs connected components on a Beam PCollection
(datatrove's union-find runs on one task, GraphFrames on Spark).  Chosen by
measurement (``benchmarks/dedup_components.py``, BENCHMARKS.md): on chains of
10,000 nodes large-star / small-star settles in 11 to 15 rounds with sorted,
reversed or hashed ids, where min-label propagation needs up to 9,999 and
propagation with one pointer jump per round 14 to 10,000 (it has no bound without
hooking); on the LSH graphs of 10k and 100k benchmark documents it settles in 2 and
4 rounds.
"""

from __future__ import annotations

import functools
import zlib
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from typing import Any, NamedTuple

import apache_beam as beam
from apache_beam.metrics import Metrics
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


def _item_partition(item: tuple[Any, Any], partition_of: Callable[[Any], int]) -> int:
    return partition_of(item[0])


def _whole(record: Any) -> Any:
    return record


class GroupByPartition(beam.PTransform):
    """``(key, value)`` items -> ``(partition, lists of items)``: keys grouped by partition, in lists.

    A runner's cost per shuffled element was most of the cost of dedup's many small
    records (one per document per exact group, nine per document per LSH band);
    ``ListsPerKey`` pays it once per list of a partition and bundle.  Every item of a
    key lands in the same partition, and the consumer streams the lists twice
    instead of holding a key's members.

    Args:
      partition_of: key -> its partition, a small int; the number of partitions
        bounds the parallelism of the consumer.
    """

    def __init__(self, partition_of: Callable[[Any], int]) -> None:
        super().__init__()
        self._partition_of = partition_of

    def expand(self, items: beam.PCollection) -> beam.PCollection:
        return (
            items
            | "Partition"
            >> ListsPerKey(functools.partial(_item_partition, partition_of=self._partition_of), _whole)
            | "GroupPartitions" >> beam.GroupByKey()
        )


NAMESPACE = "tropemix.dedup"

# A node: a tuple whose last item is a string id; the order of tuples picks minimums.
Node = tuple[Any, ...]
Edge = tuple[Node, Node]
# An edge at one of its ends: (node, neighbour, the neighbour is a finished leaf).
Record = tuple[Node, Node, bool]


class ComponentsNotConverged(RuntimeError):
    """The unrolled rounds ended before every component was a star around its minimum."""


def salt_of(node: Node, salts: int) -> int:
    """CRC-32 of a node's id modulo ``salts``, stable across processes and cheap per band.

    It picks a node's salted group within an LSH bucket (``LinkBuckets``) and its
    partition of the node space (``ConnectedComponents``).
    """
    return zlib.crc32(node[-1].encode("utf-8")) % salts


class Bounds(NamedTuple):
    low: Node  # lowest neighbour
    high: Node  # highest neighbour
    leaves: bool  # every neighbour is a finished leaf (its one neighbour is this node)


def neighbour_bounds(lists: Iterable[list[Record]]) -> dict[Node, Bounds]:
    """Each node's ``Bounds`` from lists of ``(node, neighbour, neighbour is a finished leaf)`` records."""
    bounds: dict[Node, Bounds] = {}
    for records in lists:
        for node, other, leaf in records:
            b = bounds.get(node)
            bounds[node] = (
                Bounds(min(b.low, other), max(b.high, other), b.leaves and leaf)
                if b
                else Bounds(other, other, leaf)
            )
    return bounds


def settled(node: Node, b: Bounds) -> bool:
    """Whether a node is a star's centre (every neighbour larger) or leaf (one neighbour, smaller).

    When every node is settled, each component is a star around its minimum: a leaf's
    one neighbour has a larger neighbour, so it is a centre, and a centre's
    neighbours are larger than it, so they are leaves.
    """
    return b.low > node or b.low == b.high


def finished(node: Node, b: Bounds) -> bool:
    """Whether a node is the centre of a star none of whose leaves has another neighbour.

    That star is a whole component: it leaves the rounds with its labels.
    """
    return b.leaves and b.low > node


def large_star(lists: Iterable[list[Record]], bounds: dict[Node, Bounds]) -> Iterator[Any]:
    """Large-star: every ``(u, v)`` record with ``v > u`` becomes the edge ``(v, m(u))``.

    Finished stars yield their labels instead, as ``TaggedOutput("labels", (node,
    centre))``; their leaves' records die out, since only a centre re-emits them.  A
    leaf (one neighbour, smaller) also yields ``(leaf, leaf)``, which tells
    ``small_star`` that its new edge is its only one.

    Args:
      lists: a partition's records, each edge once from each end; streamed, not held.
      bounds: ``neighbour_bounds`` of the same lists.
    """
    for records in lists:
        for node, other, _ in records:
            b = bounds[node]
            if finished(node, b):
                yield TaggedOutput("labels", (other, node))
            elif other > node:
                yield other, min(node, b.low)
    for node, b in bounds.items():
        if finished(node, b):
            yield TaggedOutput("labels", (node, node))
        elif b.low == b.high and b.low < node:
            yield node, node


def small_star(lists: Iterable[list[Edge]]) -> Iterator[Record]:
    """Small-star: a node ``v`` and its smaller neighbours linked to their minimum, both ways.

    The record at the minimum says whether ``v`` was a leaf in ``large_star``: then
    this edge is the only one ``v`` has (only ``v``'s one neighbour linked it, and a
    leaf is nobody's minimum), so it is and stays a leaf.

    Args:
      lists: a partition's ``large_star`` edges ``(v, w)``, ``w < v``, at their larger end,
        and ``(v, v)`` for leaves.
    """
    smaller: dict[Node, dict[Node, None]] = {}
    leaves: set[Node] = set()
    for edges in lists:
        for node, other in edges:
            if other == node:
                leaves.add(node)
            else:
                # A dict keeps insertion order: outputs do not depend on string hashing.
                smaller.setdefault(node, {})[other] = None
    for node, others in smaller.items():
        low = min(others)
        yield node, low, False
        yield low, node, node in leaves
        for other in others:
            if other != low:
                yield other, low, False
                yield low, other, False


def star_labels(lists: Iterable[list[Record]]) -> tuple[list[Edge], int]:
    """Each node's label (its lowest neighbour, or itself) and how many nodes are unsettled.

    Args:
      lists: a partition's records, each edge once from each end.
    """
    bounds = neighbour_bounds(lists)
    labels = [(node, min(node, b.low)) for node, b in bounds.items()]
    return labels, sum(not settled(node, b) for node, b in bounds.items())


def both_ways(edge: Edge) -> tuple[Record, Record]:
    """An edge as a record at each of its ends."""
    return (edge[0], edge[1], False), (edge[1], edge[0], False)


def _partition_lists(records: Iterable[Any], partitions: int) -> list[list[list[Any]]]:
    grouped: dict[int, list[Any]] = {}
    for record in records:
        grouped.setdefault(salt_of(record[0], partitions), []).append(record)
    return [[part] for part in grouped.values()]


class LocalRun(NamedTuple):
    labels: dict[Node, Node]
    rounds: int  # large-star / small-star rounds run
    unsettled: int  # nodes unsettled after them; 0 means the labels are exact
    records: int  # records the rounds moved between partitions


def local_components(edges: Iterable[Edge], max_rounds: int, partitions: int = 1) -> LocalRun:
    """``ConnectedComponents`` without a runner: the same steps on the same partitions.

    Stops at the first round that starts with every node settled (the pipeline cannot).

    Args:
      edges: undirected edges, any direction, repeats allowed.
      max_rounds: the most large-star / small-star rounds to run.
      partitions: partitions of the node space.
    """
    records: list[Any] = [r for edge in edges for r in both_ways(edge)]
    moved, rounds = len(records), 0
    labels: dict[Node, Node] = {}
    while True:
        groups = _partition_lists(records, partitions)
        bounds = [neighbour_bounds(lists) for lists in groups]
        if rounds == max_rounds or all(settled(n, b) for part in bounds for n, b in part.items()):
            unsettled = 0
            for lists in groups:
                part_labels, part_unsettled = star_labels(lists)
                labels.update(part_labels)
                unsettled += part_unsettled
            return LocalRun(labels, rounds, unsettled, moved)
        larger = []
        for lists, part in zip(groups, bounds, strict=True):
            for out in large_star(lists, part):
                if isinstance(out, TaggedOutput):
                    node, label = out.value
                    labels[node] = label
                else:
                    larger.append(out)
        records = [r for lists in _partition_lists(larger, partitions) for r in small_star(lists)]
        moved += len(larger) + len(records)
        rounds += 1


def _large_star_step(item: tuple[int, Sequence[list[Record]]], counter: str) -> Iterator[Any]:
    _, lists = item
    bounds = neighbour_bounds(lists)
    Metrics.counter(NAMESPACE, counter).inc(sum(not settled(node, b) for node, b in bounds.items()))
    yield from large_star(lists, bounds)


def _small_star_step(item: tuple[int, Sequence[list[Edge]]]) -> Iterator[Record]:
    _, lists = item
    yield from small_star(lists)


def _label_step(item: tuple[int, Sequence[list[Record]]]) -> Iterator[Any]:
    _, lists = item
    labels, unsettled = star_labels(lists)
    yield from labels
    if unsettled:
        yield TaggedOutput("unsettled", unsettled)


def _converged(label: Edge, unsettled: int, rounds: int) -> Edge:
    if unsettled:
        raise ComponentsNotConverged(
            f"ConnectedComponents: {unsettled} nodes were still unsettled after {rounds} "
            f"large-star/small-star rounds, so the near-duplicate clusters are not exact and "
            f"nothing was written from them; raise dedup.max_rounds (now {rounds}, at most 64)"
        )
    return label


def _record_partition(record: tuple[Any, ...], partitions: int) -> int:
    return salt_of(record[0], partitions)


class ConnectedComponents(beam.PTransform):
    """Undirected edges -> ``(node, component minimum)`` for every node of an edge.

    Unrolls ``max_rounds`` rounds of large-star then small-star, each one
    ``GroupByKey`` of edge records in lists per partition of the node space, then
    groups once more to label every node and check that all are settled.  Labels
    leave only after the check: when a node is unsettled the job fails with
    ``ComponentsNotConverged``, naming the count and ``dedup.max_rounds``.  Counters
    ``unsettled_round_<r>`` count the nodes unsettled before round ``r``, so a
    run shows the rounds its graph needed.

    Args:
      max_rounds: large-star / small-star rounds.
      partitions: partitions of the node space.
    """

    def __init__(self, max_rounds: int, partitions: int) -> None:
        super().__init__()
        self._rounds = max_rounds
        self._partitions = partitions

    def _lists(self, records_of: Any) -> beam.ParDo:
        by_node = functools.partial(_record_partition, partitions=self._partitions)
        return beam.ParDo(ListsPerKeyFn(by_node, _whole, None, records_of))

    def expand(self, edges: beam.PCollection) -> beam.PCollection:
        records = edges | "BothWays" >> self._lists(both_ways)
        done = []
        for r in range(self._rounds):
            step = functools.partial(_large_star_step, counter=f"unsettled_round_{r:02d}")
            larger = (
                records
                | f"GroupLarge{r}" >> beam.GroupByKey()
                | f"LargeStar{r}" >> self._lists(step).with_outputs("labels", main="main")
            )
            done.append(larger.labels)
            records = (
                larger.main
                | f"GroupSmall{r}" >> beam.GroupByKey()
                | f"SmallStar{r}" >> self._lists(_small_star_step)
            )
        final = (
            records
            | "GroupLabels" >> beam.GroupByKey()
            | "Labels" >> beam.FlatMap(_label_step).with_outputs("unsettled", main="labels")
        )
        count = final.unsettled | "CountUnsettled" >> beam.CombineGlobally(sum)
        return (
            [*done, final.labels]
            | "AllLabels" >> beam.Flatten()
            | "Converged"
            >> beam.Map(_converged, unsettled=beam.pvalue.AsSingleton(count), rounds=self._rounds)
        )
