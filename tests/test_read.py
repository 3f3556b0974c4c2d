"""Readers: every format, every bad-input case, nothing lost."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.testing.util import assert_that, equal_to

from schemas.config import FieldMapping, ReadConfig, SourceConfig
from transforms.read import BadRecord, ReadSource, make_document, truncate_utf8

from .conftest import make_pipeline

GOOD = [
    {"id": f"d{i}", "text": f"document number {i} " * 5, "url": f"https://example.org/{i}"} for i in range(20)
]


def _jsonl(records: list[object]) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in records)


def _read(
    source: SourceConfig, ids: list[str], dead: list[tuple[int, str]], read_cfg: ReadConfig | None = None
) -> None:
    """Runs ReadSource and asserts the document ids and the (offset, reason) of dead letters."""
    p = make_pipeline()
    out = p | ReadSource(source, read_cfg or ReadConfig())
    assert_that(out.docs | "Ids" >> beam.Map(lambda d: d["id"]), equal_to(ids), label="Docs")
    assert_that(
        out.dead_letter | "Reasons" >> beam.Map(lambda d: (d["offset"], d["error"].split(":")[0])),
        equal_to(dead),
        label="Dead",
    )
    p.run()


def _source(path: Path | str, fmt: str = "jsonl", **kw: object) -> SourceConfig:
    return SourceConfig(name="src", inputs=[str(path)], format=fmt, **kw)  # type: ignore[arg-type]


def test_jsonl_plain_and_gzip_keep_every_record(tmp_path: Path) -> None:
    (tmp_path / "a.jsonl").write_bytes(_jsonl(GOOD[:10]))
    with gzip.open(tmp_path / "b.jsonl.gz", "wb") as f:
        f.write(_jsonl(GOOD[10:]))
    _read(_source(tmp_path / "*.jsonl*"), [f"src/d{i}" for i in range(20)], [])


def test_jsonl_zstd(tmp_path: Path) -> None:
    import zstandard

    (tmp_path / "a.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(_jsonl(GOOD)))
    _read(_source(tmp_path / "a.jsonl.zst"), [f"src/d{i}" for i in range(20)], [])


def test_bad_records_are_dead_lettered_with_reasons(tmp_path: Path) -> None:
    lines = [
        json.dumps(GOOD[0]).encode(),
        b'{"id": "x", "text": "unterminated',
        b'{"id": "bad-utf8", "text": "caf\xe9"}',
        json.dumps({"id": "num", "text": 42}).encode(),
        json.dumps({"id": "list", "text": ["a", "b"]}).encode(),
        json.dumps({"id": "empty", "text": "  "}).encode(),
        json.dumps({"id": "missing"}).encode(),
        json.dumps([1, 2, 3]).encode(),
        json.dumps(GOOD[1]).encode(),
    ]
    (tmp_path / "bad.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    _read(
        _source(tmp_path / "bad.jsonl"),
        ["src/d0", "src/d1"],
        [
            (2, "bad_json"),
            (3, "bad_utf8"),
            (4, "wrong_type"),
            (5, "wrong_type"),
            (6, "empty_text"),
            (7, "missing_text"),
            (8, "not_an_object"),
        ],
    )


def test_truncated_gzip_keeps_records_before_the_damage(tmp_path: Path) -> None:
    data = gzip.compress(_jsonl(GOOD * 50))
    (tmp_path / "cut.jsonl.gz").write_bytes(data[: len(data) // 2])
    p = make_pipeline()
    out = p | ReadSource(_source(tmp_path / "cut.jsonl.gz"), ReadConfig())

    def check_docs(docs: list[dict[str, object]]) -> None:
        assert 0 < len(docs) < 1000

    def check_dead(dead: list[dict[str, object]]) -> None:
        assert len(dead) == 1
        assert str(dead[0]["error"]).startswith("truncated_stream")

    assert_that(out.docs, check_docs, label="Docs")
    assert_that(out.dead_letter, check_dead, label="Dead")
    p.run()


def test_empty_file_is_reported(tmp_path: Path) -> None:
    (tmp_path / "empty.jsonl").write_bytes(b"")
    _read(_source(tmp_path / "empty.jsonl"), [], [(0, "empty_file")])


def test_parquet_reads_projected_columns(tmp_path: Path) -> None:
    table = pa.Table.from_pylist([{**r, "unused": "x" * 10} for r in GOOD])
    pq.write_table(table, tmp_path / "a.parquet")
    source = _source(tmp_path / "a.parquet", "parquet", fields=FieldMapping(metadata=["url"]))
    p = make_pipeline()
    out = p | ReadSource(source, ReadConfig())
    assert_that(
        out.docs | "Meta" >> beam.Map(lambda d: (d["id"], sorted(d["meta"]))),
        equal_to([(f"src/d{i}", ["url"]) for i in range(20)]),
    )
    p.run()


def test_corrupt_parquet_is_dead_lettered(tmp_path: Path) -> None:
    (tmp_path / "bad.parquet").write_bytes(b"PAR1 this is not parquet")
    _read(_source(tmp_path / "bad.parquet", "parquet"), [], [(1, "corrupt_parquet")])


def test_text_files_one_document_each(tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text("# Honesty\n\nBe honest.")
    (tmp_path / "b.md").write_text("# Safety\n\nBe safe.")
    (tmp_path / "c.md").write_text("   ")
    _read(_source(tmp_path / "*.md", "text"), ["src/a.md", "src/b.md"], [(1, "empty_text")])


def test_derived_ids_come_from_path_and_position_not_content(tmp_path: Path) -> None:
    same = {"text": "the same text in two places"}
    (tmp_path / "x.jsonl").write_bytes(_jsonl([same, same]))
    _read(_source(tmp_path / "x.jsonl"), ["src/x.jsonl#1", "src/x.jsonl#2"], [])


def test_oversize_truncates_or_dead_letters() -> None:
    src = SourceConfig(name="s", inputs=["x"])
    big = {"id": "big", "text": "é" * 1000}
    doc = make_document(big, src, ReadConfig(max_doc_bytes=101), "x", 1)
    assert len(doc["text"].encode()) <= 101 and doc["text"] == "é" * 50
    with pytest.raises(BadRecord) as err:
        make_document(big, src, ReadConfig(max_doc_bytes=100, oversize="dead_letter"), "x", 1)
    assert err.value.reason == "oversize"
    assert truncate_utf8("aé", 2) == "a"
