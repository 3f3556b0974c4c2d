"""Record layouts that flow between stages, and the Arrow schemas written to disk.

Elements in the pipeline are plain dicts (cheap to pickle, cheap to build in batch
code).  The keys a stage may rely on are listed here, with the stage that sets them.
"""

from __future__ import annotations

from typing import Any, TypedDict, get_type_hints

import pyarrow as pa


class Document(TypedDict, total=False):
    """One document as it moves through the DAG.

    Set by read: ``id``, ``source``, ``role``, ``text``, ``meta``, ``src_path``, ``src_offset``
    (byte offset in the decompressed file for JSONL, WARC and WET; row for Parquet; 0 for text),
    and ``truncated_from`` (original UTF-8 length) when the text was cut at ``read.max_doc_bytes``;
    for chat records also ``messages`` (``text`` is then their rendering).
    Set by classify: ``lang`` and ``lang_score`` (lid.176), ``trope_scores``, ``tropes``,
    ``narrative``.
    Set by dedup: ``cluster_id``, ``cluster_size``.
    Set by blend: ``units`` (its documents, bytes or tokens), for chat documents
    ``chat_tokens`` (conversation and assistant-turn tokens), ``epoch`` (which repetition
    of the document a copy is).
    """

    id: str
    source: str
    role: str
    text: str
    meta: dict[str, Any]
    messages: list[dict[str, str]]
    src_path: str
    src_offset: int
    lang: str
    lang_score: float
    truncated_from: int
    trope_scores: dict[str, float]
    tropes: list[str]
    narrative: str
    cluster_id: str
    cluster_size: int
    units: int
    chat_tokens: list[int]
    epoch: int


class LedgerRow(TypedDict):
    """The fate of one input document: exactly one row per parsed document.

    ``fate`` is ``written`` (with ``copies`` >= 1) or ``dropped`` (with ``stage`` and ``reason``).
    """

    id: str
    source: str
    fate: str
    stage: str
    reason: str
    detail: str
    narrative: str
    cluster_id: str
    cluster_size: int
    copies: int


class DeadLetter(TypedDict):
    """A record that could not become a document.

    ``offset`` is where it starts (as ``Document.src_offset``; 0 for the file as a
    whole), ``error`` starts with the counted reason (``bad_json: ...``), and ``raw``
    is the record cut at 64 KB.
    """

    source: str
    path: str
    offset: int
    stage: str
    error: str
    raw: str


RAW_LIMIT_BYTES = 64 * 1024

# Label scores as a list of (label, score) structs, sorted by label.  Not an Arrow
# map: Hugging Face ``datasets`` has no feature type for maps and refuses to load
# a Parquet file that holds one (huggingface/datasets#5612).
TROPE_SCORES_TYPE = pa.list_(pa.struct([("label", pa.string()), ("score", pa.float32())]))
# The turns of a chat document, as read; a trainer applies its own template to them.
MESSAGES_TYPE = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))

SHARD_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("role", pa.string(), nullable=False),
        pa.field("text", pa.string(), nullable=False),
        pa.field("narrative", pa.string(), nullable=False),
        pa.field("tropes", pa.list_(pa.string()), nullable=False),
        pa.field("trope_scores", TROPE_SCORES_TYPE, nullable=False),
        pa.field("cluster_id", pa.string(), nullable=False),
        pa.field("cluster_size", pa.int32(), nullable=False),
        pa.field("epoch", pa.int32(), nullable=False),
        pa.field("meta", pa.string(), nullable=False),
        # Null for documents that were not classified (a source with a fixed narrative).
        pa.field("lang", pa.string(), nullable=True),
        pa.field("lang_score", pa.float32(), nullable=True),
        # Null for documents that are not chat conversations.
        pa.field("messages", MESSAGES_TYPE, nullable=True),
    ],
    metadata={"producer": "tropemix", "meta": "JSON object of the source metadata fields kept"},
)

# The ledger file has one non-null column per ``LedgerRow`` key, in its order.
_ARROW_TYPES = {str: pa.string(), int: pa.int32()}
LEDGER_SCHEMA = pa.schema(
    [pa.field(name, _ARROW_TYPES[kind], nullable=False) for name, kind in get_type_hints(LedgerRow).items()],
    metadata={"producer": "tropemix"},
)


def _fields(schema: pa.Schema, *names: str) -> list[pa.Field]:
    """The fields ``names`` of ``schema``, so a row that repeats another's columns shares their definition."""
    return [schema.field(name) for name in names]


# ``tropemix classify``: the classifier's columns of a shard row; every document is
# classified, so language and score are never null.
CLASSIFY_SCHEMA = pa.schema(
    [
        *_fields(SHARD_SCHEMA, "id", "source", "narrative", "tropes", "trope_scores"),
        *(f.with_nullable(False) for f in _fields(SHARD_SCHEMA, "lang", "lang_score")),
    ],
    metadata={"producer": "tropemix"},
)

# ``tropemix dedup``: the ledger of a dedup-only run, the ledger's dedup columns plus
# ``kept`` (a dedup-only run writes no copies, so it has no ``fate``/``copies``).
DEDUP_LEDGER_SCHEMA = pa.schema(
    [
        *_fields(LEDGER_SCHEMA, "id", "source", "cluster_id", "cluster_size"),
        pa.field("kept", pa.bool_(), nullable=False),
        LEDGER_SCHEMA.field("reason"),
    ],
    metadata={"producer": "tropemix"},
)

# The band index of a run's survivors, read back by later runs (``dedup.previous_index``).
# ``band`` -1 holds the exact hash of the normalized text; bands 0.. hold LSH bucket hashes.
# The schema metadata records the parameters the hashes depend on.
DEDUP_INDEX_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("band", pa.int32(), nullable=False),
        pa.field("bucket", pa.int64(), nullable=False),
    ],
    metadata={"producer": "tropemix"},
)
