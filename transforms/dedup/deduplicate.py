"""Exact and near-duplicate removal: ``DedupDocuments``, and the cluster decision applied to documents.

Decisions run on light *nodes*, ``(generation, *survivor keys, id)`` tuples whose
minimum in a cluster is its survivor; document bodies move in one join only.
``DedupDocuments`` reads as the algorithm, one step per module:

1. ``Keys`` (``keys.py``): each document's exact hash, MinHash signature and LSH
   band hashes, computed once per normalized text; its body leaves for ``DocJoin``.
2. ``ExactGroups`` (``exact.py``): each exact group's minimum node and size; the
   minimum emits its band members, every other member becomes a ledger stub, so exact
   copies never reach LSH.
3. ``LinkBuckets`` (``lsh.py``): candidate edges within LSH buckets, salted so that no
   node gets a boilerplate bucket's whole membership as neighbours.
4. ``VerifyEdges`` (``lsh.py``, optional): keeps a candidate pair only when the
   Jaccard similarity estimated from the two signatures reaches ``verify_threshold``.
5. ``ConnectedComponents`` (``transforms/blocks.py``): exact components by
   large-star / small-star rounds; the job fails rather than release labels of an
   unconverged graph.
6. ``Decide``: the component minimum survives; the cluster size sums exact-group sizes.
7. ``ApplyDecisions``: one join by node (``DocJoin``) applies the decision to the
   winner's document and its exact copies' stubs.

Incremental runs: the survivors' exact hash and band hashes leave as ``index``
entries (``index.py``); a later run reads them back as earlier survivors
(``EarlierSurvivors``), which outrank every document of the run.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, NamedTuple, cast

import apache_beam as beam
from apache_beam.metrics import Metrics

from schemas.config import DedupConfig
from schemas.records import Document
from transforms.blocks import ConnectedComponents
from transforms.dedup.exact import ExactGroups
from transforms.dedup.index import EarlierSurvivors
from transforms.dedup.keys import CURRENT, EARLIER, NAMESPACE, Keys, Node
from transforms.dedup.lsh import LinkBuckets, VerifyEdges
from transforms.packing import unpack
from transforms.report.conservation import JOIN_LOSS, JoinIntegrityError
from transforms.report.counts import ledger_drop


class Decision(NamedTuple):
    kept: bool
    cluster_id: str
    cluster_size: int
    earlier: bool  # the survivor is an earlier run's document


def _cluster_member(item: tuple[Node, dict[str, Any]]) -> Iterator[Any]:
    node, grouped = item
    # Earlier survivors reached only through bands carry no exact-group weight: they count once.
    weight = next(iter(grouped["weight"]), 1)
    label = next(iter(grouped["label"]), None)
    if label is None:
        # An exact group that no band links elsewhere is a whole cluster already.
        if weight > 1:
            Metrics.distribution(NAMESPACE, "cluster_size").update(weight)
        decision = Decision(node[0] == CURRENT, node[-1], weight, node[0] == EARLIER)
        yield beam.pvalue.TaggedOutput("singles", (node, decision))
    else:
        yield label, (node, weight)


def _decide(item: tuple[Node, dict[str, Any]]) -> Iterator[tuple[Node, Decision]]:
    label, grouped = item
    size = grouped["size"][0]
    Metrics.distribution(NAMESPACE, "cluster_size").update(size)
    earlier = label[0] == EARLIER
    for node in grouped["members"]:
        yield node, Decision(node == label and not earlier, label[-1], size, earlier)


class Decide(beam.PTransform):
    """Component labels -> ``(node, Decision)`` for every exact-group winner and earlier survivor.

    The component minimum survives; a cluster's size sums its exact groups' sizes.

    Args:
      weights: ``(winner node, exact-group size)`` (``ExactSplit.weights``).
    """

    def __init__(self, weights: beam.PCollection) -> None:
        super().__init__()
        self._weights = weights

    def expand(self, labels: beam.PCollection) -> beam.PCollection:
        members = (
            {"label": labels, "weight": self._weights}
            | "NodeJoin" >> beam.CoGroupByKey()
            | "ClusterMembers" >> beam.FlatMap(_cluster_member).with_outputs("singles", main="clustered")
        )
        sizes = (
            members.clustered
            | "Weight" >> beam.MapTuple(lambda label, nw: (label, nw[1]))
            | ("ClusterSize" >> beam.CombinePerKey(sum))
        )
        clustered = (
            {
                "members": members.clustered
                | "MemberNode" >> beam.MapTuple(lambda label, nw: (label, nw[0])),
                "size": sizes,
            }
            | "ClusterJoin" >> beam.CoGroupByKey()
            | "Survivors" >> beam.FlatMap(_decide)
        )
        return (clustered, members.singles) | "AllDecisions" >> beam.Flatten()


def _apply(item: tuple[Node, dict[str, Any]]) -> Iterator[Any]:
    node, grouped = item
    # Bodies of exact copies have no bands here: their ledger rows come from their stubs,
    # joined under the group's winner.  (An id repeated inside a source can put a copy's
    # body under a winner's node; the exact hash tells them apart.)
    winners = dict(grouped["keys"])
    decisions = grouped["decision"]
    if not decisions:
        if winners or grouped["losers"]:
            raise JoinIntegrityError(
                f"DocJoin: {node[-1]} has its exact group's keys or copies but no dedup decision; {JOIN_LOSS}"
            )
        Metrics.counter(NAMESPACE, "exact_copy_bodies").inc(len(grouped["doc"]))
        return
    decision: Decision = decisions[0]
    cluster: dict[str, Any] = {"cluster_id": decision.cluster_id, "cluster_size": decision.cluster_size}
    detail = f"duplicate_of={decision.cluster_id}"
    applied = 0
    for exact, packed in grouped["doc"]:
        if exact not in winners:
            Metrics.counter(NAMESPACE, "exact_copy_bodies").inc()
            continue
        applied += 1
        doc = unpack(packed)
        out = {**doc, **cluster}
        if decision.kept:
            Metrics.counter(NAMESPACE, "kept").inc()
            yield out
            yield beam.pvalue.TaggedOutput(
                "index", {"id": doc["id"], "exact": exact, "bands": winners[exact]}
            )
        else:
            reason = "earlier_run_duplicate" if decision.earlier else "near_duplicate"
            Metrics.counter(NAMESPACE, f"dropped.{reason}").inc()
            yield beam.pvalue.TaggedOutput("dropped", ledger_drop(out, "dedup", reason, detail))  # type: ignore[arg-type]
    # Every node of this run that got a decision is an exact group's winner, so its
    # body and keys must be here; earlier runs' nodes have neither.
    if node[0] == CURRENT and not applied:
        raise JoinIntegrityError(
            f"DocJoin: the dedup decision for {node[-1]} met no document body or no exact-group keys; {JOIN_LOSS}"
        )
    reason = "earlier_run_duplicate" if decision.earlier else "exact_duplicate"
    for stub in grouped["losers"]:
        Metrics.counter(NAMESPACE, f"dropped.{reason}").inc()
        yield beam.pvalue.TaggedOutput(
            "dropped", ledger_drop(cast(Document, {**stub, **cluster}), "dedup", reason, detail)
        )


class DedupResult(NamedTuple):
    """What ``DedupDocuments`` outputs.

    Attributes:
      kept: surviving documents, with ``cluster_id`` and ``cluster_size``.
      dropped: ledger rows of exact, near and earlier-run duplicates.
      index_entries: survivors' index entries ``{"id", "exact", "bands"}`` for later
        runs (``transforms.dedup.index.index_rows``, ``WriteDedupIndex``); not ``index``,
        which would hide ``tuple.index``.
    """

    kept: beam.PCollection
    dropped: beam.PCollection
    index_entries: beam.PCollection


class ApplyDecisions(beam.PTransform):
    """Decisions -> ``DedupResult``: one join by node (``DocJoin``) with bodies, winners' keys and copies.

    A body, keys or copies without a decision, or a decision of this run without its
    body, mean a shuffle lost records: ``JoinIntegrityError`` stops the job.

    Args:
      bodies: ``(node, (exact hash, packed document))`` (``Keyed.bodies``).
      keys: ``(winner node, (exact hash, bands))`` (``ExactSplit.keys``).
      losers: ``(winner node, stub)`` (``ExactSplit.losers``).
    """

    def __init__(self, bodies: beam.PCollection, keys: beam.PCollection, losers: beam.PCollection) -> None:
        super().__init__()
        self._bodies = bodies
        self._keys = keys
        self._losers = losers

    def expand(self, decisions: beam.PCollection) -> DedupResult:
        applied = (
            {"doc": self._bodies, "keys": self._keys, "losers": self._losers, "decision": decisions}
            | "DocJoin" >> beam.CoGroupByKey()
            # Looked up at expansion: tests swap in a leaky _apply to check conservation.
            | "Apply" >> beam.FlatMap(_apply).with_outputs("dropped", "index", main="kept")
        )
        return DedupResult(applied.kept, applied.dropped, applied.index)


class DedupDocuments(beam.PTransform):
    """Removes exact and near duplicates across the sources given to it.

    Returns a ``DedupResult``.  The job fails with ``ComponentsNotConverged`` before
    any of it is released when the clustering did not converge within
    ``cfg.max_rounds``.

    Args:
      cfg: dedup config; ``previous_index`` files are read as earlier survivors.
      priorities: source name -> survivor priority, lower wins.
    """

    def __init__(self, cfg: DedupConfig, priorities: Mapping[str, int]) -> None:
        super().__init__()
        self._cfg = cfg
        self._priorities = dict(priorities)

    def expand(self, docs: beam.PCollection) -> DedupResult:
        cfg = self._cfg
        keyed = docs | "Keys" >> Keys(cfg, self._priorities)
        # Tuples: Beam would pass a list of one PCollection on as the PCollection itself.
        exact_members: tuple[beam.PCollection, ...] = (keyed.exact,)
        band_members: tuple[beam.PCollection, ...] = ()
        if cfg.previous_index:
            earlier = docs.pipeline | "EarlierIndex" >> EarlierSurvivors(cfg.previous_index, cfg)
            exact_members += (earlier.exact,)
            band_members += (earlier.bands,)
        exact = exact_members | "ExactGroups" >> ExactGroups(cfg.partitions)
        band_members += (exact.bands,)
        edges = band_members | "LinkBuckets" >> LinkBuckets(cfg.bucket_salts, cfg.partitions)
        if cfg.verify_threshold is not None:
            edges = edges | "VerifyEdges" >> VerifyEdges(exact.sigs, cfg.verify_threshold, cfg.bits)
        labels = edges | "ConnectedComponents" >> ConnectedComponents(cfg.max_rounds, cfg.partitions)
        decisions = labels | "Decide" >> Decide(exact.weights)
        return decisions | "ApplyDecisions" >> ApplyDecisions(keyed.bodies, exact.keys, exact.losers)
