"""Readers: JSONL (plain, .gz, .zst), Parquet and one-document-per-file text.

Every record a reader sees ends up either as a document on the main output or as a
dead letter on the ``dead_letter`` output, with its path, offset and the error.
File-level damage (an empty file, a truncated stream, a corrupt Parquet footer)
is a dead letter too, so nothing disappears without a trace.

Compressed files are read by one worker each, streaming, through Python's own
``gzip`` and ``zstandard`` readers: unlike a silent EOF, they raise on a truncated
stream, which is what lets the damage be reported.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import zlib
from collections.abc import Iterator
from typing import IO, Any

import apache_beam as beam
import pyarrow.parquet as pq
from apache_beam.io import fileio
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from schemas.config import ReadConfig, SourceConfig
from schemas.records import RAW_LIMIT_BYTES, DeadLetter, Document
from transforms.logs import stage_logger
from transforms.progress import ProgressTicker

DEAD_LETTER = "dead_letter"
NAMESPACE = "tropemix.read"
_LOG = stage_logger("read")


class BadRecord(ValueError):
    """A record that cannot become a document; ``reason`` is a short counter name."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _raw_text(raw: bytes | str) -> str:
    if isinstance(raw, str):
        raw = raw.encode("utf-8", errors="surrogatepass")
    return raw[:RAW_LIMIT_BYTES].decode("utf-8", errors="backslashreplace")


def dead_letter(
    source: str, path: str, offset: int, error: str, raw: bytes | str, stage: str = "read"
) -> DeadLetter:
    """Builds a dead-letter record.

    Args:
      source: source name.
      path: file the record came from.
      offset: 1-based line, row or record number; 0 for the file as a whole.
      error: what went wrong.
      raw: the raw record, cut at 64 KB.
      stage: the stage that rejected it.
    """
    return DeadLetter(source=source, path=path, offset=offset, stage=stage, error=error, raw=_raw_text(raw))


def truncate_utf8(text: str, max_bytes: int) -> str:
    """Cuts ``text`` to at most ``max_bytes`` UTF-8 bytes without splitting a character."""
    return text.encode("utf-8")[:max_bytes].decode("utf-8", errors="ignore")


def make_document(
    obj: Any,
    source: SourceConfig,
    read_cfg: ReadConfig,
    path: str,
    offset: int,
) -> Document:
    """Turns one parsed record into a document, or raises ``BadRecord``.

    Ids are ``<source>/<input id>``; without an input id they derive from the file
    name and record position, never from content, so identical texts in two places
    stay two records until dedup decides.

    Args:
      obj: the parsed record.
      source: the source config (field names, role).
      read_cfg: size limits.
      path: file path, for derived ids and provenance.
      offset: 1-based record position in the file.
    """
    if not isinstance(obj, dict):
        raise BadRecord("not_an_object", f"record is a JSON {type(obj).__name__}, not an object")
    fields = source.fields
    text = obj.get(fields.text)
    if text is None:
        raise BadRecord("missing_text", f"field {fields.text!r} is missing or null")
    if not isinstance(text, str):
        raise BadRecord("wrong_type", f"field {fields.text!r} is a {type(text).__name__}, not a string")
    if not text.strip():
        raise BadRecord("empty_text", f"field {fields.text!r} is empty")
    if len(text) * 4 > read_cfg.max_doc_bytes and len(text.encode("utf-8")) > read_cfg.max_doc_bytes:
        if read_cfg.oversize == "dead_letter":
            raise BadRecord("oversize", f"text is over read.max_doc_bytes={read_cfg.max_doc_bytes}")
        text = truncate_utf8(text, read_cfg.max_doc_bytes)
    raw_id = obj.get(fields.id)
    if isinstance(raw_id, bool) or not isinstance(raw_id, (str, int)) or raw_id == "":
        raw_id = f"{os.path.basename(path)}#{offset}"
    meta = {k: obj[k] for k in fields.metadata if k in obj}
    return Document(
        id=f"{source.name}/{raw_id}",
        source=source.name,
        role=source.role.value,
        text=text,
        meta=meta,
        src_path=path,
        src_offset=offset,
    )


def _open_stream(path: str) -> IO[bytes]:
    raw = FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)
    if path.endswith(".gz"):
        return io.BufferedReader(gzip.GzipFile(fileobj=raw, mode="rb"))
    if path.endswith(".zst"):
        import zstandard

        return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True))
    return raw


class _ParseFilesFn(beam.DoFn):
    """Parses whole files of one source into documents and dead letters."""

    def __init__(self, source: SourceConfig, read_cfg: ReadConfig, progress_dir: str | None = None) -> None:
        self._source = source
        self._read = read_cfg
        name = source.name
        self._docs = Metrics.counter(NAMESPACE, f"docs.{name}")
        self._format_docs = Metrics.counter(NAMESPACE, f"format.{source.format}")
        self._dead = Metrics.counter(NAMESPACE, f"dead_letters.{name}")
        self._files = Metrics.counter(NAMESPACE, f"files.{name}")
        self._chars = Metrics.distribution(NAMESPACE, "doc_chars")
        self._source_chars = Metrics.distribution(NAMESPACE, f"doc_chars.{name}")
        self._progress = ProgressTicker(progress_dir, "read") if progress_dir else None

    def _bad(
        self, reason: str, path: str, offset: int, error: str, raw: bytes | str
    ) -> beam.pvalue.TaggedOutput:
        self._dead.inc()
        Metrics.counter(NAMESPACE, f"bad_input.{reason}").inc()
        _LOG.debug("dead letter", path=path, offset=offset, reason=reason)
        if self._progress:
            self._progress.tick()
        return beam.pvalue.TaggedOutput(
            DEAD_LETTER, dead_letter(self._source.name, path, offset, f"{reason}: {error}", raw)
        )

    def _good(self, doc: Document) -> Document:
        self._docs.inc()
        self._format_docs.inc()
        chars = len(doc["text"])
        self._chars.update(chars)
        self._source_chars.update(chars)
        if self._progress:
            self._progress.tick()
        return doc

    def finish_bundle(self) -> None:
        if self._progress:
            self._progress.flush()

    def process(self, path: str) -> Iterator[Any]:
        self._files.inc()
        fmt = self._source.format
        if fmt == "jsonl":
            parsed = self._jsonl(path)
        elif fmt == "parquet":
            parsed = self._parquet(path)
        else:
            parsed = self._text(path)
        docs = dead = 0
        for out in parsed:
            if isinstance(out, beam.pvalue.TaggedOutput):
                dead += 1
            else:
                docs += 1
            yield out
        # One line per file, never per record: a web-scale input has millions of records.
        log = _LOG.warning if dead else _LOG.info
        log("file read", source=self._source.name, path=path, format=fmt, docs=docs, dead_letters=dead)

    def _jsonl(self, path: str) -> Iterator[Any]:
        line_no = 0
        records = 0
        try:
            with _open_stream(path) as stream:
                for line_no, line in enumerate(stream, start=1):
                    if not line.strip():
                        continue
                    records += 1
                    try:
                        text = line.decode("utf-8")
                    except UnicodeDecodeError as err:
                        yield self._bad("bad_utf8", path, line_no, str(err), line)
                        continue
                    try:
                        obj = json.loads(text)
                    except json.JSONDecodeError as err:
                        yield self._bad("bad_json", path, line_no, str(err), line)
                        continue
                    try:
                        yield self._good(make_document(obj, self._source, self._read, path, line_no))
                    except BadRecord as err:
                        yield self._bad(err.reason, path, line_no, str(err), line)
        except (EOFError, zlib.error, OSError, ValueError) as err:
            # The stream broke after ``line_no`` lines; everything before was kept.
            yield self._bad("truncated_stream", path, line_no + 1, f"{type(err).__name__}: {err}", b"")
            return
        if records == 0:
            yield self._bad("empty_file", path, 0, "file holds no records", b"")

    def _parquet(self, path: str) -> Iterator[Any]:
        fields = self._source.fields
        row = 0
        try:
            with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
                pf = pq.ParquetFile(f)
                names = set(pf.schema_arrow.names)
                wanted = [c for c in dict.fromkeys([fields.id, fields.text, *fields.metadata]) if c in names]
                if fields.text not in names:
                    yield self._bad("missing_text", path, 0, f"no column {fields.text!r}", b"")
                    return
                for batch in pf.iter_batches(columns=wanted, batch_size=4096):
                    for obj in batch.to_pylist():
                        row += 1
                        try:
                            yield self._good(make_document(obj, self._source, self._read, path, row))
                        except BadRecord as err:
                            yield self._bad(err.reason, path, row, str(err), json.dumps(obj, default=str))
        except (OSError, ValueError) as err:
            yield self._bad("corrupt_parquet", path, row + 1, f"{type(err).__name__}: {err}", b"")
            return
        if row == 0:
            yield self._bad("empty_file", path, 0, "file holds no rows", b"")

    def _text(self, path: str) -> Iterator[Any]:
        try:
            with _open_stream(path) as stream:
                data = stream.read()
        except (EOFError, zlib.error, OSError, ValueError) as err:
            yield self._bad("truncated_stream", path, 1, f"{type(err).__name__}: {err}", b"")
            return
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as err:
            yield self._bad("bad_utf8", path, 1, str(err), data)
            return
        name = os.path.basename(path)
        obj = {self._source.fields.text: text, self._source.fields.id: name}
        try:
            yield self._good(make_document(obj, self._source, self._read, path, 1))
        except BadRecord as err:
            yield self._bad(err.reason, path, 1, str(err), data)


class ReadSource(beam.PTransform):
    """Reads every file of one source.

    Returns a ``DoOutputsTuple`` whose main output holds documents and whose
    ``dead_letter`` output holds records that could not be parsed.

    Args:
      source: the source config.
      read_cfg: size limits.
      progress_dir: local directory where workers leave running document counts
        for the terminal progress line (``transforms/progress.py``); None for none.
    """

    def __init__(self, source: SourceConfig, read_cfg: ReadConfig, progress_dir: str | None = None) -> None:
        super().__init__()
        self._source = source
        self._read = read_cfg
        self._progress_dir = progress_dir

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.pvalue.DoOutputsTuple:
        return (
            pbegin
            | "Patterns" >> beam.Create(sorted(self._source.inputs))
            | "Match" >> fileio.MatchAll()
            | "Paths" >> beam.Map(lambda m: m.path)
            # Spread files over workers before the expensive parse.
            | "SpreadFiles" >> beam.Reshuffle()
            | "Parse"
            >> beam.ParDo(_ParseFilesFn(self._source, self._read, self._progress_dir)).with_outputs(
                DEAD_LETTER, main="docs"
            )
        )
