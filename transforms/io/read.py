"""Readers: JSONL and chat JSONL (plain, .gz, .zst), Parquet, WARC, WET and one-document-per-file text.

Every record a reader sees ends up either as a document on the main output or as a
dead letter on the ``dead_letter`` output, with its path, offset, stage and error.
File-level damage (an empty file, a truncated stream, a corrupt Parquet footer, a
clipped WARC) is a dead letter too, so nothing disappears without a trace.  Each
read range also reports how many records it saw, and ``ReadSource`` checks per file
that records seen = documents + dead letters.

Reading follows Beam's own ``ReadAllFromText``: match the globs, expand each file
into byte ranges, ``Reshuffle`` the ranges over workers, read each range.  Plain
JSONL is split into ``read.split_bytes`` ranges (a range owns the lines that start
inside it); compressed files, Parquet, WARC, WET and text files are one range each,
read streaming by one worker.  Compressed streams go through ``_StreamReader``
rather than Beam's ``CompressedFile``: it raises on a truncated stream where Beam's
reader reports a silent EOF, and it hands out every complete record before the damage.
Bytes between members that start no gzip member or zstd frame are skipped up to the
next magic number and reported as one ``junk_bytes`` dead letter per run (with the
byte count), so members after junk are still read.  A UTF-8 byte-order mark at the
start of a file is dropped.  Any per-record failure (bad UTF-8 or JSON, nesting past
the recursion limit, a record that exhausts memory) is a dead letter with its reason;
for Parquet the footer's row count is checked against the rows read.

Derived ids (when a record has no id) come from the file name and the record's
position, never from its content: ``<file>@<byte offset>`` for JSONL (offset in
the decompressed stream, so plain and compressed copies agree, and independent of
how the file was split), WARC and WET; ``<file>#<row>`` for Parquet; ``<file>`` for
text files.
"""

from __future__ import annotations

import io
import json
import os
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import IO, Any, NamedTuple, Protocol

import apache_beam as beam
import pyarrow.parquet as pq
import zstandard
from apache_beam.io import fileio
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from schemas.config import ReadConfig, SourceConfig
from schemas.records import RAW_LIMIT_BYTES, DeadLetter, Document
from transforms.logs import stage_logger
from transforms.progress import ProgressTicker
from transforms.report.counts import CountKey, count_key

DEAD_LETTER = "dead_letter"
SEEN = "seen"
NAMESPACE = "tropemix.read"
_LOG = stage_logger("read")
_COMPRESSED = (".gz", ".zst")
# A UTF-8 byte-order mark some editors put at the start of a file; not part of the first record.
_BOM = b"\xef\xbb\xbf"
_CHUNK = 1 << 20
# Small compressed reads: a corrupt block loses at most what this much input decodes to.
_COMPRESSED_CHUNK = 1 << 16
# Errors that mean the bytes are damaged.  Plain I/O errors (OSError) are not among
# them: a failed read of a good file must fail the bundle so the runner retries it,
# not dead-letter the rest of the file.  pyarrow reports some damage as OSError.
_DAMAGE_ERRORS: tuple[type[Exception], ...] = (EOFError, ValueError, zlib.error, zstandard.ZstdError)
_PARQUET_ERRORS: tuple[type[Exception], ...] = (*_DAMAGE_ERRORS, OSError)


class BadRecord(ValueError):
    """A record that cannot become a document; ``reason`` is a short counter name."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Rejected:
    """A record or file part that went to the dead letters, with its counter ``reason``."""

    reason: str
    record: DeadLetter


class FileRange(NamedTuple):
    """A part of a file that one worker reads: bytes ``[start, stop)``; ``stop`` -1 means to the end."""

    path: str
    start: int
    stop: int


class Tally:
    """Records seen while reading a range, counted where the bytes are read, before parsing."""

    def __init__(self) -> None:
        self.seen = 0


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
      offset: byte offset (JSONL, WARC, WET) or 1-based row (Parquet); 0 for the file as a whole.
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
    derived_id: str | None = None,
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
      offset: the record's byte offset or row in the file.
      derived_id: id to use when the record has none; ``<file>@<offset>`` by default.
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
    truncated_from = None
    if len(text) * 4 > read_cfg.max_doc_bytes and len(text.encode("utf-8")) > read_cfg.max_doc_bytes:
        if read_cfg.oversize == "dead_letter":
            raise BadRecord("oversize", f"text is over read.max_doc_bytes={read_cfg.max_doc_bytes}")
        truncated_from = len(text.encode("utf-8"))
        text = truncate_utf8(text, read_cfg.max_doc_bytes)
    raw_id = obj.get(fields.id)
    if isinstance(raw_id, bool) or not isinstance(raw_id, (str, int)) or raw_id == "":
        raw_id = derived_id or f"{os.path.basename(path)}@{offset}"
    meta = {k: obj[k] for k in fields.metadata if k in obj}
    try:
        # A JSON escape such as "\\ud800" decodes to a lone surrogate, which no UTF-8 writer accepts.
        text.encode("utf-8")
        json.dumps([raw_id, meta], ensure_ascii=False, default=str).encode("utf-8")
    except UnicodeEncodeError as err:
        raise BadRecord("bad_utf8", f"lone surrogate in the record: {err}") from None
    doc = Document(
        id=f"{source.name}/{raw_id}",
        source=source.name,
        role=source.role.value,
        text=text,
        meta=meta,
        src_path=path,
        src_offset=offset,
    )
    if truncated_from is not None:
        # The ledger row of the document names its original length (accounting.truncation_note).
        doc["truncated_from"] = truncated_from
    return doc


class _Decompressor(Protocol):
    eof: bool
    unused_data: bytes

    def decompress(self, data: bytes) -> bytes: ...


class _StreamReader(io.RawIOBase):
    """Decompresses a gzip or zstd stream member by member; raises ``EOFError`` if it ends inside one.

    Each read hands out what the compressed bytes read so far decode to, so a reader
    keeps every record before the damage.  Python's ``GzipFile`` behind a buffer can
    drop the last good chunk when it raises, and ``zstandard``'s ``stream_reader``
    reports a cut frame as a silent EOF; this reader does neither.

    Args:
      raw: the compressed byte stream.
      new_member: returns a fresh decompressor for the next gzip member or zstd frame.
    """

    def __init__(self, raw: IO[bytes], new_member: Callable[[], _Decompressor], magic: bytes) -> None:
        super().__init__()
        self._raw = raw
        self._new_member = new_member
        self._magic = magic
        self._member = new_member()
        self._in_member = False
        self._buf = b""
        self._pos = 0
        self._offset = 0
        self._done = False
        self._carry = b""
        self._error: Exception | None = None
        # Bytes between members that start no member: [decompressed offset, byte count] per run.
        self.junk: list[list[int]] = []

    def _note_junk(self, n: int, at: int) -> None:
        if self.junk and self.junk[-1][0] == at:
            self.junk[-1][1] += n
        elif n:
            self.junk.append([at, n])

    def _to_member_start(self, data: bytes, at: int, last: bool) -> bytes:
        """``data`` from the next member's magic bytes on; what precedes them is junk."""
        i = data.find(self._magic)
        if i < 0:
            # The magic may straddle two reads: keep its possible beginning for the next one.
            keep = 0 if last else len(self._magic) - 1
            self._note_junk(len(data) - keep, at)
            self._carry = data[len(data) - keep :] if keep else b""
            return b""
        self._note_junk(i, at)
        return data[i:]

    def readable(self) -> bool:
        return True

    def _fill(self) -> None:
        while self._pos >= len(self._buf) and not self._done:
            if self._error is not None:
                raise self._error
            fresh = self._raw.read(_COMPRESSED_CHUNK)
            data, self._carry = self._carry + fresh, b""
            if not data:
                if self._in_member:
                    raise EOFError("compressed stream ended inside a member or frame")
                self._done = True
                return
            out: list[bytes] = []
            try:
                self._decode(data, out, last=not fresh)
            except _DAMAGE_ERRORS as err:
                # Hand out what decoded before the damage first; raise on the next read.
                self._error = err
            self._buf, self._pos = b"".join(out), 0

    def _decode(self, data: bytes, out: list[bytes], last: bool) -> None:
        while data:
            if not self._in_member:
                data = self._to_member_start(data, self._offset + sum(map(len, out)), last)
                if not data:
                    return
                try:
                    out.append(self._member.decompress(data))
                except _DAMAGE_ERRORS:
                    # Magic bytes inside junk, not a member: skip one byte and look again.
                    self._member = self._new_member()
                    self._note_junk(1, self._offset + sum(map(len, out)))
                    data = data[1:]
                    continue
            else:
                out.append(self._member.decompress(data))
            self._in_member = True
            if self._member.eof:
                data = self._member.unused_data
                self._member = self._new_member()
                self._in_member = False
            else:
                data = b""

    def readinto(self, buffer: Any) -> int:
        self._fill()
        n = min(len(buffer), len(self._buf) - self._pos)
        buffer[:n] = self._buf[self._pos : self._pos + n]
        self._pos += n
        self._offset += n
        return n

    def seekable(self) -> bool:
        # Forward only, which is what FastWARC needs to skip record bodies.
        return True

    def tell(self) -> int:
        return self._offset

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        target = offset + (self._offset if whence == io.SEEK_CUR else 0)
        if whence == io.SEEK_END or target < self._offset:
            raise io.UnsupportedOperation("a compressed stream only seeks forward")
        while self._offset < target:
            skipped = self.read(min(target - self._offset, _CHUNK))
            if not skipped:
                break
        return self._offset

    def close(self) -> None:
        self._raw.close()
        super().close()


# gzip: ID1 ID2 and CM=8 (deflate); zstd: the frame magic number.
_GZIP_MAGIC = b"\x1f\x8b\x08"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def _gzip_member() -> _Decompressor:
    # wbits=31: gzip header and trailer, CRC and length checked at the end of each member.
    return zlib.decompressobj(wbits=31)  # type: ignore[return-value]


def _zstd_frame() -> _Decompressor:
    return zstandard.ZstdDecompressor().decompressobj()  # type: ignore[return-value]


def open_stream(path: str) -> IO[bytes]:
    """Opens ``path`` (local or ``gs://``) for streaming, decompressing ``.gz`` and ``.zst``.

    Args:
      path: the file.
    """
    raw = FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)
    if path.endswith(".gz"):
        return io.BufferedReader(_StreamReader(raw, _gzip_member, _GZIP_MAGIC), buffer_size=_CHUNK)
    if path.endswith(".zst"):
        return io.BufferedReader(_StreamReader(raw, _zstd_frame, _ZSTD_MAGIC), buffer_size=_CHUNK)
    return raw


def junk_of(stream: IO[bytes]) -> list[list[int]]:
    """``[decompressed offset, bytes]`` of the junk a compressed stream skipped between members."""
    raw = getattr(stream, "raw", None)
    return raw.junk if isinstance(raw, _StreamReader) else []


def file_ranges(path: str, size: int, fmt: str, split_bytes: int) -> list[FileRange]:
    """The ranges a file is read in: ``split_bytes`` pieces for plain JSONL, else the whole file.

    Args:
      path: the file.
      size: its size in bytes.
      fmt: the source format.
      split_bytes: target range size.
    """
    if fmt not in ("jsonl", "chat") or path.endswith(_COMPRESSED) or size <= split_bytes:
        return [FileRange(path, 0, -1)]
    return [FileRange(path, start, min(start + split_bytes, size)) for start in range(0, size, split_bytes)]


def _skip_line(stream: IO[bytes]) -> int:
    """Consumes the rest of the current line in bounded chunks; returns the bytes consumed."""
    n = 0
    while True:
        chunk = stream.readline(_CHUNK)
        n += len(chunk)
        if not chunk or chunk.endswith(b"\n"):
            return n


def jsonl_lines(stream: IO[bytes], start: int, stop: int, max_line: int) -> Iterator[tuple[int, bytes, bool]]:
    """``(byte offset, line, complete)`` for each line that starts in ``[start, stop)``.

    A range that does not start at 0 skips the line it starts inside: that line
    belongs to the range in which it starts, which reads past its own end to finish it.
    A line longer than ``max_line`` is returned cut, with ``complete`` false, and the
    rest is skipped without being held in memory.

    Args:
      stream: the opened (decompressed) file; seekable when ``start`` > 0.
      start: first byte of the range.
      stop: end of the range, -1 for the end of the stream.
      max_line: longest line returned whole.
    """
    pos = start
    if start > 0:
        stream.seek(start - 1)
        pos = start - 1 + _skip_line(stream)
    while stop < 0 or pos < stop:
        line = stream.readline(max_line + 1)
        if not line:
            return
        offset = pos
        pos += len(line)
        if len(line) > max_line and not line.endswith(b"\n"):
            pos += _skip_line(stream)
            yield offset, line[:RAW_LIMIT_BYTES], False
        else:
            yield offset, line, True


class _Reader:
    """Reads one range of one source's file into documents and ``Rejected`` records."""

    def __init__(self, source: SourceConfig, read_cfg: ReadConfig, tally: Tally) -> None:
        self._source = source
        self._read = read_cfg
        self._tally = tally

    def reject(self, reason: str, path: str, offset: int, error: str, raw: bytes | str) -> Rejected:
        return Rejected(reason, dead_letter(self._source.name, path, offset, f"{reason}: {error}", raw))

    def document(
        self, obj: Any, path: str, offset: int, raw: bytes | str, derived_id: str | None = None
    ) -> Document | Rejected:
        try:
            if self._source.format == "chat":
                # chat builds on make_document, so it is imported here, not at the top (a cycle).
                from transforms.io.chat import make_chat_document

                return make_chat_document(obj, self._source, self._read, path, offset, derived_id)
            return make_document(obj, self._source, self._read, path, offset, derived_id)
        except BadRecord as err:
            return self.reject(err.reason, path, offset, str(err), raw)
        except RecursionError:
            return self.reject(
                "too_deep", path, offset, "metadata nested deeper than the recursion limit", raw
            )
        except MemoryError:
            return self.reject("out_of_memory", path, offset, "building this document ran out of memory", raw)

    def read(self, rng: FileRange) -> Iterator[Document | Rejected]:
        fmt = self._source.format
        if "://" not in rng.path and os.path.isdir(rng.path):
            # A glob that matches a directory: one record seen, nothing readable in it.
            self._tally.seen += 1
            yield self.reject("not_a_file", rng.path, 0, "a directory; the glob should name files", b"")
        elif fmt in ("jsonl", "chat"):
            yield from self._jsonl(rng)
        elif fmt == "parquet":
            yield from self._parquet(rng.path)
        elif fmt in ("warc", "wet"):
            yield from self._warc(rng.path, fmt)
        else:
            yield from self._text(rng.path)

    def _broken(self, path: str, offset: int, err: Exception, reason: str = "truncated_stream") -> Rejected:
        # The rest of the file counts as one record: it was seen and it is dead-lettered.
        self._tally.seen += 1
        return self.reject(reason, path, offset, f"{type(err).__name__}: {err}", b"")

    def _empty(self, path: str, what: str = "records") -> Rejected:
        self._tally.seen += 1
        return self.reject("empty_file", path, 0, f"file holds no {what}", b"")

    def _jsonl(self, rng: FileRange) -> Iterator[Document | Rejected]:
        path = rng.path
        pos = rng.start
        seen = self._tally.seen
        junk: list[list[int]] = []
        try:
            with open_stream(path) as stream:
                junk = junk_of(stream)
                for offset, line, complete in jsonl_lines(
                    stream, rng.start, rng.stop, self._read.max_line_bytes
                ):
                    pos = offset + len(line)
                    if complete and not line.strip():
                        continue
                    self._tally.seen += 1
                    if not complete:
                        limit = f"over read.max_line_bytes={self._read.max_line_bytes}"
                        yield self.reject("line_too_long", path, offset, limit, line)
                        continue
                    yield self._jsonl_record(
                        line[len(_BOM) :] if offset == 0 and line.startswith(_BOM) else line, path, offset
                    )
        except _DAMAGE_ERRORS as err:
            # Everything before ``pos`` was kept; the damaged rest is one dead letter.
            yield from self._junk(path, junk)
            yield self._broken(path, pos, err)
            return
        yield from self._junk(path, junk)
        if rng.stop < 0 and self._tally.seen == seen:
            yield self._empty(path)

    def _jsonl_record(self, line: bytes, path: str, offset: int) -> Document | Rejected:
        try:
            # Strict decoding: json.loads(bytes) would let encoded surrogates through.
            obj = json.loads(line.decode("utf-8"))
        except UnicodeDecodeError as err:
            return self.reject("bad_utf8", path, offset, str(err), line)
        except json.JSONDecodeError as err:
            return self.reject("bad_json", path, offset, str(err), line)
        except RecursionError:
            return self.reject(
                "too_deep", path, offset, "JSON nested deeper than the parser's recursion limit", line
            )
        except MemoryError:
            return self.reject("out_of_memory", path, offset, "parsing this record ran out of memory", line)
        return self.document(obj, path, offset, line)

    def _junk(self, path: str, junk: list[list[int]]) -> Iterator[Rejected]:
        # Each run of skipped bytes is one record seen and one dead letter, so the file balances.
        for at, n in junk:
            self._tally.seen += 1
            message = f"{n} bytes that start no compressed member were skipped; later members were read"
            yield self.reject("junk_bytes", path, at, message, b"")

    def _parquet(self, path: str) -> Iterator[Document | Rejected]:
        fields = self._source.fields
        row = 0
        try:
            with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
                pf = pq.ParquetFile(f)
                names = set(pf.schema_arrow.names)
                if fields.text not in names:
                    # The file is one unusable record; its row count goes into the error.
                    self._tally.seen += 1
                    yield self.reject(
                        "missing_text",
                        path,
                        0,
                        f"no column {fields.text!r} in {pf.metadata.num_rows} rows",
                        b"",
                    )
                    return
                # Column projection: only the id, text and metadata columns are decoded.
                wanted = [c for c in dict.fromkeys([fields.id, fields.text, *fields.metadata]) if c in names]
                for batch in pf.iter_batches(columns=wanted, batch_size=4096):
                    for obj in batch.to_pylist():
                        row += 1
                        self._tally.seen += 1
                        yield self.document(
                            obj, path, row, json.dumps(obj, default=str), f"{os.path.basename(path)}#{row}"
                        )
                footer_rows = pf.metadata.num_rows
        except _PARQUET_ERRORS as err:
            yield self._broken(path, row + 1, err, "corrupt_parquet")
            return
        if row != footer_rows:
            # The footer is an independent count: rows it lists that the batches did not yield.
            self._tally.seen += 1
            message = f"the footer lists {footer_rows} rows but {row} were read"
            yield self.reject("row_count_mismatch", path, row + 1, message, b"")
        if row == 0:
            yield self._empty(path)

    def _text(self, path: str) -> Iterator[Document | Rejected]:
        limit = self._read.max_line_bytes
        try:
            with open_stream(path) as stream:
                data = stream.read(limit + 1)
        except _DAMAGE_ERRORS as err:
            yield self._broken(path, 0, err)
            return
        self._tally.seen += 1
        if len(data) > limit:
            yield self.reject("file_too_large", path, 0, f"over read.max_line_bytes={limit}", data)
            return
        try:
            text = data.decode("utf-8").removeprefix("\ufeff")
        except UnicodeDecodeError as err:
            yield self.reject("bad_utf8", path, 0, str(err), data)
            return
        name = os.path.basename(path)
        obj = {self._source.fields.text: text, self._source.fields.id: name}
        yield self.document(obj, path, 0, data)

    def _warc(self, path: str, fmt: str) -> Iterator[Document | Rejected]:
        from fastwarc.warc import ArchiveIterator, WarcRecordType

        wanted = WarcRecordType.response if fmt == "warc" else WarcRecordType.conversion
        seen = self._tally.seen
        pos = 0
        try:
            with open_stream(path) as stream:
                for record in ArchiveIterator(stream, record_types=wanted, parse_http=fmt == "warc"):
                    pos = record.stream_pos
                    # A body cut by the damage belongs to the dead-lettered rest, so count after reading.
                    body = record.reader.read()
                    self._tally.seen += 1
                    yield self._warc_document(record, body, path, fmt)
        except _DAMAGE_ERRORS as err:
            yield self._broken(path, pos, err)
            return
        if self._tally.seen == seen:
            yield self._empty(path, "WARC response records" if fmt == "warc" else "WET conversion records")

    def _warc_document(self, record: Any, body: bytes, path: str, fmt: str) -> Document | Rejected:
        offset = record.stream_pos
        headers = record.headers
        if fmt == "warc":
            content_type = (record.http_headers.get("Content-Type") or "") if record.http_headers else ""
            if content_type and "html" not in content_type.lower():
                return self.reject("not_html", path, offset, f"Content-Type {content_type!r}", body)
            text = html_to_text(body)
        else:
            try:
                text = body.decode("utf-8")
            except UnicodeDecodeError as err:
                return self.reject("bad_utf8", path, offset, str(err), body)
        fields = self._source.fields
        record_id = (headers.get("WARC-Record-ID") or "").strip("<>")
        obj = {
            fields.text: text,
            fields.id: record_id,
            # Some WARC/1.0 writers put the URI in angle brackets.
            "url": (headers.get("WARC-Target-URI") or "").strip("<>"),
            "warc_record_id": record_id,
            "warc_date": headers.get("WARC-Date") or "",
        }
        return self.document(obj, path, offset, body)


def html_to_text(html: bytes) -> str:
    """Main text of an HTML page with resiliparse: encoding detection, then boilerplate removal.

    Args:
      html: the HTTP body.
    """
    from resiliparse.extract.html2text import extract_plain_text
    from resiliparse.parse.encoding import bytes_to_str, detect_encoding

    return str(extract_plain_text(bytes_to_str(html, detect_encoding(html) or "utf-8"), main_content=True))


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
    return _Reader(source, read_cfg, tally).read(rng)


class _ReadRangeFn(beam.DoFn):
    """Reads file ranges of one source into documents, dead letters and per-range seen counts."""

    def __init__(self, source: SourceConfig, read_cfg: ReadConfig, progress_dir: str | None = None) -> None:
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
        self._progress = ProgressTicker(progress_dir, "read") if progress_dir else None

    def finish_bundle(self) -> None:
        if self._progress:
            self._progress.flush()

    def process(self, rng: FileRange) -> Iterator[Any]:
        self._ranges.inc()
        tally = Tally()
        docs = dead = 0
        for item in read_range(self._source, self._read, FileRange(*rng), tally):
            if self._progress:
                self._progress.tick()
            if isinstance(item, Rejected):
                dead += 1
                self._dead.inc()
                Metrics.counter(NAMESPACE, f"bad_input.{item.reason}").inc()
                yield beam.pvalue.TaggedOutput(DEAD_LETTER, item.record)
            else:
                docs += 1
                self._docs.inc()
                if "truncated_from" in item:
                    self._truncated.inc()
                    self._source_truncated.inc()
                self._format_docs.inc()
                chars = len(item["text"])
                self._chars.update(chars)
                self._source_chars.update(chars)
                yield item
        # One line per range, never per record: a web-scale input has millions of records.
        log = _LOG.warning if dead else _LOG.info
        log("range read", source=self._source.name, path=rng[0], docs=docs, dead_letters=dead)
        yield beam.pvalue.TaggedOutput(SEEN, (rng[0], tally.seen))


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
    """What ``ReadSource`` returns."""

    docs: beam.PCollection
    dead_letter: beam.PCollection
    counts: beam.PCollection


class ReadSource(beam.PTransform):
    """Reads every file of one source.

    Returns a ``ReadResult``: ``docs`` (documents), ``dead_letter`` (records that
    could not be parsed) and ``counts``, ``(key, n)`` pairs for the conservation
    check: records seen per source (``read_seen|<source>``), files read
    (``read_files|<source>``) and, for any file whose records seen differ from its
    documents plus dead letters, ``read_file_mismatch|<source>|<path>``.

    Args:
      source: the source config.
      read_cfg: limits and the split size.
      progress_dir: local directory for the terminal progress line of local runs.
    """

    def __init__(self, source: SourceConfig, read_cfg: ReadConfig, progress_dir: str | None = None) -> None:
        super().__init__()
        self._source = source
        self._read = read_cfg
        self._progress_dir = progress_dir

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
            >> beam.ParDo(_ReadRangeFn(self._source, self._read, self._progress_dir)).with_outputs(
                DEAD_LETTER, SEEN, main="docs"
            )
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
