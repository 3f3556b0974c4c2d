"""Dedup keys: survivor-ordering nodes, exact hashes and LSH band hashes of documents.

``Keys`` normalizes each batch of documents once; every document gets the hash of
its normalized text (its exact group), its MinHash signature
(``transforms/dedup/minhash.py``) and its LSH band hashes, under its *node*, the
``(generation, *survivor keys, id)`` tuple whose minimum in a cluster survives.
Its body leaves for ``DocJoin`` (``transforms/dedup/deduplicate.py``); only a light
record (stub, bands, signature) goes on to the clustering.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, NamedTuple

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics

from schemas.config import DedupConfig, SurvivorConfig
from schemas.records import Document
from transforms.dedup.minhash import (
    MinHashParams,
    band_hashes,
    batch_shingle_hashes,
    lsh_params,
    one_permutation_signatures,
    shingle_hashes,
    signatures,
    word_hashes,
)
from transforms.packing import pack
from transforms.text import normalize_for_dedup

NAMESPACE = "tropemix.dedup"

# Generations: survivors of earlier runs sort before every document of this run.
EARLIER = 0
CURRENT = 1

# (generation, *survivor keys, id): the smallest node of a cluster survives.
Node = tuple[Any, ...]


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


def key_partition(key: int | tuple[int, int], partitions: int) -> int:
    """The partition of an exact hash or of a ``(band, bucket)`` key.

    Args:
      key: an exact hash or a ``(band, bucket)`` pair.
      partitions: partitions of the key space.
    """
    if isinstance(key, tuple):
        band, bucket = key
        # Bucket hashes are uniform already; the band's odd multiplier keeps equal
        # hashes of different bands apart.
        return (bucket + band * 0x9E3779B97F4A7C15) % partitions
    return key % partitions


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


class KeysFn(beam.DoFn):
    """Keys batches of documents by exact hash and computes their LSH bands, once per text.

    The main output ``(exact hash, (node, (stub, bands, signature)))`` carries no text:
    the exact groups, the bucket links and the clustering move only ids and hashes.
    The documents themselves go out on ``bodies``, keyed by node and packed
    (``transforms/packing.py``), and meet their decision in ``DocJoin``: the one
    shuffle of document bodies in dedup; only kept and near-duplicate bodies are unpacked.  Exact
    copies are signed too; it saves a second normalization of every winner.

    Args:
      cfg: dedup config.
      priorities: source name -> survivor priority, lower wins.
    """

    def __init__(self, cfg: DedupConfig, priorities: Mapping[str, int]) -> None:
        self._cfg = cfg
        self._priorities = dict(priorities)
        self._perms: tuple[Any, Any] | None = None

    def setup(self) -> None:
        cfg = self._cfg
        self._perms = MinHashParams(num_perm=cfg.num_perm, seed=cfg.seed, bits=cfg.bits).permutations()

    def process(self, batch: list[Document]) -> Iterator[Any]:
        Metrics.counter(NAMESPACE, "docs").inc(len(batch))
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


class Keyed(NamedTuple):
    """What ``Keys`` outputs.

    Attributes:
      exact: ``(exact hash, (node, (stub, bands, signature)))`` per document.
      bodies: ``(node, (exact hash, packed document))`` per document.
    """

    exact: beam.PCollection
    bodies: beam.PCollection


class Keys(beam.PTransform):
    """Documents -> their exact-group members and their packed bodies (``KeysFn``), in batches.

    Args:
      cfg: dedup config.
      priorities: source name -> survivor priority, lower wins.
    """

    def __init__(self, cfg: DedupConfig, priorities: Mapping[str, int]) -> None:
        super().__init__()
        self._cfg = cfg
        self._priorities = dict(priorities)

    def expand(self, docs: beam.PCollection) -> Keyed:
        keyed = (
            docs
            | "BatchDocs" >> beam.BatchElements(min_batch_size=16, max_batch_size=512)
            | "KeyDocs"
            >> beam.ParDo(KeysFn(self._cfg, self._priorities)).with_outputs("bodies", main="exact")
        )
        return Keyed(keyed.exact, keyed.bodies)
