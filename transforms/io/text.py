"""Text files (plain text, markdown): one document per file, its id the file name."""

from __future__ import annotations

import os
from collections.abc import Iterator

from schemas.records import Document
from transforms.io.documents import RecordBuilder, Rejected
from transforms.io.streams import DAMAGE_ERRORS, open_stream


def read_text(build: RecordBuilder, path: str) -> Iterator[Document | Rejected]:
    """The document of one text file, or its dead letter (too large, bad UTF-8, damaged).

    Args:
      build: the source's record builder; counts the file as one record seen.
      path: the file (``.gz`` and ``.zst`` are decompressed).
    """
    limit = build.read_cfg.max_line_bytes
    try:
        with open_stream(path) as stream:
            data = stream.read(limit + 1)
    except DAMAGE_ERRORS as err:
        yield build.broken(path, 0, err)
        return
    build.tally.seen += 1
    if len(data) > limit:
        yield build.reject("file_too_large", path, 0, f"over read.max_line_bytes={limit}", data)
        return
    try:
        text = data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as err:
        yield build.reject("bad_utf8", path, 0, str(err), data)
        return
    fields = build.source.fields
    obj = {fields.text: text, fields.id: os.path.basename(path)}
    yield build.document(obj, path, 0, data)
