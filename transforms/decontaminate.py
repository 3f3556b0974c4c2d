"""Decontamination: drops training documents that share long word n-grams with evaluation records.

Overlap is measured as in the GPT-3 and OLMo reports: lower-cased word n-grams
(13 by default).  The evaluation records become one compact index, the sorted
64-bit hashes of their distinct n-grams with the record each came from (about 12
bytes per n-gram: 10,000 records of 300 words take ~35 MB), built once per worker
process in ``setup`` through ``Shared``.  Training documents stream past it: each
document's n-gram hashes are looked up with a binary search (``np.searchsorted``),
so no n-gram is ever shuffled or joined.

A document is contaminated by an eval record when it holds at least ``threshold``
of that record's distinct n-grams (and at least one).  A fraction of the record, not
a bare count, keeps a common 13-word phrase (a licence line, a famous quotation)
from condemning every page that quotes it, while a record pasted whole, or with
its edges reworded, still matches most of its n-grams.  Each drop goes to the
ledger with reason ``decontaminated`` and the eval file and record it matched.
"""

from __future__ import annotations

import json
import os
import re
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.utils import shared

from schemas.config import DecontaminateConfig, EvalSet
from schemas.records import Document, LedgerRow
from transforms.io.streams import open_stream
from transforms.logs import stage_logger
from transforms.report.counts import ledger_drop

NAMESPACE = "tropemix.decontaminate"
STAGE = "decontaminate"
REASON = "decontaminated"
DROPPED = "dropped"
_LOG = stage_logger(STAGE)
_WORD = re.compile(r"\w+")
# Odd 64-bit multipliers: one spreads a word's CRC-32 over 64 bits, one rolls the n-gram.
_SPREAD = np.uint64(0x9E3779B97F4A7C15)
_ROLL = np.uint64(0x100000001B3)


def ngram_hashes(text: str, n: int) -> np.ndarray:
    """Sorted distinct 64-bit hashes of the lower-cased word n-grams of ``text``.

    Words are runs of letters and digits, so punctuation and spacing do not matter.
    A text of fewer than ``n`` words has no n-grams.

    Args:
      text: the text.
      n: words per n-gram.
    """
    words = _WORD.findall(text.lower())
    if len(words) < n:
        return np.empty(0, dtype=np.uint64)
    crc = np.fromiter((zlib.crc32(w.encode("utf-8")) for w in words), dtype=np.uint64, count=len(words))
    spread = crc * _SPREAD
    width = len(words) - n + 1
    rolled = np.zeros(width, dtype=np.uint64)
    for i in range(n):
        rolled = rolled * _ROLL + spread[i : i + width]
    # Mix the high bits down so nearby n-grams do not share low bits.
    rolled ^= rolled >> np.uint64(29)
    return np.unique(rolled)


@dataclass(frozen=True)
class EvalIndex:
    """The n-grams of every eval record: sorted ``hashes`` and, beside each, its ``records`` index.

    Args:
      hashes: sorted uint64 n-gram hashes, one per (n-gram, record) pair.
      records: int32 index into ``names`` of each hash's record.
      sizes: int32 distinct n-grams per record.
      names: ``(eval file, record id)`` per record.
      short: eval records with fewer words than an n-gram (they cannot match).
    """

    hashes: np.ndarray
    records: np.ndarray
    sizes: np.ndarray
    names: list[tuple[str, str]]
    short: int


class Match(NamedTuple):
    """The eval record a document overlaps most: its file, id, and shared / total n-grams."""

    eval_file: str
    record: str
    shared: int
    total: int


def _jsonl_records(path: str, eval_set: EvalSet) -> Iterator[tuple[str, str]]:
    with open_stream(path) as stream:
        for number, line in enumerate(stream, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as err:
                raise ValueError(f"eval file {path} line {number} is not a JSON object: {err}") from None
            if not isinstance(obj, dict):
                raise ValueError(f"eval file {path} line {number} is not a JSON object")
            record_id = str(obj.get(eval_set.id_field, number))
            if eval_set.format == "chat":
                messages = obj.get("messages") or []
                text = "\n\n".join(str(m.get("content") or "") for m in messages if isinstance(m, dict))
            else:
                text = str(obj.get(eval_set.text_field) or "")
            yield record_id, text


def eval_records(eval_set: EvalSet) -> Iterator[tuple[str, str, str]]:
    """``(file, record id, text)`` of every record of an eval set, files in sorted order.

    Args:
      eval_set: the eval files and their format.

    Raises:
      ValueError: the glob matches no file, or a JSONL line is not an object.
    """
    paths = sorted(m.path for r in FileSystems.match([eval_set.path]) for m in r.metadata_list)
    if not paths:
        raise ValueError(f"decontaminate.evals path {eval_set.path!r} matches no file; fix the glob")
    for path in paths:
        name = os.path.basename(path)
        if eval_set.format == "text":
            with open_stream(path) as stream:
                yield name, name, stream.read().decode("utf-8", errors="replace")
            continue
        for record_id, text in _jsonl_records(path, eval_set):
            yield name, record_id, text


def build_index(
    records: Sequence[tuple[str, str, str]] | Iterator[tuple[str, str, str]], n: int
) -> EvalIndex:
    """The compact index of eval records.

    Args:
      records: ``(file, record id, text)``.
      n: words per n-gram.
    """
    parts: list[np.ndarray] = []
    owners: list[np.ndarray] = []
    sizes: list[int] = []
    names: list[tuple[str, str]] = []
    short = 0
    for eval_file, record_id, text in records:
        hashes = ngram_hashes(text, n)
        if not hashes.size:
            short += 1
            continue
        parts.append(hashes)
        owners.append(np.full(hashes.size, len(names), dtype=np.int32))
        sizes.append(int(hashes.size))
        names.append((eval_file, record_id))
    if not parts:
        empty = np.empty(0, dtype=np.uint64)
        return EvalIndex(empty, np.empty(0, dtype=np.int32), np.empty(0, dtype=np.int32), [], short)
    hashes = np.concatenate(parts)
    owner = np.concatenate(owners)
    order = np.lexsort((owner, hashes))
    return EvalIndex(hashes[order], owner[order], np.asarray(sizes, dtype=np.int32), names, short)


def load_index(cfg: DecontaminateConfig) -> EvalIndex:
    """Reads every eval set of the config into one index.

    Args:
      cfg: the decontaminate config.
    """

    def every() -> Iterator[tuple[str, str, str]]:
        for eval_set in cfg.evals:
            yield from eval_records(eval_set)

    return build_index(every(), cfg.ngram)


def find_match(text: str, index: EvalIndex, n: int, threshold: float) -> Match | None:
    """The eval record ``text`` is contaminated by, or None.

    The record with the largest fraction of its n-grams in ``text`` wins (the first
    record on ties); it must reach ``threshold``.

    Args:
      text: the training document.
      index: the eval index.
      n: words per n-gram (the index's).
      threshold: least fraction of a record's n-grams.
    """
    if not index.hashes.size:
        return None
    hashes = ngram_hashes(text, n)
    lo = np.searchsorted(index.hashes, hashes, side="left")
    hi = np.searchsorted(index.hashes, hashes, side="right")
    hit = hi > lo
    if not hit.any():
        return None
    lo, hi = lo[hit], hi[hit]
    if bool(np.all(hi - lo == 1)):
        owners = index.records[lo]
    else:
        # An n-gram shared by several eval records counts for each of them.
        owners = np.concatenate([index.records[a:b] for a, b in zip(lo, hi, strict=True)])
    ids, shared_counts = np.unique(owners, return_counts=True)
    fractions = shared_counts / index.sizes[ids]
    best = int(np.argmax(fractions))
    if fractions[best] < threshold:
        return None
    record = int(ids[best])
    eval_file, record_id = index.names[record]
    return Match(eval_file, record_id, int(shared_counts[best]), int(index.sizes[record]))


def decontaminated_row(doc: Document, match: Match) -> LedgerRow:
    """The ledger row of a dropped document, naming the eval file and record it matched."""
    detail = f"eval={match.eval_file} record={match.record} ngrams={match.shared}/{match.total}"
    return ledger_drop(doc, STAGE, REASON, detail)


class _LoadedIndex:
    """Holder for an index; ``Shared`` needs a weak-referenceable object."""

    def __init__(self, index: EvalIndex) -> None:
        self.index = index


class _DecontaminateFn(beam.DoFn):
    """A batch of documents -> the clean ones, and ledger rows of those matching an eval set on ``dropped``."""

    def __init__(self, cfg: DecontaminateConfig) -> None:
        self._cfg = cfg
        self._shared = shared.Shared()
        self._index: EvalIndex | None = None
        self._checked = Metrics.counter(NAMESPACE, "checked")
        self._dropped = Metrics.counter(NAMESPACE, f"dropped.{REASON}")

    def setup(self) -> None:
        cfg = self._cfg
        self._index = self._shared.acquire(
            lambda: _LoadedIndex(load_index(cfg)), tag=cfg.model_dump_json()
        ).index
        # Records shorter than an n-gram can never match; say so rather than pass them silently.
        log = _LOG.warning if self._index.short else _LOG.info
        log(
            "eval index loaded",
            records=len(self._index.names),
            ngrams=int(self._index.hashes.size),
            too_short=self._index.short,
        )

    def process(self, batch: list[Document]) -> Iterator[Any]:
        assert self._index is not None
        self._checked.inc(len(batch))
        for doc in batch:
            match = find_match(doc["text"], self._index, self._cfg.ngram, self._cfg.threshold)
            if match is None:
                yield doc
                continue
            self._dropped.inc()
            Metrics.counter(NAMESPACE, f"source.{doc['source']}").inc()
            yield beam.pvalue.TaggedOutput(DROPPED, decontaminated_row(doc, match))


class DecontaminateResult(NamedTuple):
    """What ``Decontaminate`` returns: ``kept`` documents and ``dropped`` ledger rows."""

    kept: beam.PCollection
    dropped: beam.PCollection


class Decontaminate(beam.PTransform):
    """Drops documents that overlap the eval sets, a batch at a time against a per-worker index.

    Args:
      cfg: the decontaminate config.
    """

    def __init__(self, cfg: DecontaminateConfig) -> None:
        super().__init__()
        self._cfg = cfg

    def expand(self, docs: beam.PCollection) -> DecontaminateResult:
        size = self._cfg.batch_size
        out = (
            docs
            | "Batch" >> beam.BatchElements(min_batch_size=min(8, size), max_batch_size=size)
            | "Match" >> beam.ParDo(_DecontaminateFn(self._cfg)).with_outputs(DROPPED, main="kept")
        )
        return DecontaminateResult(out.kept, out[DROPPED])
