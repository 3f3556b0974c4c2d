"""Exact and near-duplicate removal: exact hashing, MinHash LSH, connected components.

The decision runs on light keys, never on document bodies:

1. ``DedupKeys``: per batch, normalize, hash the normalized text (exact key), and
   compute a MinHash signature and its LSH band hashes (``transforms.minhash``).
2. ``ExactGroups``: one survivor per exact key; the others become edges to it and
   never reach LSH.
3. ``LshEdges``: every band bucket with two or more members links each member to
   the bucket's minimum node, found by a combiner.
4. ``ConnectedComponents``: min-label propagation over the edges, a bounded number
   of rounds, each a join and a combiner, plus a convergence check.
5. ``Decide``: a node is the survivor of its component when it is the component's
   minimum.  Nodes are ``(priority, -score, id)`` tuples, so the minimum is the
   curated source first, then the best score, then the smallest id.
6. ``ApplyDecisions``: joins decisions back to documents by id.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, NamedTuple

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics

from schemas.config import DedupConfig
from schemas.records import Document
from transforms.accounting import ledger_drop
from transforms.minhash import MinHashParams, band_hashes, lsh_params, shingle_hashes, signature, word_hashes
from transforms.progress import ProgressTicker
from transforms.text import normalize_for_dedup

NAMESPACE = "tropemix.dedup"

# (priority, -score in millionths, id): the smallest node of a cluster survives.
Node = tuple[int, int, str]


class DedupKey(NamedTuple):
    node: Node
    exact: int
    bands: tuple[int, ...]


class Decision(NamedTuple):
    kept: bool
    cluster_id: str
    cluster_size: int
    reason: str


def doc_node(doc: Document, priority: int) -> Node:
    """The survivor-ordering node of a document.

    Args:
      doc: the document; ``meta['quality']``, when numeric, is its score.
      priority: the source's dedup priority (lower wins).
    """
    quality = doc.get("meta", {}).get("quality", 0.0)
    score = float(quality) if isinstance(quality, (int, float)) and not isinstance(quality, bool) else 0.0
    return (priority, -round(score * 1_000_000), doc["id"])


def exact_hash(normalized: str) -> int:
    """63-bit hash of a normalized text: the exact-duplicate key (fits Beam's VarIntCoder)."""
    return int.from_bytes(hashlib.blake2b(normalized.encode("utf-8"), digest_size=8).digest(), "big") >> 1


def compute_keys(docs: list[Document], priorities: Mapping[str, int], cfg: DedupConfig) -> list[DedupKey]:
    """Dedup keys of a batch of documents.

    Documents without a single word after normalization get no bands: they can
    only be exact duplicates, otherwise they would all share every bucket.

    Args:
      docs: documents of sources that take part in dedup.
      priorities: source name -> dedup priority.
      cfg: shingle size, permutations and threshold.
    """
    params = MinHashParams(num_perm=cfg.num_perm, seed=cfg.seed, bits=32)
    perms = params.permutations()
    bands, rows = lsh_params(cfg.threshold, cfg.num_perm)
    normalized = [normalize_for_dedup(d["text"]) for d in docs]
    sigs = np.empty((len(docs), cfg.num_perm), dtype=np.uint32)
    has_shingles = np.zeros(len(docs), dtype=bool)
    for i, norm in enumerate(normalized):
        shingles = shingle_hashes(word_hashes(norm), cfg.ngram)
        has_shingles[i] = len(shingles) > 0
        sigs[i] = signature(shingles, params, perms)
    buckets = band_hashes(sigs, bands, rows) if len(docs) else np.empty((0, bands), dtype=np.uint64)
    return [
        DedupKey(
            node=doc_node(doc, priorities[doc["source"]]),
            exact=exact_hash(norm),
            bands=tuple(int(h) >> 1 for h in buckets[i]) if has_shingles[i] else (),
        )
        for i, (doc, norm) in enumerate(zip(docs, normalized, strict=True))
    ]


class _KeysFn(beam.DoFn):
    def __init__(
        self, priorities: Mapping[str, int], cfg: DedupConfig, progress_dir: str | None = None
    ) -> None:
        self._priorities = dict(priorities)
        self._cfg = cfg
        self._progress = ProgressTicker(progress_dir, "dedup") if progress_dir else None

    def finish_bundle(self) -> None:
        if self._progress:
            self._progress.flush()

    def process(self, batch: list[Document]) -> Iterator[DedupKey]:
        Metrics.counter(NAMESPACE, "docs").inc(len(batch))
        if self._progress:
            self._progress.tick(len(batch))
        yield from compute_keys(batch, self._priorities, self._cfg)


class _MinCountFn(beam.CombineFn):
    """(min node, member count) of a bucket, without holding its members."""

    def create_accumulator(self) -> tuple[Any, int]:
        return (None, 0)

    def add_input(self, acc: tuple[Any, int], node: Node) -> tuple[Any, int]:
        low, n = acc
        return (node if low is None or node < low else low, n + 1)

    def merge_accumulators(self, accs: Iterable[tuple[Any, int]]) -> tuple[Any, int]:
        low, total = None, 0
        for node, n in accs:
            if node is not None and (low is None or node < low):
                low = node
            total += n
        return (low, total)

    def extract_output(self, acc: tuple[Any, int]) -> tuple[Any, int]:
        return acc


def _link_exact(item: tuple[int, dict[str, Any]]) -> Iterator[Any]:
    _, grouped = item
    winner = grouped["winner"][0]
    for key in grouped["members"]:
        if key.node == winner:
            yield key
        else:
            yield beam.pvalue.TaggedOutput("edges", (key.node, winner))
            yield beam.pvalue.TaggedOutput("exact_losers", (key.node, True))


def _link_bucket(item: tuple[Any, dict[str, Any]]) -> Iterator[tuple[Node, Node]]:
    _, grouped = item
    low, count = grouped["summary"][0]
    if count < 2:
        return
    Metrics.distribution(NAMESPACE, "bucket_size").update(count)
    for node in grouped["members"]:  # streamed by the runner, never collected
        if node != low:
            yield (node, low)


def _propagate(item: tuple[Node, dict[str, Any]]) -> Iterator[tuple[Node, Node]]:
    node, grouped = item
    label = min(grouped["label"])
    yield (node, label)
    for neighbour in grouped["neighbours"]:
        yield (neighbour, label)


def _changed(item: tuple[Node, dict[str, Any]]) -> Iterator[int]:
    _, grouped = item
    if list(grouped["before"]) != list(grouped["after"]):
        yield 1


class ConnectedComponents(beam.PTransform):
    """Min-label propagation: every node ends labeled with the minimum node of its component.

    Each round is one join of labels with adjacency plus one min-combiner, so no
    component is ever gathered on one worker.  After ``max_rounds`` one more round
    counts nodes whose label still changes; the count goes to the ``unconverged``
    output (zero means the labels are exact components).

    Args:
      max_rounds: propagation rounds.  A chain of ``d`` hops needs ``d`` rounds.
    """

    def __init__(self, max_rounds: int) -> None:
        super().__init__()
        self._rounds = max_rounds

    def expand(self, edges: beam.PCollection) -> dict[str, beam.PCollection]:
        adjacency = edges | "BothWays" >> beam.FlatMap(lambda e: [(e[0], e[1]), (e[1], e[0])])
        labels = (
            adjacency
            | "InitLabels" >> beam.Map(lambda e: (e[0], min(e)))
            | "InitMin" >> beam.CombinePerKey(min)
        )
        for r in range(self._rounds + 1):
            previous = labels
            labels = (
                {"label": labels, "neighbours": adjacency}
                | f"Join{r}" >> beam.CoGroupByKey()
                | f"Send{r}" >> beam.FlatMap(_propagate)
                | f"Min{r}" >> beam.CombinePerKey(min)
            )
        # ``labels`` is one round past ``previous``: any difference means not converged.
        unconverged = (
            {"before": previous, "after": labels}
            | "CompareLastRound" >> beam.CoGroupByKey()
            | "Changed" >> beam.FlatMap(_changed)
            | "CountChanged" >> beam.CombineGlobally(sum)
        )
        return {"labels": labels, "unconverged": unconverged}


def _decide(item: tuple[Node, dict[str, Any]]) -> Iterator[tuple[str, Decision]]:
    label, grouped = item
    size = sum(grouped["size"])
    Metrics.distribution(NAMESPACE, "cluster_size").update(size)
    for node, is_exact in grouped["members"]:
        if node == label:
            yield node[2], Decision(True, label[2], size, "")
        else:
            yield (
                node[2],
                Decision(False, label[2], size, "exact_duplicate" if is_exact else "near_duplicate"),
            )


def _node_member(item: tuple[Node, dict[str, Any]]) -> Iterator[tuple[Node, tuple[Node, bool]]]:
    node, grouped = item
    for label in grouped["label"]:
        yield label, (node, bool(list(grouped["exact"])))


def _apply(item: tuple[str, dict[str, Any]]) -> Iterator[Any]:
    doc_id, grouped = item
    decisions = list(grouped["decision"])
    for doc in grouped["doc"]:
        if not decisions:
            Metrics.counter(NAMESPACE, "kept").inc()
            yield {**doc, "cluster_id": doc_id, "cluster_size": 1}
            continue
        d = decisions[0]
        out = {**doc, "cluster_id": d.cluster_id, "cluster_size": d.cluster_size}
        if d.kept:
            Metrics.counter(NAMESPACE, "kept").inc()
            yield out
        else:
            Metrics.counter(NAMESPACE, f"dropped.{d.reason}").inc()
            yield beam.pvalue.TaggedOutput(
                "dropped",
                ledger_drop(out, "dedup", d.reason, f"duplicate_of={d.cluster_id}"),  # type: ignore[arg-type]
            )


class DedupDocuments(beam.PTransform):
    """Removes exact and near duplicates across the sources given to it.

    Returns a dict: ``kept`` documents (with ``cluster_id`` and ``cluster_size``),
    ``dropped`` ledger rows, and ``unconverged`` (a one-element count, zero when the
    clustering converged).

    Args:
      cfg: dedup config.
      priorities: source name -> survivor priority, lower wins.
      progress_dir: local directory for the terminal progress line (``transforms/progress.py``).
    """

    def __init__(
        self, cfg: DedupConfig, priorities: Mapping[str, int], progress_dir: str | None = None
    ) -> None:
        super().__init__()
        self._cfg = cfg
        self._priorities = dict(priorities)
        self._progress_dir = progress_dir

    def expand(self, docs: beam.PCollection) -> dict[str, beam.PCollection]:
        keys = (
            docs
            | "Batch" >> beam.BatchElements(min_batch_size=16, max_batch_size=512)
            | "DedupKeys" >> beam.ParDo(_KeysFn(self._priorities, self._cfg, self._progress_dir))
        )
        by_exact = keys | "ByExactHash" >> beam.Map(lambda k: (k.exact, k))
        exact_winner = (
            by_exact
            | "ExactNode" >> beam.Map(lambda kv: (kv[0], kv[1].node))
            | "ExactMin" >> beam.CombinePerKey(min)
        )
        exact = (
            {"members": by_exact, "winner": exact_winner}
            | "ExactJoin" >> beam.CoGroupByKey()
            | "ExactGroups" >> beam.FlatMap(_link_exact).with_outputs("edges", "exact_losers", main="unique")
        )
        band_members = exact.unique | "Bands" >> beam.FlatMap(
            lambda k: [((band, h), k.node) for band, h in enumerate(k.bands)]
        )
        bucket_summary = band_members | "BucketMinCount" >> beam.CombinePerKey(_MinCountFn())
        near_edges = (
            {"members": band_members, "summary": bucket_summary}
            | "BucketJoin" >> beam.CoGroupByKey()
            | "LshEdges" >> beam.FlatMap(_link_bucket)
        )
        edges = (exact.edges, near_edges) | "AllEdges" >> beam.Flatten() | "DistinctEdges" >> beam.Distinct()
        cc = edges | "ConnectedComponents" >> ConnectedComponents(self._cfg.max_rounds)
        labels = cc["labels"]
        sizes = (
            labels | "ClusterOf" >> beam.Map(lambda kv: (kv[1], 1)) | "ClusterSize" >> beam.CombinePerKey(sum)
        )
        members = (
            {"label": labels, "exact": exact.exact_losers}
            | "NodeJoin" >> beam.CoGroupByKey()
            | "ByCluster" >> beam.FlatMap(_node_member)
        )
        decisions = (
            {"members": members, "size": sizes}
            | "ClusterJoin" >> beam.CoGroupByKey()
            | "Decide" >> beam.FlatMap(_decide)
        )
        applied = (
            {"doc": docs | "ById" >> beam.Map(lambda d: (d["id"], d)), "decision": decisions}
            | "DocJoin" >> beam.CoGroupByKey()
            | "ApplyDecisions" >> beam.FlatMap(_apply).with_outputs("dropped", main="kept")
        )
        return {"kept": applied.kept, "dropped": applied.dropped, "unconverged": cc["unconverged"]}
