"""Writers: deterministic bytes, atomic names, readable by pyarrow.dataset and DuckDB."""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path

import apache_beam as beam
import duckdb
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from apache_beam.testing.util import assert_that, equal_to

from schemas.records import SHARD_SCHEMA
from transforms.io.write import (
    WriteDeadLetters,
    WriteHashedFiles,
    WriteSortedFiles,
    encode_jsonl,
    encode_parquet,
    parquet_encoder,
    shard_json_row,
    shard_name,
    shard_row,
    write_atomically,
    write_jsonl,
)
from transforms.text import stable_hash

from .conftest import make_pipeline

DOCS = [
    {
        "id": f"web/{i}",
        "source": "web",
        "role": "web",
        "text": f"text {i}",
        "narrative": "none",
        "tropes": ["honest"] if i % 2 else [],
        "trope_scores": {"honest": 0.5, "coercion": 0.1},
        "cluster_id": f"web/{i}",
        "cluster_size": 1,
        "epoch": 0,
        "meta": {"url": f"https://example.org/{i}"},
    }
    for i in range(50)
]


def test_shard_name() -> None:
    assert shard_name("mix", 3, 16, "parquet") == "mix-00003-of-00016.parquet"


def test_encoding_is_deterministic() -> None:
    rows = [shard_row(d) for d in DOCS]
    assert encode_parquet(rows, SHARD_SCHEMA, 10) == encode_parquet(rows, SHARD_SCHEMA, 10)


def test_atomic_write_leaves_no_temp_files(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "file.bin"
    write_atomically(str(target), b"one")
    write_atomically(str(target), b"two")
    assert target.read_bytes() == b"two"
    assert os.listdir(target.parent) == ["file.bin"]


def test_write_sorted_files_every_index_and_tools_read_them(tmp_path: Path) -> None:
    out = tmp_path / "shards"
    p = make_pipeline()
    stats = (
        p
        | beam.Create(DOCS)
        | beam.Map(lambda d: (0 if int(d["id"].split("/")[1]) < 25 else 2, d))
        | WriteSortedFiles(
            str(out), "mix", 3, "parquet", parquet_encoder(SHARD_SCHEMA, 10), lambda d: d["id"], shard_row
        )
    )
    assert_that(
        stats | beam.Map(lambda s: (s["shard"], s["rows"], s["sha256"] == _sha256_of(s["path"]))),
        equal_to([(0, 25, True), (1, 0, True), (2, 25, True)]),
    )
    p.run()
    names = sorted(os.listdir(out))
    assert names == ["mix-00000-of-00003.parquet", "mix-00001-of-00003.parquet", "mix-00002-of-00003.parquet"]
    dataset = ds.dataset(str(out), format="parquet")
    assert dataset.schema.equals(SHARD_SCHEMA, check_metadata=False)
    table = dataset.to_table()
    assert table.num_rows == 50
    con = duckdb.connect()
    n, with_tropes = con.execute(
        f"SELECT count(*), count(*) FILTER (WHERE len(tropes) > 0) FROM read_parquet('{out}/*.parquet')"
    ).fetchone()  # type: ignore[misc]
    assert (n, with_tropes) == (50, 25)
    # Scores are (label, score) structs, not an Arrow map, so Hugging Face datasets can load the shards.
    assert table.column("trope_scores")[0].as_py() == [
        {"label": "coercion", "score": pytest.approx(0.1)},
        {"label": "honest", "score": 0.5},
    ]
    (honest,) = con.execute(
        f"SELECT count(*) FROM read_parquet('{out}/*.parquet') "
        "WHERE list_contains(list_transform(trope_scores, lambda s: s.label), 'honest')"
    ).fetchone()  # type: ignore[misc]
    assert honest == 50
    # The file is exactly its documents' rows re-encoded in id order: the bytes depend on the rows alone.
    first_rows = [shard_row(d) for d in sorted(DOCS[:25], key=lambda d: d["id"])]
    assert (out / names[0]).read_bytes() == encode_parquet(first_rows, SHARD_SCHEMA, 10)


def _sha256_of(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def test_write_hashed_files_puts_each_row_in_its_hash_file(tmp_path: Path) -> None:
    out = tmp_path / "ledger"
    p = make_pipeline()
    stats = (
        p
        | beam.Create(DOCS)
        | WriteHashedFiles(
            str(out),
            "ledger",
            3,
            write_jsonl,
            sort_key=lambda d: d["id"],
            to_row=shard_json_row,
            suffix="jsonl",
        )
    )
    expected: dict[int, list[str]] = {0: [], 1: [], 2: []}
    for d in DOCS:
        expected[stable_hash("ledger", d["id"]) % 3].append(d["id"])
    assert_that(
        stats | beam.Map(lambda s: (s["shard"], s["rows"])),
        equal_to([(i, len(ids)) for i, ids in expected.items()]),
    )
    p.run()
    for i, ids in expected.items():
        lines = (out / f"ledger-{i:05d}-of-00003.jsonl").read_bytes().splitlines()
        assert [json.loads(line)["id"] for line in lines] == sorted(ids)


def test_write_dead_letters_is_one_sorted_file_with_or_without_a_gate(tmp_path: Path) -> None:
    dead = [
        {
            "source": s,
            "path": f"/in/{s}.jsonl",
            "offset": o,
            "stage": "read",
            "error": "bad_json: x",
            "raw": "{",
        }
        for s, o in (("web", 40), ("books", 7), ("web", 3))
    ]
    p = make_pipeline()
    rows = p | beam.Create(dead)
    plan = p | "Plan" >> beam.Create([{"num_shards": 1}])
    direct = rows | "Direct" >> WriteDeadLetters(str(tmp_path / "direct"))
    gated = rows | "Gated" >> WriteDeadLetters(str(tmp_path / "gated"), wait_for=plan)
    assert_that(direct | "DirectRows" >> beam.Map(lambda s: s["rows"]), equal_to([3]), label="direct")
    assert_that(gated | "GatedRows" >> beam.Map(lambda s: s["rows"]), equal_to([3]), label="gated")
    p.run()
    name = "dead_letter-00000-of-00001.jsonl"
    want = encode_jsonl(sorted(dead, key=lambda r: (r["source"], r["path"], r["offset"])))
    assert (tmp_path / "direct" / name).read_bytes() == want
    assert (tmp_path / "gated" / name).read_bytes() == want


def test_streamed_parquet_equals_the_whole_table_written_at_once() -> None:
    # write_parquet streams one row group at a time; pq.write_table of every row at once
    # is what shards were written with before, and the bytes must not change.
    rows = [shard_row(d) for d in DOCS]
    for n in (0, 1, 9, 10, 11, 50):
        table = pa.Table.from_pylist(rows[:n], schema=SHARD_SCHEMA)
        whole = io.BytesIO()
        pq.write_table(table, whole, compression="zstd", row_group_size=10, write_statistics=True)
        assert encode_parquet(rows[:n], SHARD_SCHEMA, 10) == whole.getvalue(), n


def test_jsonl_zst_shards_are_reproducible_and_readable(tmp_path: Path) -> None:
    import zstandard

    from transforms.io.write import shard_format

    suffix, encode, to_row = shard_format("jsonl.zst", 10_000)
    first, second = io.BytesIO(), io.BytesIO()
    encode([to_row(d) for d in DOCS], first)
    encode([to_row(d) for d in DOCS], second)
    data = first.getvalue()
    assert suffix == "jsonl.zst" and data == second.getvalue()
    rows = [json.loads(line) for line in zstandard.ZstdDecompressor().decompress(data).splitlines()]
    assert rows[1]["meta"] == {"url": "https://example.org/1"} and rows[1]["trope_scores"]["honest"] == 0.5
    path = tmp_path / "mix-00000-of-00001.jsonl.zst"
    path.write_bytes(data)
    n, urls = (
        duckdb.connect()
        .execute(
            f"SELECT count(*), count(DISTINCT meta.url) FROM read_json_auto('{path}', compression='zstd')"
        )
        .fetchone()
    )  # type: ignore[misc]
    assert (n, urls) == (50, 50)


def test_messages_column_loads_in_pyarrow_duckdb_and_datasets(tmp_path: Path) -> None:
    import datasets

    messages = [{"role": "user", "content": "Should I report it?"}, {"role": "assistant", "content": "Yes."}]
    docs = [{**d, "messages": messages} if i % 5 == 0 else d for i, d in enumerate(DOCS)]
    path = tmp_path / "mix-00000-of-00001.parquet"
    path.write_bytes(encode_parquet([shard_row(d) for d in docs], SHARD_SCHEMA, 10))
    table = ds.dataset(str(path), format="parquet").to_table()
    assert table.schema.field("messages").nullable
    assert table.column("messages").null_count == 40
    assert table.column("messages")[0].as_py() == messages
    (chats, turns) = (
        duckdb.connect()
        .execute(f"SELECT count(messages), sum(len(messages)) FROM read_parquet('{path}')")
        .fetchone()
    )  # type: ignore[misc]
    assert (chats, turns) == (10, 20)
    loaded = datasets.load_dataset(
        "parquet", data_files=str(path), split="train", cache_dir=str(tmp_path / "hf")
    )
    assert loaded.num_rows == 50
    assert loaded[0]["messages"] == messages and loaded[1]["messages"] is None
    assert loaded[0]["trope_scores"][0]["label"] == "coercion"
