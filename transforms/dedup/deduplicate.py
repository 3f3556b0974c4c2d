"""Exact and near-duplicate removal: exact hashing, MinHash LSH, connected components.

Decisions run on light *nodes*, ``(generation, *survivor keys, id)`` tuples whose
minimum in a cluster is its survivor; document bodies move in one join only.

1. ``Keys``: batches of documents are normalized once; each document gets the hash
   of its normalized text and its MinHash signature (``transforms.dedup.minhash``) and
   LSH band hashes.  Its body leaves for ``DocJoin``; only a light record
   (stub, bands, signature) goes on.
2. ``ExactGroups`` / ``ExactSplit``: each exact group's minimum node and size, from
   members grouped in lists by partition of the hash space (``GroupByPartition``).
   The minimum emits its band members ``((band, bucket), node)``; every other
   member becomes a ledger stub, so exact copies never reach LSH.
3. ``LinkBuckets``: band members are grouped the same way.  Within a bucket, a member
   links to its salted group's minimum (``bucket_salts``) and every group minimum to
   the bucket's minimum, so no node gets a boilerplate bucket's whole membership as
   neighbours.
4. ``VerifyEdges`` (optional): keeps a candidate pair only when the Jaccard
   similarity estimated from the two signatures reaches ``verify_threshold``.
5. ``ConnectedComponents`` (``transforms/blocks.py``): exact components by
   large-star / small-star rounds on edge records in lists per partition of the
   node space; the job fails rather than release labels of an unconverged graph.
6. ``Decide`` / ``ApplyDecisions``: the component minimum survives; the cluster
   size sums exact-group sizes; one join by node (``DocJoin``) applies the decision
   to the winner's document and its exact copies' stubs.

Incremental runs: the survivors' exact hash and band hashes are emitted as index
rows (``DEDUP_INDEX_SCHEMA``).  A later run reads them back as nodes of generation
``EARLIER``, which sort before every document of the run, so a document that
collides with an earlier survivor is dropped and names it.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple, cast

import apache_beam as beam
import numpy as np
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from schemas.config import DedupConfig, SurvivorConfig
from schemas.records import DEDUP_INDEX_SCHEMA, Document
from transforms.blocks import ConnectedComponents, ListsPerKey, salt_of
from transforms.dedup.minhash import (
    MinHashParams,
    band_hashes,
    batch_shingle_hashes,
    estimated_jaccard,
    lsh_params,
    one_permutation_signatures,
    shingle_hashes,
    signatures,
    word_hashes,
)
from transforms.io.publication import require_complete
from transforms.io.write import WriteSortedFiles, parquet_encoder
from transforms.packing import pack, unpack
from transforms.progress import ProgressTicker
from transforms.report.conservation import JOIN_LOSS, JoinIntegrityError
from transforms.report.counts import ledger_drop
from transforms.text import normalize_for_dedup, stable_hash

NAMESPACE = "tropemix.dedup"

# Generations: survivors of earlier runs sort before every document of this run.
EARLIER = 0
CURRENT = 1
# Index rows with this band hold the exact hash instead of an LSH bucket.
EXACT_BAND = -1

# (generation, *survivor keys, id): the smallest node of a cluster survives.
Node = tuple[Any, ...]


class Decision(NamedTuple):
    kept: bool
    cluster_id: str
    cluster_size: int
    earlier: bool  # the survivor is an earlier run's document


def score_of(doc: Document, field: str) -> float:
    """The numeric value at a dotted path of a document, 0 when absent or not a number.

    Args:
      doc: the document.
      field: e.g. ``meta.quality`` or ``trope_scores.ethical_reasoning``.
    """
    value: Any = doc
    for part in field.split("."):
        if not isinstance(value, Mapping):
            return 0.0
        value = value.get(part)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return 0.0
    return float(value)


def doc_node(doc: Document, priority: int, survivor: SurvivorConfig | None = None) -> Node:
    """The survivor-ordering node of a document of this run.

    Args:
      doc: the document.
      priority: the source's dedup priority (lower wins).
      survivor: which keys order candidates; defaults to priority, then score.
    """
    survivor = survivor or SurvivorConfig()
    keys: list[int] = []
    for key in survivor.order:
        if key == "priority":
            keys.append(priority)
        elif key == "score":
            keys.append(-round(score_of(doc, survivor.score_field) * 1_000_000))
        else:
            keys.append(-len(doc["text"]))
    return (CURRENT, *keys, doc["id"])


def earlier_node(doc_id: str) -> Node:
    """The node of an earlier run's survivor: it outranks every document of this run."""
    return (EARLIER, doc_id)


def exact_hash(normalized: str) -> int:
    """63-bit hash of a normalized text: the exact-duplicate key (fits Beam's VarIntCoder)."""
    return int.from_bytes(hashlib.blake2b(normalized.encode("utf-8"), digest_size=8).digest(), "big") >> 1


def index_fingerprint(cfg: DedupConfig) -> str:
    """The parameters index hashes depend on, as stored in the index files' metadata."""
    bands, rows = lsh_params(cfg.threshold, cfg.num_perm)
    return json.dumps(
        {
            "ngram": cfg.ngram,
            "num_perm": cfg.num_perm,
            "seed": cfg.seed,
            "bits": cfg.bits,
            "minhash": cfg.minhash,
            "bands": bands,
            "rows": rows,
            "normalize": "nfkc-lower-nopunct-v1",
        },
        sort_keys=True,
    )


def compute_bands(texts: Sequence[str], cfg: DedupConfig, perms: tuple[Any, Any] | None = None) -> Any:
    """Signatures and LSH band hashes of a batch of texts.

    Returns ``(signatures, bands, has_shingles)``: a ``(docs, num_perm)`` array, a
    ``(docs, bands)`` array of 63-bit bucket hashes, and which documents had a word.

    Args:
      texts: raw document texts.
      cfg: shingle size, permutations, hash width and threshold.
      perms: ``MinHashParams.permutations()`` when the caller keeps them (``datasketch`` scheme).
    """
    return bands_of_normalized([normalize_for_dedup(t) for t in texts], cfg, perms)


def bands_of_normalized(normalized: list[str], cfg: DedupConfig, perms: tuple[Any, Any] | None = None) -> Any:
    """``compute_bands`` of texts already passed through ``normalize_for_dedup``."""
    bands, rows = lsh_params(cfg.threshold, cfg.num_perm)
    if cfg.minhash == "fast":
        flat, docs = batch_shingle_hashes(normalized, cfg.ngram)
        sigs = one_permutation_signatures(flat, docs, len(normalized), cfg.num_perm, cfg.seed, cfg.bits)
        has_shingles = np.bincount(docs, minlength=len(normalized)) > 0
    else:
        params = MinHashParams(num_perm=cfg.num_perm, seed=cfg.seed, bits=cfg.bits)
        shingles = [shingle_hashes(word_hashes(t), cfg.ngram) for t in normalized]
        sigs = signatures(shingles, params, perms or params.permutations())
        has_shingles = np.array([len(s) > 0 for s in shingles], dtype=bool)
    buckets = band_hashes(sigs, bands, rows) >> np.uint64(1)
    return sigs, buckets.astype(np.int64), has_shingles


class _KeysFn(beam.DoFn):
    """Keys batches of documents by exact hash and computes their LSH bands, once per text.

    The main output ``(exact hash, (node, (stub, bands, signature)))`` carries no text:
    the exact groups, the bucket links and the clustering move only ids and hashes.
    The documents themselves go out on ``bodies``, keyed by node and packed
    (``transforms/packing.py``), and meet their decision in ``DocJoin``: the one
    shuffle of document bodies in dedup; only kept and near-duplicate bodies are unpacked.  Exact
    copies are signed too; it saves a second normalization of every winner.
    """

    def __init__(
        self,
        cfg: DedupConfig,
        priorities: Mapping[str, int],
        progress_dir: str | None = None,
    ) -> None:
        self._cfg = cfg
        self._priorities = dict(priorities)
        self._progress = ProgressTicker(progress_dir, "dedup") if progress_dir else None
        self._perms: tuple[Any, Any] | None = None

    def setup(self) -> None:
        cfg = self._cfg
        self._perms = MinHashParams(num_perm=cfg.num_perm, seed=cfg.seed, bits=cfg.bits).permutations()

    def finish_bundle(self) -> None:
        if self._progress:
            self._progress.flush()

    def process(self, batch: list[Document]) -> Iterator[Any]:
        Metrics.counter(NAMESPACE, "docs").inc(len(batch))
        if self._progress:
            self._progress.tick(len(batch))
        normalized = [normalize_for_dedup(doc["text"]) for doc in batch]
        sigs, buckets, has_shingles = bands_of_normalized(normalized, self._cfg, self._perms)
        verify = self._cfg.verify_threshold is not None
        for i, doc in enumerate(batch):
            node = doc_node(doc, self._priorities[doc["source"]], self._cfg.survivor)
            # A text without a word has no shingles: it can only be an exact duplicate,
            # otherwise all such documents would share every bucket.
            bands = buckets[i].tolist() if has_shingles[i] else []
            stub: dict[str, Any] = {
                "id": doc["id"],
                "source": doc["source"],
                "narrative": doc.get("narrative", "none"),
            }
            if "truncated_from" in doc:
                stub["truncated_from"] = doc["truncated_from"]
            sig = sigs[i].tobytes() if verify and bands else None
            exact = exact_hash(normalized[i])
            yield exact, (node, (stub, bands, sig))
            yield beam.pvalue.TaggedOutput("bodies", (node, (exact, pack(doc))))


def key_partition(key: int | tuple[int, int], partitions: int) -> int:
    """The partition of an exact hash or of a ``(band, bucket)`` key."""
    if isinstance(key, tuple):
        band, bucket = key
        # Bucket hashes are uniform already; the band's odd multiplier keeps equal
        # hashes of different bands apart.
        return (bucket + band * 0x9E3779B97F4A7C15) % partitions
    return key % partitions


def _item_partition(item: tuple[Any, Any], partitions: int) -> int:
    return key_partition(item[0], partitions)


def _whole(item: Any) -> Any:
    return item


class GroupByPartition(beam.PTransform):
    """``(key, value)`` items -> ``(partition, lists of items)``: keys grouped by partition, in lists.

    A runner's cost per shuffled element was most of the cost of dedup's many small
    records (one per document per exact group, nine per document per LSH band);
    ``ListsPerKey`` pays it once per list of a partition and bundle.  Every item of a
    key lands in the same partition, and the consumer streams the lists twice
    instead of holding a key's members.

    Args:
      partitions: partitions of the key space.
    """

    def __init__(self, partitions: int) -> None:
        super().__init__()
        self._partitions = partitions

    def expand(self, items: beam.PCollection) -> beam.PCollection:
        return (
            items
            | "Partition"
            >> ListsPerKey(functools.partial(_item_partition, partitions=self._partitions), _whole)
            | "GroupPartitions" >> beam.GroupByKey()
        )


def _exact_groups(item: tuple[int, Iterable[list[tuple[int, tuple[Node, Any]]]]]) -> Iterator[Any]:
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


class ExactGroups(beam.PTransform):
    """Tells every member of an exact group the group's minimum node and size.

    Input ``(exact hash, (node, payload))``; members with payload ``None`` (earlier
    runs' survivors) count towards the minimum and size but are not output.

    Returns a dict: ``members``, ``(key, node, payload, min, size)`` per member with
    a payload, and ``summary``, ``(key, min, size)`` per key.

    Args:
      partitions: partitions of the hash space (``GroupByPartition``).
    """

    def __init__(self, partitions: int) -> None:
        super().__init__()
        self._partitions = partitions

    def expand(self, items: beam.PCollection) -> dict[str, beam.PCollection]:
        grouped = (
            items
            | "GroupByPartition" >> GroupByPartition(self._partitions)
            | "MinAndSize" >> beam.FlatMap(_exact_groups).with_outputs("summary", main="members")
        )
        return {"members": grouped.members, "summary": grouped.summary}


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


def _partition_edges(
    item: tuple[int, Iterable[list[tuple[tuple[int, int], Node]]]], salts: int
) -> Iterator[tuple[Node, Node]]:
    """Every member to its salted group's minimum, each group minimum to its bucket's."""
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
    """Candidate edges from ``((band, bucket), node)`` members: every member to the bucket minimum.

    A member links to its salted group's minimum and every group minimum to the
    bucket's minimum.  Salting caps the bucket minimum's degree (a boilerplate bucket
    of 100,000 pages gives it about ``salts`` neighbours, not 100,000), which keeps
    ``ConnectedComponents``' joins free of hot keys.  Members travel in lists by
    partition of the bucket space (``GroupByPartition``).

    Args:
      salts: salted groups per bucket.
      partitions: partitions of the bucket space.
    """

    def __init__(self, salts: int, partitions: int) -> None:
        super().__init__()
        self._salts = salts
        self._partitions = partitions

    def expand(self, members: beam.PCollection) -> beam.PCollection:
        return (
            members
            | "GroupByPartition" >> GroupByPartition(self._partitions)
            | "BucketEdges" >> beam.FlatMap(_partition_edges, self._salts)
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


def check_index(patterns: Sequence[str], cfg: DedupConfig) -> None:
    """Fails unless every earlier index file is in a finished run and has this config's hashing parameters.

    Args:
      patterns: ``dedup.previous_index`` globs.
      cfg: this run's dedup config.
    """
    require_complete(patterns)
    want = index_fingerprint(cfg)
    for pattern in patterns:
        matched = FileSystems.match([pattern])[0].metadata_list
        if not matched:
            raise ValueError(f"dedup.previous_index: {pattern!r} matches no file; fix the glob")
        for meta in matched:
            with FileSystems.open(meta.path) as f:
                have = (pq.read_schema(f).metadata or {}).get(b"dedup_params", b"").decode()
            if have != want:
                raise ValueError(
                    f"dedup.previous_index: {meta.path} was written with {have or 'unknown parameters'}, "
                    f"this run uses {want}; use the same ngram, num_perm, seed, bits and threshold"
                )


class ReadDedupIndex(beam.PTransform):
    """Earlier runs' index rows (``DEDUP_INDEX_SCHEMA``) from Parquet globs.

    Args:
      patterns: file globs, local or ``gs://``.
    """

    def __init__(self, patterns: Sequence[str]) -> None:
        super().__init__()
        self._patterns = list(patterns)

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.PCollection:
        return (
            pbegin
            | "Patterns" >> beam.Create(self._patterns)
            | "ReadIndex" >> beam.io.ReadAllFromParquet(columns=["id", "band", "bucket"])
        )


def index_rows(entry: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The index rows (``DEDUP_INDEX_SCHEMA``) of one survivor: its exact hash as band -1, then its bands.

    Args:
      entry: ``{"id", "exact", "bands"}``, the ``index`` output of ``DedupDocuments``.
    """
    doc_id = entry["id"]
    return [{"id": doc_id, "band": EXACT_BAND, "bucket": entry["exact"]}] + [
        {"id": doc_id, "band": band, "bucket": bucket} for band, bucket in enumerate(entry["bands"])
    ]


class WriteDedupIndex(beam.PTransform):
    """Writes survivors' index rows to ``directory`` as sorted Parquet files for later runs.

    Survivors travel as one entry each (``index_rows`` expands it while encoding),
    not as one element per band: ten times fewer elements to shuffle.  The files'
    schema metadata holds ``index_fingerprint(cfg)``, which ``check_index`` compares
    before a later run uses them.  The writer's stats and counters count survivors.

    Args:
      directory: usually ``<output>/dedup_index``.
      cfg: this run's dedup config.
    """

    def __init__(self, directory: str, cfg: DedupConfig) -> None:
        super().__init__()
        self._directory = directory
        self._cfg = cfg

    def expand(self, entries: beam.PCollection) -> beam.PCollection:
        shards = self._cfg.index_shards
        schema = DEDUP_INDEX_SCHEMA.with_metadata(
            {**(DEDUP_INDEX_SCHEMA.metadata or {}), b"dedup_params": index_fingerprint(self._cfg).encode()}
        )
        encode_rows = parquet_encoder(schema, 100_000)
        return (
            entries
            | "IndexFile" >> beam.Map(lambda e: (stable_hash("dedup_index", e["id"]) % shards, e))
            | "WriteIndex"
            >> WriteSortedFiles(
                self._directory,
                "index",
                shards,
                "parquet",
                lambda sorted_entries: encode_rows([row for e in sorted_entries for row in index_rows(e)]),
                # Rows come out ordered by (id, band), as readers expect.
                sort_key=lambda e: (e["id"], e["exact"], e["bands"]),
            )
        )


class DedupDocuments(beam.PTransform):
    """Removes exact and near duplicates across the sources given to it.

    Returns a dict: ``kept`` documents (with ``cluster_id`` and ``cluster_size``),
    ``dropped`` ledger rows, ``index`` entries of the survivors for later runs
    (``{"id", "exact", "bands"}``, see ``index_rows``).  The job fails with
    ``ComponentsNotConverged`` before any of them is released when the clustering
    did not converge within ``cfg.max_rounds``.

    Args:
      cfg: dedup config; ``previous_index`` files are read as earlier survivors.
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
        cfg = self._cfg
        keyed = (
            docs
            | "BatchDocs" >> beam.BatchElements(min_batch_size=16, max_batch_size=512)
            | "Keys"
            >> beam.ParDo(_KeysFn(cfg, self._priorities, self._progress_dir)).with_outputs(
                "bodies", main="exact"
            )
        )
        exact_items = [keyed.exact]
        band_members = []
        if cfg.previous_index:
            check_index(cfg.previous_index, cfg)
            earlier = docs.pipeline | "EarlierIndex" >> ReadDedupIndex(cfg.previous_index)
            exact_items.append(
                earlier
                | "EarlierExact" >> beam.Filter(lambda r: r["band"] == EXACT_BAND)
                | "EarlierExactNode" >> beam.Map(lambda r: (r["bucket"], (earlier_node(r["id"]), None)))
            )
            band_members.append(
                earlier
                | "EarlierBands" >> beam.Filter(lambda r: r["band"] != EXACT_BAND)
                | "EarlierBandNode" >> beam.Map(lambda r: ((r["band"], r["bucket"]), earlier_node(r["id"])))
            )
        grouped = (
            exact_items | "AllExactItems" >> beam.Flatten() | "ExactGroups" >> ExactGroups(cfg.partitions)
        )
        exact = grouped["members"] | "ExactSplit" >> beam.FlatMap(_split_exact).with_outputs(
            "keys", "sigs", "losers", main="bands"
        )
        weights = grouped["summary"] | "ExactWeights" >> beam.FlatMap(_exact_weight)
        band_members.append(exact.bands)
        edges = (
            band_members
            | "AllBandMembers" >> beam.Flatten()
            | "LinkBuckets" >> LinkBuckets(cfg.bucket_salts, cfg.partitions)
            | "DistinctEdges" >> beam.Distinct()
        )
        if cfg.verify_threshold is not None:
            edges = edges | "VerifyEdges" >> VerifyEdges(exact.sigs, cfg.verify_threshold, cfg.bits)
        labels = edges | "ConnectedComponents" >> ConnectedComponents(cfg.max_rounds, cfg.partitions)
        members = (
            {"label": labels, "weight": weights}
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
            | "Decide" >> beam.FlatMap(_decide)
        )
        decisions = (clustered, members.singles) | "AllDecisions" >> beam.Flatten()
        applied = (
            {"doc": keyed.bodies, "keys": exact.keys, "losers": exact.losers, "decision": decisions}
            | "DocJoin" >> beam.CoGroupByKey()
            | "ApplyDecisions" >> beam.FlatMap(_apply).with_outputs("dropped", "index", main="kept")
        )
        return {
            "kept": applied.kept,
            "dropped": applied.dropped,
            "index": applied.index,
        }
