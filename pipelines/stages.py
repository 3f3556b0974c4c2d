"""Single stages as their own jobs: ``tropemix classify`` and ``tropemix dedup``.

Both read JSONL (optionally .gz/.zst) or Parquet, and write Parquet plus dead letters::

    tropemix classify --model models/tropes-v1.ftz --input 'data/*.jsonl.gz' --output out/cls
    tropemix dedup --input 'data/*.jsonl.gz' --output out/dd --threshold 0.8

Beam options follow the stage's own flags, as for ``tropemix run``, e.g.
``--runner=DataflowRunner --project=P --region=R --temp_location=gs://B/tmp`` or
``--runner=FlinkRunner --flink_master=localhost:8081``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import apache_beam as beam

from pipelines.runner import pipeline_options, raise_unwrapped
from schemas.config import ClassifierConfig, DedupConfig, FieldMapping, ReadConfig, SourceConfig
from schemas.records import CLASSIFY_SCHEMA, DEDUP_LEDGER_SCHEMA, SHARD_SCHEMA
from transforms.blocks import ComponentsNotConverged
from transforms.classify.documents import ClassifyDocuments
from transforms.dedup.deduplicate import DedupDocuments
from transforms.dedup.index import WriteDedupIndex
from transforms.io.publication import prepare_output, publish
from transforms.io.source import ReadSource
from transforms.io.write import WriteDeadLetters, WriteHashedFiles, parquet_encoder, score_list, shard_row
from transforms.report.conservation import JoinIntegrityError

# Parquet rows per row group of the stages' outputs.
_ROW_GROUP = 10_000


def input_format(pattern: str) -> Literal["jsonl", "parquet", "warc", "wet"]:
    """The reader for a ``--input`` glob, from its extension; JSONL unless it names another format."""
    stem = pattern.rstrip("*")
    for ext in (".gz", ".zst"):
        stem = stem.removesuffix(ext)
    if stem.endswith(".parquet"):
        return "parquet"
    if stem.endswith(".wet"):
        return "wet"
    if stem.endswith(".warc"):
        return "warc"
    return "jsonl"


def input_source(pattern: str, id_field: str, text_field: str, name: str = "input") -> SourceConfig:
    """A source config for a stage's ``--input`` glob, in the format ``input_format`` picks."""
    fmt = input_format(pattern)
    return SourceConfig(
        name=name, inputs=[pattern], format=fmt, fields=FieldMapping(id=id_field, text=text_field)
    )


def classify_rows(doc: dict[str, Any]) -> dict[str, Any]:
    """A classified document as a ``CLASSIFY_SCHEMA`` row."""
    return {
        "id": doc["id"],
        "source": doc["source"],
        "narrative": doc["narrative"],
        "tropes": doc["tropes"],
        "trope_scores": score_list(doc["trope_scores"]),
        "lang": doc["lang"],
        "lang_score": doc["lang_score"],
    }


def run_classify(
    model: str,
    pattern: str,
    output: str,
    shards: int,
    beam_args: Sequence[str],
    id_field: str = "id",
    text_field: str = "text",
    overwrite: bool = False,
    allow_unverified_model: bool = False,
) -> None:
    """Classifies every input document with the model card's thresholds; one row per document.

    The output is staged and published with a completion marker (transforms/io/publication.py).
    """
    cfg = ClassifierConfig(model=model, allow_unverified_model=allow_unverified_model)
    final = output.rstrip("/")
    staged = prepare_output(final, overwrite)
    with beam.Pipeline(options=pipeline_options(beam_args)) as p:
        read = p | "Read" >> ReadSource(input_source(pattern, id_field, text_field), ReadConfig())
        classified = read.kept | "Classify" >> ClassifyDocuments(cfg)
        _ = classified | "Write[classified]" >> WriteHashedFiles(
            staged,
            "classified",
            shards,
            parquet_encoder(CLASSIFY_SCHEMA, _ROW_GROUP),
            lambda r: r["id"],
            classify_rows,
        )
        _ = read.dead_letter | "WriteDeadLetters" >> WriteDeadLetters(f"{staged}/dead_letter")
    publish(staged, final, overwrite)


def run_dedup(
    pattern: str,
    output: str,
    cfg: DedupConfig,
    shards: int,
    beam_args: Sequence[str],
    id_field: str = "id",
    text_field: str = "text",
    overwrite: bool = False,
) -> None:
    """Deduplicates the input; writes kept documents, a ledger row per input document and the index.

    ``cfg.previous_index`` names earlier runs' ``dedup_index/`` files: input documents
    that collide with their survivors are dropped (reason ``earlier_run_duplicate``).
    The output is staged and published with a completion marker, so a later run
    accepts its index only when this one finished.

    Raises:
      ComponentsNotConverged: the clusters needed more than ``cfg.max_rounds`` rounds;
        the message names the unsettled nodes and the setting to raise.
    """
    final = output.rstrip("/")
    staged = prepare_output(final, overwrite)
    source = input_source(pattern, id_field, text_field)
    try:
        _dedup_pipeline(staged, cfg, shards, beam_args, source)
    except Exception as err:
        # A lost shuffle record or unconverged clusters: one line, not the runner's traceback.
        raise_unwrapped(err, JoinIntegrityError, ComponentsNotConverged)
        raise
    publish(staged, final, overwrite)


def _dedup_pipeline(
    output: str, cfg: DedupConfig, shards: int, beam_args: Sequence[str], source: SourceConfig
) -> None:
    with beam.Pipeline(options=pipeline_options(beam_args)) as p:
        read = p | "Read" >> ReadSource(source, ReadConfig())
        docs = read.kept | "Unclassified" >> beam.Map(
            lambda d: {**d, "narrative": "none", "tropes": [], "trope_scores": {}}
        )
        dedup = docs | "Dedup" >> DedupDocuments(cfg, {source.name: 0})
        kept = dedup.kept
        ledger = [
            kept
            | "KeptRows"
            >> beam.Map(
                lambda d: {
                    "id": d["id"],
                    "source": d["source"],
                    "cluster_id": d["cluster_id"],
                    "cluster_size": d["cluster_size"],
                    "kept": True,
                    "reason": "",
                }
            ),
            dedup.dropped
            | "DroppedRows"
            >> beam.Map(
                lambda r: {
                    "id": r["id"],
                    "source": r["source"],
                    "cluster_id": r["cluster_id"],
                    "cluster_size": r["cluster_size"],
                    "kept": False,
                    "reason": r["reason"],
                }
            ),
        ] | "DedupLedger" >> beam.Flatten()
        _ = (
            kept
            | "Epoch" >> beam.Map(lambda d: {**d, "epoch": 0})
            | "Write[kept]"
            >> WriteHashedFiles(
                f"{output}/kept",
                "kept",
                shards,
                parquet_encoder(SHARD_SCHEMA, _ROW_GROUP),
                lambda d: d["id"],
                shard_row,
            )
        )
        _ = ledger | "Write[ledger]" >> WriteHashedFiles(
            f"{output}/ledger",
            "ledger",
            shards,
            parquet_encoder(DEDUP_LEDGER_SCHEMA, _ROW_GROUP),
            lambda r: r["id"],
        )
        if cfg.write_index:
            _ = dedup.index_entries | "DedupIndex" >> WriteDedupIndex(f"{output}/dedup_index", cfg)
        _ = read.dead_letter | "WriteDeadLetters" >> WriteDeadLetters(f"{output}/dead_letter")
