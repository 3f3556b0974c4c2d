"""Parquet: one record per row, only the id, text and metadata columns decoded.

A file is one range, read batch by batch.  A corrupt file is one ``corrupt_parquet``
dead letter after every row before the damage, and the footer's row count is
checked against the rows read.  Derived ids are ``<file>#<row>`` (1-based).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import pyarrow.parquet as pq
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from schemas.records import Document
from transforms.io.documents import RecordBuilder, Rejected
from transforms.io.streams import DAMAGE_ERRORS

# pyarrow reports some damage as OSError.
_PARQUET_ERRORS: tuple[type[Exception], ...] = (*DAMAGE_ERRORS, OSError)


def read_parquet(build: RecordBuilder, path: str) -> Iterator[Document | Rejected]:
    """Documents and dead letters of every row of one Parquet file.

    Args:
      build: the source's record builder; counts each row seen.
      path: the file.
    """
    fields = build.source.fields
    tally = build.tally
    row = 0
    try:
        with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
            pf = pq.ParquetFile(f)
            names = set(pf.schema_arrow.names)
            if fields.text not in names:
                # The file is one unusable record; its row count goes into the error.
                tally.seen += 1
                message = f"no column {fields.text!r} in {pf.metadata.num_rows} rows"
                yield build.reject("missing_text", path, 0, message, b"")
                return
            # Column projection: only the id, text and metadata columns are decoded.
            wanted = [c for c in dict.fromkeys([fields.id, fields.text, *fields.metadata]) if c in names]
            for batch in pf.iter_batches(columns=wanted, batch_size=4096):
                for obj in batch.to_pylist():
                    row += 1
                    tally.seen += 1
                    yield build.document(
                        obj, path, row, json.dumps(obj, default=str), f"{os.path.basename(path)}#{row}"
                    )
            footer_rows = pf.metadata.num_rows
    except _PARQUET_ERRORS as err:
        yield build.broken(path, row + 1, err, "corrupt_parquet")
        return
    if row != footer_rows:
        # The footer is an independent count: rows it lists that the batches did not yield.
        tally.seen += 1
        message = f"the footer lists {footer_rows} rows but {row} were read"
        yield build.reject("row_count_mismatch", path, row + 1, message, b"")
    if row == 0:
        yield build.empty(path)
