"""``ReadSource``: every file of one source, as documents, dead letters and a per-file balance.

Every record a reader sees ends up either as a document on the ``kept`` output or
as a dead letter on the ``dead_letter`` output, with its path, offset, stage and
error.  File-level damage (an empty file, a truncated stream, a corrupt Parquet
footer, a clipped WARC) is a dead letter too, so nothing disappears without a trace.
Each read range also reports how many records it saw, and ``ReadSource`` checks per
file that records seen = documents + dead letters.

Reading follows Beam's own ``ReadAllFromText``: match the globs, expand each file
into byte ranges, ``Reshuffle`` the ranges over workers, read each range.  Plain
JSONL is split into ``read.split_bytes`` ranges; compressed files, Parquet, WARC,
WET and text files are one range each, read streaming by one worker.  The formats
are read by transforms/io/jsonl.py, parquet.py, warc.py and text.py (streams in
transforms/io/streams.py, records in transforms/io/documents.py).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.metrics import Metrics

from schemas.config import ReadConfig, SourceConfig
from schemas.records import Document
from transforms.io.chat import make_chat_document
from transforms.io.documents import FileRange, RecordBuilder, Rejected, Tally, make_document
from transforms.io.jsonl import read_jsonl
from transforms.io.parquet import read_parquet
from transforms.io.streams import COMPRESSED
from transforms.io.text import read_text
from transforms.io.warc import read_warc
from transforms.logs import stage_logger
from transforms.report.counts import CountKey, count_key

DEAD_LETTER = "dead_letter"
SEEN = "seen"
NAMESPACE = "tropemix.read"
_LOG = stage_logger("read")


def file_ranges(path: str, size: int, fmt: str, split_bytes: int) -> list[FileRange]:
    """The ranges a file is read in: ``split_bytes`` pieces for plain JSONL, else the whole file.

    Args:
      path: the file.
      size: its size in bytes.
      fmt: the source format.
      split_bytes: target range size.
    """
    if fmt not in ("jsonl", "chat") or path.endswith(COMPRESSED) or size <= split_bytes:
        return [FileRange(path, 0, -1)]
    return [FileRange(path, start, min(start + split_bytes, size)) for start in range(0, size, split_bytes)]


def read_range(
    source: SourceConfig, read_cfg: ReadConfig, rng: FileRange, tally: Tally
) -> Iterator[Document | Rejected]:
    """Documents and rejected records of one file range; ``tally.seen`` counts the records seen.

    Args:
      source: the source config.
      read_cfg: limits.
      rng: the range to read.
      tally: incremented once per record seen.
    """
    fmt = source.format
    build = RecordBuilder(source, read_cfg, tally, make_chat_document if fmt == "chat" else make_document)
    if "://" not in rng.path and os.path.isdir(rng.path):
        # A glob that matches a directory: one record seen, nothing readable in it.
        tally.seen += 1
        return iter([build.reject("not_a_file", rng.path, 0, "a directory; the glob should name files", b"")])
    if fmt in ("jsonl", "chat"):
        return read_jsonl(build, rng)
    if fmt == "parquet":
        return read_parquet(build, rng.path)
    if fmt in ("warc", "wet"):
        return read_warc(build, rng.path, fmt)
    return read_text(build, rng.path)


class _ReadRangeFn(beam.DoFn):
    """Reads file ranges of one source into documents, dead letters and per-range seen counts."""

    def __init__(self, source: SourceConfig, read_cfg: ReadConfig) -> None:
        self._source = source
        self._read = read_cfg
        name = source.name
        self._docs = Metrics.counter(NAMESPACE, f"docs.{name}")
        self._format_docs = Metrics.counter(NAMESPACE, f"format.{source.format}")
        self._dead = Metrics.counter(NAMESPACE, f"dead_letters.{name}")
        self._truncated = Metrics.counter(NAMESPACE, "truncated")
        self._source_truncated = Metrics.counter(NAMESPACE, f"truncated.{name}")
        self._ranges = Metrics.counter(NAMESPACE, f"ranges.{name}")
        self._chars = Metrics.distribution(NAMESPACE, "doc_chars")
        self._source_chars = Metrics.distribution(NAMESPACE, f"doc_chars.{name}")

    def process(self, rng: FileRange) -> Iterator[Any]:
        self._ranges.inc()
        tally = Tally()
        docs = dead = 0
        for item in read_range(self._source, self._read, FileRange(*rng), tally):
            if isinstance(item, Rejected):
                dead += 1
                self._dead.inc()
                Metrics.counter(NAMESPACE, f"bad_input.{item.reason}").inc()
                yield beam.pvalue.TaggedOutput(DEAD_LETTER, item.record)
            else:
                docs += 1
                self._count(item)
                yield item
        # One line per range, never per record: a web-scale input has millions of records.
        log = _LOG.warning if dead else _LOG.info
        log("range read", source=self._source.name, path=rng[0], docs=docs, dead_letters=dead)
        yield beam.pvalue.TaggedOutput(SEEN, (rng[0], tally.seen))

    def _count(self, doc: Document) -> None:
        self._docs.inc()
        if "truncated_from" in doc:
            self._truncated.inc()
            self._source_truncated.inc()
        self._format_docs.inc()
        chars = len(doc["text"])
        self._chars.update(chars)
        self._source_chars.update(chars)


def file_balance(source: str, path: str, grouped: dict[str, Iterable[int]]) -> Iterator[tuple[CountKey, int]]:
    """Counter pairs for one file: seen records, files, and any imbalance.

    Args:
      source: source name.
      path: the file.
      grouped: ``seen``, ``docs`` and ``dead`` counts from the ranges and the outputs.
    """
    seen = sum(grouped["seen"])
    out = sum(grouped["docs"]) + sum(grouped["dead"])
    yield count_key("read_seen", source), seen
    yield count_key("read_files", source), 1
    if seen != out:
        yield count_key("read_file_mismatch", source, path), seen - out


class ReadResult(NamedTuple):
    """What ``ReadSource`` returns.

    Attributes:
      kept: the documents.
      dead_letter: records that could not become documents (``DeadLetter``).
      counts: ``(key, n)`` pairs for the conservation check.
    """

    kept: beam.PCollection
    dead_letter: beam.PCollection
    counts: beam.PCollection


class ReadSource(beam.PTransform):
    """Reads every file of one source.

    Returns a ``ReadResult``: ``kept`` (documents), ``dead_letter`` (records that
    could not be parsed) and ``counts``, ``(key, n)`` pairs for the conservation
    check: records seen per source (``read_seen|<source>``), files read
    (``read_files|<source>``) and, for any file whose records seen differ from its
    documents plus dead letters, ``read_file_mismatch|<source>|<path>``.

    Args:
      source: the source config.
      read_cfg: limits and the split size.
    """

    def __init__(self, source: SourceConfig, read_cfg: ReadConfig) -> None:
        super().__init__()
        self._source = source
        self._read = read_cfg

    def expand(self, pbegin: beam.pvalue.PBegin) -> ReadResult:
        fmt = self._source.format
        split = self._read.split_bytes
        name = self._source.name
        parsed = (
            pbegin
            | "Patterns" >> beam.Create(sorted(self._source.inputs))
            | "Match" >> fileio.MatchAll()
            | "Ranges" >> beam.FlatMap(lambda m: file_ranges(m.path, m.size_in_bytes, fmt, split))
            # Spread ranges over workers before the expensive parse.
            | "SpreadRanges" >> beam.Reshuffle()
            | "Parse"
            >> beam.ParDo(_ReadRangeFn(self._source, self._read)).with_outputs(DEAD_LETTER, SEEN, main="docs")
        )
        docs, dead = parsed.docs, parsed[DEAD_LETTER]
        per_file = {
            "seen": parsed[SEEN] | "SeenPerFile" >> beam.CombinePerKey(sum),
            "docs": docs
            | "DocFile" >> beam.Map(lambda d: (d["src_path"], 1))
            | "DocsPerFile" >> beam.CombinePerKey(sum),
            "dead": dead
            | "DeadFile" >> beam.Map(lambda d: (d["path"], 1))
            | "DeadPerFile" >> beam.CombinePerKey(sum),
        }
        counts = (
            per_file
            | "JoinPerFile" >> beam.CoGroupByKey()
            | "FileBalance" >> beam.FlatMap(lambda kv: file_balance(name, kv[0], kv[1]))
        )
        return ReadResult(docs, dead, counts)
