"""WARC (HTML responses, boiled down to their main text) and WET (conversion records) with FastWARC.

A file is one range, read streaming; a clipped archive is one ``truncated_stream``
dead letter after every record before it.  Derived ids come from ``WARC-Record-ID``
or else ``<file>@<byte offset>``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from schemas.records import Document
from transforms.io.documents import RecordBuilder, Rejected
from transforms.io.streams import DAMAGE_ERRORS, open_stream


def html_to_text(html: bytes) -> str:
    """Main text of an HTML page with resiliparse: encoding detection, then boilerplate removal.

    Args:
      html: the HTTP body.
    """
    from resiliparse.extract.html2text import extract_plain_text
    from resiliparse.parse.encoding import bytes_to_str, detect_encoding

    return str(extract_plain_text(bytes_to_str(html, detect_encoding(html) or "utf-8"), main_content=True))


def read_warc(build: RecordBuilder, path: str, fmt: str) -> Iterator[Document | Rejected]:
    """Documents and dead letters of the response (``warc``) or conversion (``wet``) records of a file.

    Args:
      build: the source's record builder; counts each record of the wanted type.
      path: the file.
      fmt: ``warc`` or ``wet``.
    """
    from fastwarc.warc import ArchiveIterator, WarcRecordType

    wanted = WarcRecordType.response if fmt == "warc" else WarcRecordType.conversion
    tally = build.tally
    seen = tally.seen
    pos = 0
    try:
        with open_stream(path) as stream:
            for record in ArchiveIterator(stream, record_types=wanted, parse_http=fmt == "warc"):
                pos = record.stream_pos
                # A body cut by the damage belongs to the dead-lettered rest, so count after reading.
                body = record.reader.read()
                tally.seen += 1
                yield _document(build, record, body, path, fmt)
    except DAMAGE_ERRORS as err:
        yield build.broken(path, pos, err)
        return
    if tally.seen == seen:
        yield build.empty(path, "WARC response records" if fmt == "warc" else "WET conversion records")


def _document(build: RecordBuilder, record: Any, body: bytes, path: str, fmt: str) -> Document | Rejected:
    offset = record.stream_pos
    headers = record.headers
    if fmt == "warc":
        content_type = (record.http_headers.get("Content-Type") or "") if record.http_headers else ""
        if content_type and "html" not in content_type.lower():
            return build.reject("not_html", path, offset, f"Content-Type {content_type!r}", body)
        text = html_to_text(body)
    else:
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as err:
            return build.reject("bad_utf8", path, offset, str(err), body)
    fields = build.source.fields
    record_id = (headers.get("WARC-Record-ID") or "").strip("<>")
    obj = {
        fields.text: text,
        fields.id: record_id,
        # Some WARC/1.0 writers put the URI in angle brackets.
        "url": (headers.get("WARC-Target-URI") or "").strip("<>"),
        "warc_record_id": record_id,
        "warc_date": headers.get("WARC-Date") or "",
    }
    return build.document(obj, path, offset, body)
