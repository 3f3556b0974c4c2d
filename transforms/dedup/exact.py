"""Exact duplicates: one winner per exact hash, before any LSH work.

``ExactGroups`` tells every member of an exact group (documents of this run and
earlier runs' survivors sharing a normalized-text hash) the group's minimum node and
size, from members grouped in lists by partition of the hash space
(``transforms.blocks.GroupByPartition``).  The minimum goes on to LSH with its band
members; every other member becomes a ledger stub, so exact copies never reach LSH.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, NamedTuple

import apache_beam as beam
from apache_beam.metrics import Metrics

from transforms.blocks import GroupByPartition
from transforms.dedup.keys import CURRENT, NAMESPACE, Node, key_partition


def exact_groups(item: tuple[int, Iterable[list[tuple[int, tuple[Node, Any]]]]]) -> Iterator[Any]:
    """Every member with a payload, told its group's minimum and size; and each group's summary.

    Members with payload ``None`` (earlier runs' survivors) count towards the minimum and
    size but are not output.

    Args:
      item: ``(partition, lists of (exact hash, (node, payload)))``, streamed twice.

    Yields:
      ``(key, node, payload, min, size)`` per member with a payload, and
      ``TaggedOutput("summary", (key, min, size))`` per key.
    """
    _, lists = item
    # First pass: each key's (minimum node, size); memory per key, not per member.
    groups: dict[int, tuple[Node, int]] = {}
    for items in lists:
        for key, (node, _) in items:
            low, count = groups.get(key, (node, 0))
            groups[key] = (min(low, node), count + 1)
    for key, (low, count) in groups.items():
        yield beam.pvalue.TaggedOutput("summary", (key, low, count))
    for items in lists:
        for key, (node, payload) in items:
            if payload is not None:
                low, count = groups[key]
                yield key, node, payload, low, count


def _split_exact(member: tuple[int, Node, Any, Node, int]) -> Iterator[Any]:
    exact, node, (stub, bands, sig), low, _ = member
    if node == low:
        yield beam.pvalue.TaggedOutput("keys", (node, (exact, bands)))
        for band, bucket in enumerate(bands):
            yield (band, bucket), node
        if sig is not None:
            yield beam.pvalue.TaggedOutput("sigs", (node, sig))
    else:
        Metrics.counter(NAMESPACE, "exact_copies").inc()
        yield beam.pvalue.TaggedOutput("losers", (low, stub))


def _exact_weight(summary: tuple[int, Node, int]) -> Iterator[tuple[Node, int]]:
    _, low, count = summary
    # Groups holding only an earlier survivor decide nothing in this run.
    if low[0] == CURRENT or count > 1:
        yield low, count


class ExactSplit(NamedTuple):
    """What ``ExactGroups`` outputs.

    Attributes:
      bands: ``((band, bucket), node)`` of every group winner of this run, for ``LinkBuckets``.
      keys: ``(node, (exact hash, bands))`` per winner, what its index entry needs.
      sigs: ``(node, signature bytes)`` per winner with bands, when verifying.
      losers: ``(winner node, stub)`` per exact copy: its ledger row once the winner's
        cluster is decided.
      weights: ``(winner node, group size)`` per group that decides something in this run.
    """

    bands: beam.PCollection
    keys: beam.PCollection
    sigs: beam.PCollection
    losers: beam.PCollection
    weights: beam.PCollection


class ExactGroups(beam.PTransform):
    """Exact-group members -> each group's winner (its band members) and its copies (stubs).

    Input: a tuple of ``(exact hash, (node, payload))`` PCollections, flattened: this run's
    ``(stub, bands, signature)`` members and earlier runs' survivors, with payload
    ``None``, which count towards a group's minimum and size but are not output.

    Args:
      partitions: partitions of the hash space (``GroupByPartition``).
    """

    def __init__(self, partitions: int) -> None:
        super().__init__()
        self._partitions = partitions

    def expand(self, members: Sequence[beam.PCollection]) -> ExactSplit:
        grouped = (
            members
            | "AllExactItems" >> beam.Flatten()
            | "GroupByPartition"
            >> GroupByPartition(functools.partial(key_partition, partitions=self._partitions))
            | "MinAndSize" >> beam.FlatMap(exact_groups).with_outputs("summary", main="members")
        )
        split = grouped.members | "ExactSplit" >> beam.FlatMap(_split_exact).with_outputs(
            "keys", "sigs", "losers", main="bands"
        )
        weights = grouped.summary | "ExactWeights" >> beam.FlatMap(_exact_weight)
        return ExactSplit(split.bands, split.keys, split.sigs, split.losers, weights)
