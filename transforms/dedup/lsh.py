"""Near-duplicate candidates: edges between members of an LSH bucket, and their verification.

``LinkBuckets`` groups band members ``((band, bucket), node)`` in lists by partition
of the bucket space (``transforms.blocks.GroupByPartition``).  Within a bucket, a
member links to its salted group's minimum (``bucket_salts``) and every group
minimum to the bucket's minimum, so no node gets a boilerplate bucket's whole
membership as neighbours.  ``VerifyEdges`` (optional) keeps a candidate pair only
when the Jaccard similarity estimated from the two signatures reaches
``verify_threshold``.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics

from transforms.blocks import GroupByPartition, salt_of
from transforms.dedup.keys import NAMESPACE, Node, key_partition
from transforms.dedup.minhash import estimated_jaccard


def partition_edges(
    item: tuple[int, Iterable[list[tuple[tuple[int, int], Node]]]], salts: int
) -> Iterator[tuple[Node, Node]]:
    """Every member to its salted group's minimum, each group minimum to its bucket's.

    Args:
      item: ``(partition, lists of ((band, bucket), node))``, streamed twice.
      salts: salted groups per bucket.
    """
    _, lists = item
    # First pass: the minimum of each salted group; memory per group, not per member.
    low: dict[tuple[int, int, int], Node] = {}
    for items in lists:
        for (band, bucket), node in items:
            group = (band, bucket, salt_of(node, salts))
            if group not in low or node < low[group]:
                low[group] = node
    top: dict[tuple[int, int], Node] = {}
    for (band, bucket, _), group_low in low.items():
        if (band, bucket) not in top or group_low < top[(band, bucket)]:
            top[(band, bucket)] = group_low
    for items in lists:
        for (band, bucket), node in items:
            group_low = low[(band, bucket, salt_of(node, salts))]
            if node != group_low:
                yield node, group_low
    for (band, bucket, _), group_low in low.items():
        if group_low != top[(band, bucket)]:
            yield group_low, top[(band, bucket)]


class LinkBuckets(beam.PTransform):
    """Distinct candidate edges from ``((band, bucket), node)`` members: every member to the bucket minimum.

    Input: a tuple of band-member PCollections (this run's exact-group winners, earlier
    runs' survivors), flattened.  A member links to its salted group's minimum and every
    group minimum to the bucket's minimum.  Salting caps the bucket minimum's degree
    (a boilerplate bucket of 100,000 pages gives it about ``salts`` neighbours, not
    100,000), which keeps ``ConnectedComponents``' joins free of hot keys.  Members
    travel in lists by partition of the bucket space (``GroupByPartition``).

    Args:
      salts: salted groups per bucket.
      partitions: partitions of the bucket space.
    """

    def __init__(self, salts: int, partitions: int) -> None:
        super().__init__()
        self._salts = salts
        self._partitions = partitions

    def expand(self, members: Sequence[beam.PCollection]) -> beam.PCollection:
        return (
            members
            | "AllBandMembers" >> beam.Flatten()
            | "GroupByPartition"
            >> GroupByPartition(functools.partial(key_partition, partitions=self._partitions))
            | "BucketEdges" >> beam.FlatMap(partition_edges, self._salts)
            | "DistinctEdges" >> beam.Distinct()
        )


def _attach_first_sig(item: tuple[Node, dict[str, Any]]) -> Iterator[tuple[Node, tuple[Node, bytes | None]]]:
    node, grouped = item
    sig = next(iter(grouped["sig"]), None)
    for other in grouped["edges"]:
        yield other, (node, sig)


def _verify(item: tuple[Node, dict[str, Any]], threshold: float, dtype: str) -> Iterator[tuple[Node, Node]]:
    node, grouped = item
    sig = next(iter(grouped["sig"]), None)
    for other, other_sig in grouped["pending"]:
        # Earlier runs' survivors have no signature here: their candidates stay unverified.
        if sig is None or other_sig is None:
            yield other, node
            continue
        a = np.frombuffer(sig, dtype=dtype)
        b = np.frombuffer(other_sig, dtype=dtype)
        if estimated_jaccard(a, b) >= threshold:
            yield other, node
        else:
            Metrics.counter(NAMESPACE, "candidates_rejected").inc()


class VerifyEdges(beam.PTransform):
    """Keeps candidate edges whose signatures estimate a Jaccard similarity of at least ``threshold``.

    Two joins bring each endpoint's signature to the edge; no signature is ever
    broadcast.

    Args:
      sigs: ``(node, signature bytes)``.
      threshold: minimum estimated Jaccard similarity.
      bits: signature width, 32 or 64.
    """

    def __init__(self, sigs: beam.PCollection, threshold: float, bits: int) -> None:
        super().__init__()
        self._sigs = sigs
        self._threshold = threshold
        self._dtype = "uint32" if bits == 32 else "uint64"

    def expand(self, edges: beam.PCollection) -> beam.PCollection:
        pending = (
            {"edges": edges, "sig": self._sigs}
            | "FirstSig" >> beam.CoGroupByKey()
            | "AttachFirst" >> beam.FlatMap(_attach_first_sig)
        )
        return (
            {"pending": pending, "sig": self._sigs}
            | "SecondSig" >> beam.CoGroupByKey()
            | "Compare" >> beam.FlatMap(_verify, self._threshold, self._dtype)
        )
