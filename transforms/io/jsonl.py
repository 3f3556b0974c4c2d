"""JSONL and chat JSONL (plain, .gz, .zst): one record per line, in byte ranges.

Plain JSONL is split into ``read.split_bytes`` ranges (transforms/io/source.py); a
range owns the lines that start inside it.  A UTF-8 byte-order mark at the start of
a file is dropped.  Any per-record failure (bad UTF-8 or JSON, nesting past the
recursion limit, a record that exhausts memory) is a dead letter with its reason.
Derived ids are ``<file>@<byte offset>``, the offset in the decompressed stream, so
plain and compressed copies agree, independent of how the file was split.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import IO

from schemas.records import RAW_LIMIT_BYTES, Document
from transforms.io.documents import FileRange, RecordBuilder, Rejected
from transforms.io.streams import CHUNK, DAMAGE_ERRORS, junk_of, open_stream

# A UTF-8 byte-order mark some editors put at the start of a file; not part of the first record.
_BOM = b"\xef\xbb\xbf"


def _skip_line(stream: IO[bytes]) -> int:
    """Consumes the rest of the current line in bounded chunks; returns the bytes consumed."""
    n = 0
    while True:
        chunk = stream.readline(CHUNK)
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


def read_jsonl(build: RecordBuilder, rng: FileRange) -> Iterator[Document | Rejected]:
    """Documents and dead letters of the lines that start in ``rng``.

    Args:
      build: the source's record builder; counts each non-blank line seen.
      rng: the range to read.
    """
    path = rng.path
    pos = rng.start
    tally = build.tally
    seen = tally.seen
    max_line = build.read_cfg.max_line_bytes
    junk: list[list[int]] = []
    try:
        with open_stream(path) as stream:
            junk = junk_of(stream)
            for offset, line, complete in jsonl_lines(stream, rng.start, rng.stop, max_line):
                pos = offset + len(line)
                if complete and not line.strip():
                    continue
                tally.seen += 1
                if not complete:
                    yield build.reject(
                        "line_too_long", path, offset, f"over read.max_line_bytes={max_line}", line
                    )
                    continue
                yield _record(
                    build, line[len(_BOM) :] if offset == 0 and line.startswith(_BOM) else line, path, offset
                )
    except DAMAGE_ERRORS as err:
        # Everything before ``pos`` was kept; the damaged rest is one dead letter.
        yield from build.junk(path, junk)
        yield build.broken(path, pos, err)
        return
    yield from build.junk(path, junk)
    if rng.stop < 0 and tally.seen == seen:
        yield build.empty(path)


def _record(build: RecordBuilder, line: bytes, path: str, offset: int) -> Document | Rejected:
    try:
        # Strict decoding: json.loads(bytes) would let encoded surrogates through.
        obj = json.loads(line.decode("utf-8"))
    except UnicodeDecodeError as err:
        return build.reject("bad_utf8", path, offset, str(err), line)
    except json.JSONDecodeError as err:
        return build.reject("bad_json", path, offset, str(err), line)
    except RecursionError:
        return build.reject(
            "too_deep", path, offset, "JSON nested deeper than the parser's recursion limit", line
        )
    except MemoryError:
        return build.reject("out_of_memory", path, offset, "parsing this record ran out of memory", line)
    return build.document(obj, path, offset, line)
