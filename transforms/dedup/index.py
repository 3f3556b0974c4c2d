"""The dedup index: survivors' hashes kept for later runs, and read back as earlier survivors.

A run's survivors leave their exact hash and band hashes as index rows
(``DEDUP_INDEX_SCHEMA``, ``WriteDedupIndex``).  A later run reads them back
(``EarlierSurvivors``) as nodes of generation ``EARLIER``, which sort before every
document of the run, so a document that collides with an earlier survivor is
dropped and names it.  ``check_index`` refuses files of an unfinished run or of
other hashing parameters before any of that happens.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import apache_beam as beam
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from schemas.config import DedupConfig
from schemas.records import DEDUP_INDEX_SCHEMA
from transforms.dedup.keys import earlier_node, index_fingerprint
from transforms.io.publication import require_complete
from transforms.io.write import WriteSortedFiles, parquet_encoder
from transforms.text import stable_hash

# Index rows with this band hold the exact hash instead of an LSH bucket.
EXACT_BAND = -1


def check_index(patterns: Sequence[str], cfg: DedupConfig) -> None:
    """Fails unless every earlier index file is in a finished run and has this config's hashing parameters.

    Args:
      patterns: ``dedup.previous_index`` globs.
      cfg: this run's dedup config.
    """
    require_complete(patterns)
    want = index_fingerprint(cfg)
    for pattern in patterns:
        matched = FileSystems.match([pattern])[0].metadata_list
        if not matched:
            raise ValueError(f"dedup.previous_index: {pattern!r} matches no file; fix the glob")
        for meta in matched:
            with FileSystems.open(meta.path) as f:
                have = (pq.read_schema(f).metadata or {}).get(b"dedup_params", b"").decode()
            if have != want:
                raise ValueError(
                    f"dedup.previous_index: {meta.path} was written with {have or 'unknown parameters'}, "
                    f"this run uses {want}; use the same ngram, num_perm, seed, bits and threshold"
                )


class ReadDedupIndex(beam.PTransform):
    """Earlier runs' index rows (``DEDUP_INDEX_SCHEMA``) from Parquet globs.

    Args:
      patterns: file globs, local or ``gs://``.
    """

    def __init__(self, patterns: Sequence[str]) -> None:
        super().__init__()
        self._patterns = list(patterns)

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.PCollection:
        return (
            pbegin
            | "Patterns" >> beam.Create(self._patterns)
            | "ReadIndex" >> beam.io.ReadAllFromParquet(columns=["id", "band", "bucket"])
        )


class EarlierNodes(NamedTuple):
    """What ``EarlierSurvivors`` outputs.

    Attributes:
      exact: ``(exact hash, (node, None))``, members of this run's exact groups.
      bands: ``((band, bucket), node)``, members of this run's LSH buckets.
    """

    exact: beam.PCollection
    bands: beam.PCollection


class EarlierSurvivors(beam.PTransform):
    """Earlier runs' survivors as exact-group and bucket members of generation ``EARLIER``.

    Checks the files first (``check_index``), while the pipeline is built.

    Args:
      patterns: ``dedup.previous_index`` globs.
      cfg: this run's dedup config.
    """

    def __init__(self, patterns: Sequence[str], cfg: DedupConfig) -> None:
        super().__init__()
        self._patterns = list(patterns)
        self._cfg = cfg

    def expand(self, pbegin: beam.pvalue.PBegin) -> EarlierNodes:
        check_index(self._patterns, self._cfg)
        rows = pbegin | "ReadDedupIndex" >> ReadDedupIndex(self._patterns)
        exact = (
            rows
            | "EarlierExact" >> beam.Filter(lambda r: r["band"] == EXACT_BAND)
            | "EarlierExactNode" >> beam.Map(lambda r: (r["bucket"], (earlier_node(r["id"]), None)))
        )
        bands = (
            rows
            | "EarlierBands" >> beam.Filter(lambda r: r["band"] != EXACT_BAND)
            | "EarlierBandNode" >> beam.Map(lambda r: ((r["band"], r["bucket"]), earlier_node(r["id"])))
        )
        return EarlierNodes(exact, bands)


def index_rows(entry: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The index rows (``DEDUP_INDEX_SCHEMA``) of one survivor: its exact hash as band -1, then its bands.

    Args:
      entry: ``{"id", "exact", "bands"}``, from ``DedupResult.index_entries``.
    """
    doc_id = entry["id"]
    return [{"id": doc_id, "band": EXACT_BAND, "bucket": entry["exact"]}] + [
        {"id": doc_id, "band": band, "bucket": bucket} for band, bucket in enumerate(entry["bands"])
    ]


class WriteDedupIndex(beam.PTransform):
    """Writes survivors' index rows to ``directory`` as sorted Parquet files for later runs.

    Survivors travel as one entry each (``index_rows`` expands it while encoding),
    not as one element per band: ten times fewer elements to shuffle.  The files'
    schema metadata holds ``index_fingerprint(cfg)``, which ``check_index`` compares
    before a later run uses them.  The writer's stats and counters count survivors.

    Args:
      directory: usually ``<output>/dedup_index``.
      cfg: this run's dedup config.
    """

    def __init__(self, directory: str, cfg: DedupConfig) -> None:
        super().__init__()
        self._directory = directory
        self._cfg = cfg

    def expand(self, entries: beam.PCollection) -> beam.PCollection:
        shards = self._cfg.index_shards
        schema = DEDUP_INDEX_SCHEMA.with_metadata(
            {**(DEDUP_INDEX_SCHEMA.metadata or {}), b"dedup_params": index_fingerprint(self._cfg).encode()}
        )
        encode_rows = parquet_encoder(schema, 100_000)
        return (
            entries
            | "IndexFile" >> beam.Map(lambda e: (stable_hash("dedup_index", e["id"]) % shards, e))
            | "WriteIndex"
            >> WriteSortedFiles(
                self._directory,
                "index",
                shards,
                "parquet",
                lambda sorted_entries, sink: encode_rows(
                    (row for e in sorted_entries for row in index_rows(e)), sink
                ),
                # Rows come out ordered by (id, band), as readers expect.
                sort_key=lambda e: (e["id"], e["exact"], e["bands"]),
            )
        )
