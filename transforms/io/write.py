"""Deterministic, atomic writers for shards, ledger files and dead letters.

``WriteSortedFiles`` writes keyed rows to numbered files, each sorted;
``WriteHashedFiles`` spreads rows over them by a stable hash of their id (ledgers,
the standalone stages' outputs); ``WriteDeadLetters`` writes the one dead-letter file.
Each output file is built by one worker from its sorted rows, so the bytes depend
only on the rows, never on bundling.  Files are written under a temporary name in
the target directory and renamed into place, so no partial file is ever visible
under a final name, locally or on ``gs://``.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import itertools
import json
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from operator import itemgetter
from typing import Any, BinaryIO, Protocol

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
import zstandard
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from schemas.records import LEDGER_SCHEMA, SHARD_SCHEMA
from transforms.blocks import ListsPerKey
from transforms.logs import stage_logger
from transforms.text import stable_hash

NAMESPACE = "tropemix.write"


class Sink(Protocol):
    """Where an encoder streams a file's bytes: a binary file, ``io.BytesIO``, ``atomic_file``."""

    def write(self, data: bytes, /) -> int: ...


# What ``WriteSortedFiles`` encodes with: rows in final order -> the file's bytes, streamed to a sink.
Encoder = Callable[[Iterable[dict[str, Any]], Sink], None]
# Rows (up to whole documents) a writer buffers per bundle before it flushes its lists.
MAX_BUFFERED_ROWS = 4096
_LOG = stage_logger("write")


def shard_name(prefix: str, index: int, count: int, suffix: str) -> str:
    """``prefix-00003-of-00016.suffix``."""
    return f"{prefix}-{index:05d}-of-{count:05d}.{suffix}"


class _HashingSink(io.RawIOBase):
    """A binary sink that counts and hashes what passes through to ``raw``."""

    def __init__(self, raw: BinaryIO) -> None:
        super().__init__()
        self._raw = raw
        self.sha256 = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self._raw.write(data)
        self.sha256.update(data)
        self.size += len(data)
        return len(data)

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        self._raw.flush()


@contextlib.contextmanager
def atomic_file(path: str) -> Iterator[_HashingSink]:
    """A sink streaming to a temporary sibling of ``path``, renamed into place on success.

    Yields the sink; its ``size`` and ``sha256`` describe the finished file.

    Args:
      path: final local or ``gs://`` path.
    """
    directory, name = path.rsplit("/", 1)
    if not FileSystems.exists(directory):
        # Another worker may create it first; the rename below fails loudly if it is missing.
        with contextlib.suppress(OSError):
            FileSystems.mkdirs(directory)
    tmp = f"{directory}/.tmp-{uuid.uuid4().hex}-{name}"
    with FileSystems.create(tmp) as f:
        sink = _HashingSink(f)
        yield sink
    # Rename replaces a file left by an earlier attempt of a retried bundle (same bytes).
    FileSystems.rename([tmp], [path])


def write_atomically(path: str, data: bytes) -> None:
    """Writes ``data`` to a temporary sibling of ``path`` and renames it into place.

    Args:
      path: final local or ``gs://`` path.
      data: the complete file content.
    """
    with atomic_file(path) as sink:
        sink.write(data)


def score_list(scores: Mapping[str, float]) -> list[dict[str, Any]]:
    """Label scores as ``TROPE_SCORES_TYPE`` rows, sorted by label."""
    return [{"label": label, "score": score} for label, score in sorted(scores.items())]


def shard_row(doc: Mapping[str, Any]) -> dict[str, Any]:
    """A document copy as a row of ``SHARD_SCHEMA``."""
    return {
        "id": doc["id"],
        "source": doc["source"],
        "role": doc.get("role", ""),
        "text": doc["text"],
        "narrative": doc.get("narrative", "none"),
        "tropes": list(doc.get("tropes", [])),
        "trope_scores": score_list(doc.get("trope_scores", {})),
        "cluster_id": doc.get("cluster_id", doc["id"]),
        "cluster_size": int(doc.get("cluster_size", 1)),
        "epoch": int(doc.get("epoch", 0)),
        "meta": json.dumps(doc.get("meta", {}), sort_keys=True, ensure_ascii=False, default=str),
        "lang": doc.get("lang"),
        "lang_score": doc.get("lang_score"),
        "messages": doc.get("messages"),
    }


def write_parquet(
    rows: Iterable[Mapping[str, Any]], sink: Sink, schema: pa.Schema, row_group_size: int
) -> None:
    """Streams ``rows`` into Parquet with zstd compression, one row group in memory at a time.

    The bytes equal ``pq.write_table`` of all the rows at once with the same row group
    size (``tests/test_write.py`` checks it), so streaming changed no file.  Measured on a
    Dask worker at 100k documents (deploy/dask/README.md): encoding a whole shard at once
    held its rows, an Arrow table and the file's bytes together, the largest task there.

    Args:
      rows: rows already in schema order and in final order.
      sink: binary file object.
      schema: the explicit Arrow schema.
      row_group_size: rows per row group.
    """
    rows = iter(rows)
    with pq.ParquetWriter(sink, schema, compression="zstd", write_statistics=True) as writer:
        chunks = 0
        while chunk := list(itertools.islice(rows, row_group_size)):
            writer.write_table(pa.Table.from_pylist(chunk, schema=schema), row_group_size=row_group_size)
            chunks += 1
        if not chunks:
            # ``write_table`` of an empty table writes one empty row group; so does this.
            writer.write_table(schema.empty_table(), row_group_size=row_group_size)


def encode_parquet(rows: Sequence[Mapping[str, Any]], schema: pa.Schema, row_group_size: int) -> bytes:
    """Parquet bytes of ``rows`` (``write_parquet``); identical rows give identical bytes."""
    sink = io.BytesIO()
    write_parquet(rows, sink, schema, row_group_size)
    return sink.getvalue()


def write_jsonl(rows: Iterable[Mapping[str, Any]], sink: Sink) -> None:
    """One sorted-key JSON object per line, UTF-8, streamed."""
    for r in rows:
        sink.write(json.dumps(r, sort_keys=True, ensure_ascii=False).encode("utf-8") + b"\n")


def encode_jsonl(rows: Iterable[Mapping[str, Any]]) -> bytes:
    """``write_jsonl`` as bytes."""
    sink = io.BytesIO()
    write_jsonl(rows, sink)
    return sink.getvalue()


def write_jsonl_zst(rows: Iterable[Mapping[str, Any]], sink: Sink) -> None:
    """``encode_jsonl`` compressed as one zstd frame; single-threaded, so the bytes are reproducible.

    Not streamed: a one-shot frame records its content size in the header, which a
    streaming frame would not, so streaming would change every existing file.
    """
    sink.write(zstandard.ZstdCompressor(level=3, write_checksum=True).compress(encode_jsonl(rows)))


def shard_json_row(doc: Mapping[str, Any]) -> dict[str, Any]:
    """A document copy as a JSON line with the columns of ``SHARD_SCHEMA``; ``meta`` stays an object."""
    row = shard_row(doc)
    return {
        **row,
        "trope_scores": dict(sorted(doc.get("trope_scores", {}).items())),
        "meta": doc.get("meta", {}),
    }


def shard_format(fmt: str, row_group_size: int) -> tuple[str, Encoder, Callable[[Any], dict[str, Any]]]:
    """File suffix, encoder and row function of the configured shard format.

    Args:
      fmt: ``parquet`` or ``jsonl.zst`` (``output.format``).
      row_group_size: Parquet rows per row group.
    """
    if fmt == "jsonl.zst":
        return "jsonl.zst", write_jsonl_zst, shard_json_row
    return "parquet", parquet_encoder(SHARD_SCHEMA, row_group_size), shard_row


class _WriteFileFn(beam.DoFn):
    def __init__(
        self,
        directory: str,
        prefix: str,
        count: int,
        suffix: str,
        encode: Encoder,
        sort_key: Callable[[Any], Any],
        to_row: Callable[[Any], dict[str, Any]],
        describe: Callable[[list[Any]], dict[str, Any]],
    ) -> None:
        self._dir = directory.rstrip("/")
        self._prefix = prefix
        self._count = count
        self._suffix = suffix
        self._encode = encode
        self._sort_key = sort_key
        self._to_row = to_row
        self._describe = describe

    def process(self, item: tuple[int, dict[str, Any]], count: int | None = None) -> Iterator[dict[str, Any]]:
        index, grouped = item
        elements = sorted((e for batch in grouped["rows"] for e in batch), key=self._sort_key)
        total = self._count if count is None else count
        path = f"{self._dir}/{shard_name(self._prefix, index, total, self._suffix)}"
        # Rows are made as the encoder consumes them, so a shard's rows never exist all at once.
        with atomic_file(path) as sink:
            self._encode((self._to_row(e) for e in elements), sink)
        Metrics.counter(NAMESPACE, f"files.{self._prefix}").inc()
        Metrics.counter(NAMESPACE, f"rows.{self._prefix}").inc(len(elements))
        Metrics.counter(NAMESPACE, f"bytes.{self._prefix}").inc(sink.size)
        _LOG.info("file written", path=path, rows=len(elements), bytes=sink.size)
        yield {
            "shard": index,
            "path": path,
            "rows": len(elements),
            "bytes": sink.size,
            "sha256": sink.sha256.hexdigest(),
            **self._describe(elements),
        }


class WriteSortedFiles(beam.PTransform):
    """Writes ``(file index, element)`` pairs to ``count`` files, each sorted.

    Every index in ``range(count)`` gets a file, empty or not, so a reader can rely
    on ``-of-NNNNN`` naming.  Outputs one stats dict per file (path, rows, bytes,
    sha256 plus whatever ``describe`` adds).

    Args:
      directory: output directory (local or ``gs://``).
      prefix: file name prefix.
      count: number of files, or a one-element PCollection holding it (when a plan decides it).
      suffix: file extension.
      encode: (rows, binary sink) -> None; streams the file's bytes (``Encoder``).
      sort_key: order of elements inside a file.
      to_row: element -> row.
      describe: sorted elements -> extra stats.
    """

    def __init__(
        self,
        directory: str,
        prefix: str,
        count: int | beam.PCollection,
        suffix: str,
        encode: Encoder,
        sort_key: Callable[[Any], Any],
        to_row: Callable[[Any], dict[str, Any]] = dict,
        describe: Callable[[list[Any]], dict[str, Any]] = lambda rows: {},
    ) -> None:
        super().__init__()
        fixed = count if isinstance(count, int) else 0
        self._fn = _WriteFileFn(directory, prefix, fixed, suffix, encode, sort_key, to_row, describe)
        self._count = count

    def expand(self, keyed: beam.PCollection) -> beam.PCollection:
        # One shuffled element per file and bundle, not per row (transforms/blocks.py).
        lists = keyed | "RowLists" >> ListsPerKey(itemgetter(0), itemgetter(1), MAX_BUFFERED_ROWS)
        if isinstance(self._count, int):
            indices = keyed.pipeline | "Indices" >> beam.Create([(i, None) for i in range(self._count)])
            return (
                {"rows": lists, "index": indices}
                | "GroupByFile" >> beam.CoGroupByKey()
                | "WriteFile" >> beam.ParDo(self._fn)
            )
        indices = self._count | "Indices" >> beam.FlatMap(lambda n: [(i, None) for i in range(n)])
        return (
            {"rows": lists, "index": indices}
            | "GroupByFile" >> beam.CoGroupByKey()
            | "WriteFile" >> beam.ParDo(self._fn, count=beam.pvalue.AsSingleton(self._count))
        )


class WriteHashedFiles(beam.PTransform):
    """Writes rows to ``count`` files by ``stable_hash(prefix, row["id"]) % count``, each sorted.

    A row's file depends on its id alone, so a reader can find a document's rows
    without a scan and the files do not change with bundling.  Outputs one stats
    dict per file, as ``WriteSortedFiles``.

    Args:
      directory: output directory (local or ``gs://``).
      prefix: file name prefix, also the hash salt.
      count: number of files.
      encode: (rows, binary sink) -> None; streams the file's bytes (``Encoder``).
      sort_key: order of rows inside a file.
      to_row: element -> row.
      suffix: file extension.
    """

    def __init__(
        self,
        directory: str,
        prefix: str,
        count: int,
        encode: Encoder,
        sort_key: Callable[[Any], Any],
        to_row: Callable[[Any], dict[str, Any]] = dict,
        suffix: str = "parquet",
    ) -> None:
        super().__init__()
        self._write = WriteSortedFiles(directory, prefix, count, suffix, encode, sort_key, to_row)
        self._prefix = prefix
        self._count = count

    def expand(self, rows: beam.PCollection) -> beam.PCollection:
        prefix, count = self._prefix, self._count
        return (
            rows
            | "HashToFile" >> beam.Map(lambda r: (stable_hash(prefix, r["id"]) % count, r))
            | "WriteFiles" >> self._write
        )


class WriteDeadLetters(beam.PTransform):
    """Writes all dead letters to one JSONL file, ``dead_letter-00000-of-00001.jsonl``, sorted by origin.

    Outputs the file's stats dict.

    Args:
      directory: output directory (local or ``gs://``).
      wait_for: a one-element PCollection (a blend plan) the write waits for, so a
        run that fails before it exists leaves no dead-letter file; ``None`` to write at once.
    """

    def __init__(self, directory: str, wait_for: beam.PCollection | None = None) -> None:
        super().__init__()
        self._directory = directory
        self._wait_for = wait_for

    def expand(self, dead: beam.PCollection) -> beam.PCollection:
        if self._wait_for is None:
            keyed = dead | "OneFile" >> beam.Map(lambda r: (0, r))
        else:
            keyed = dead | "OneFile" >> beam.Map(lambda r, _: (0, r), beam.pvalue.AsSingleton(self._wait_for))
        return keyed | "WriteFile" >> WriteSortedFiles(
            self._directory,
            "dead_letter",
            1,
            "jsonl",
            write_jsonl,
            sort_key=lambda r: (r["source"], r["path"], r["offset"]),
        )


def describe_shard(docs: list[Mapping[str, Any]]) -> dict[str, Any]:
    """Per-shard counts and blend units by source, narrative and trope label, and first copies, for the manifest."""
    by_source: dict[str, int] = {}
    by_narrative: dict[str, int] = {}
    by_trope: dict[str, int] = {}
    units_by_source: dict[str, int] = {}
    units_by_narrative: dict[str, int] = {}
    first_copies: dict[str, int] = {}
    for d in docs:
        source, narrative, units = d["source"], d.get("narrative", "none"), int(d.get("units", 1))
        by_source[source] = by_source.get(source, 0) + 1
        by_narrative[narrative] = by_narrative.get(narrative, 0) + 1
        for label in d.get("tropes", []):
            by_trope[label] = by_trope.get(label, 0) + 1
        units_by_source[source] = units_by_source.get(source, 0) + units
        units_by_narrative[narrative] = units_by_narrative.get(narrative, 0) + units
        if d.get("epoch", 0) == 0:
            first_copies[source] = first_copies.get(source, 0) + 1
    return {
        "by_source": by_source,
        "by_narrative": by_narrative,
        "by_trope": by_trope,
        "units_by_source": units_by_source,
        "units_by_narrative": units_by_narrative,
        "first_copies_by_source": first_copies,
    }


def parquet_encoder(schema: pa.Schema, row_group_size: int) -> Encoder:
    """An ``encode`` function for ``WriteSortedFiles`` streaming Parquet with ``schema``."""

    def encode(rows: Iterable[dict[str, Any]], sink: Sink) -> None:
        write_parquet(rows, sink, schema, row_group_size)

    return encode


def ledger_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """A ledger dict in ``LEDGER_SCHEMA`` order."""
    return {name: row[name] for name in LEDGER_SCHEMA.names}
