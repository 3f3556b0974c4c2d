"""Records of a read: documents, rejected records, file ranges, and the per-source builder.

Every record a reader sees ends up either as a document or as a ``Rejected`` record
(a dead letter with its counter reason).  ``RecordBuilder`` is what the per-format
readers (transforms/io/jsonl.py, parquet.py, warc.py, text.py) share: it turns a
parsed record into a document or a dead letter and counts each record seen in a
``Tally``, so ``ReadSource`` can check that records seen = documents + dead letters.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

from schemas.config import ReadConfig, SourceConfig
from schemas.records import RAW_LIMIT_BYTES, DeadLetter, Document


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


def _checked_text(obj: Any, source: SourceConfig) -> str:
    """The record's text field, or ``BadRecord`` saying why there is none."""
    if not isinstance(obj, dict):
        raise BadRecord("not_an_object", f"record is a JSON {type(obj).__name__}, not an object")
    field = source.fields.text
    text = obj.get(field)
    if text is None:
        raise BadRecord("missing_text", f"field {field!r} is missing or null")
    if not isinstance(text, str):
        raise BadRecord("wrong_type", f"field {field!r} is a {type(text).__name__}, not a string")
    if not text.strip():
        raise BadRecord("empty_text", f"field {field!r} is empty")
    return text


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
    text = _checked_text(obj, source)
    fields = source.fields
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


# ``make_document``, or a format's own builder on top of it (transforms/io/chat.py).
MakeDocument = Callable[[Any, SourceConfig, ReadConfig, str, int, str | None], Document]


class RecordBuilder:
    """Turns one source's records into documents or ``Rejected`` records and counts those seen.

    Args:
      source: the source config.
      read_cfg: limits.
      tally: incremented once per record seen.
      make: builds a document from a parsed record or raises ``BadRecord``.
    """

    def __init__(
        self, source: SourceConfig, read_cfg: ReadConfig, tally: Tally, make: MakeDocument = make_document
    ) -> None:
        self.source = source
        self.read_cfg = read_cfg
        self.tally = tally
        self._make = make

    def reject(self, reason: str, path: str, offset: int, error: str, raw: bytes | str) -> Rejected:
        """A dead letter whose error starts with its counter ``reason``."""
        return Rejected(reason, dead_letter(self.source.name, path, offset, f"{reason}: {error}", raw))

    def document(
        self, obj: Any, path: str, offset: int, raw: bytes | str, derived_id: str | None = None
    ) -> Document | Rejected:
        """The document of a parsed record, or its dead letter carrying ``raw``."""
        try:
            return self._make(obj, self.source, self.read_cfg, path, offset, derived_id)
        except BadRecord as err:
            return self.reject(err.reason, path, offset, str(err), raw)
        except RecursionError:
            return self.reject(
                "too_deep", path, offset, "metadata nested deeper than the recursion limit", raw
            )
        except MemoryError:
            return self.reject("out_of_memory", path, offset, "building this document ran out of memory", raw)

    def broken(self, path: str, offset: int, err: Exception, reason: str = "truncated_stream") -> Rejected:
        """The damaged rest of a file, from ``offset`` on."""
        # The rest of the file counts as one record: it was seen and it is dead-lettered.
        self.tally.seen += 1
        return self.reject(reason, path, offset, f"{type(err).__name__}: {err}", b"")

    def empty(self, path: str, what: str = "records") -> Rejected:
        """A file that holds no records."""
        self.tally.seen += 1
        return self.reject("empty_file", path, 0, f"file holds no {what}", b"")

    def junk(self, path: str, junk: list[list[int]]) -> Iterator[Rejected]:
        """One dead letter per run of skipped bytes between compressed members (``junk_of``)."""
        # Each run is one record seen and one dead letter, so the file balances.
        for at, n in junk:
            self.tally.seen += 1
            message = f"{n} bytes that start no compressed member were skipped; later members were read"
            yield self.reject("junk_bytes", path, at, message, b"")
