"""Readers: every format, every bad-input case, nothing lost."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path
from typing import Any

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard
from apache_beam.testing.util import assert_that, equal_to

from schemas.config import FieldMapping, ReadConfig, SourceConfig
from transforms.io.documents import BadRecord, Rejected, Tally, make_document, truncate_utf8
from transforms.io.source import ReadSource, file_ranges, read_range

from .conftest import make_pipeline

GOOD = [
    {"id": f"d{i}", "text": f"document number {i} " * 5, "url": f"https://example.org/{i}"} for i in range(20)
]


def _jsonl(records: list[object]) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in records)


def _source(path: Path | str, fmt: str = "jsonl", **kw: object) -> SourceConfig:
    return SourceConfig(name="src", inputs=[str(path)], format=fmt, **kw)  # type: ignore[arg-type]


def read_all(
    source: SourceConfig, path: Path, read_cfg: ReadConfig | None = None
) -> tuple[list[dict[str, Any]], list[Rejected], int]:
    """Reads one file range by range, as the pipeline does: (documents, rejected, records seen)."""
    cfg = read_cfg or ReadConfig()
    docs: list[dict[str, Any]] = []
    rejected: list[Rejected] = []
    tally = Tally()
    for rng in file_ranges(str(path), os.path.getsize(path), source.format, cfg.split_bytes):
        for item in read_range(source, cfg, rng, tally):
            (rejected if isinstance(item, Rejected) else docs).append(item)  # type: ignore[arg-type]
    assert tally.seen == len(docs) + len(rejected), "records seen must equal documents + dead letters"
    return docs, rejected, tally.seen


def _offsets(data: bytes) -> list[int]:
    starts, pos = [], 0
    for line in data.splitlines(keepends=True):
        starts.append(pos)
        pos += len(line)
    return starts


def test_plain_gzip_and_zstd_give_the_same_byte_offset_ids(tmp_path: Path) -> None:
    data = _jsonl([{"text": r["text"]} for r in GOOD])
    (tmp_path / "a.jsonl").write_bytes(data)
    (tmp_path / "a.jsonl.gz").write_bytes(gzip.compress(data))
    # Two frames: multi-frame files (e.g. from parallel compressors) must be read across frames.
    half = len(data) // 2
    cut = data.index(b"\n", half) + 1
    zst = zstandard.ZstdCompressor()
    (tmp_path / "a.jsonl.zst").write_bytes(zst.compress(data[:cut]) + zst.compress(data[cut:]))
    expected = [f"src/a.jsonl@{o}" for o in _offsets(data)]
    for name in ("a.jsonl", "a.jsonl.gz", "a.jsonl.zst"):
        docs, rejected, _ = read_all(_source(tmp_path / name), tmp_path / name)
        assert rejected == []
        ids = [d["id"].replace(".gz@", "@").replace(".zst@", "@") for d in docs]
        assert ids == expected, name


def test_split_ranges_read_each_line_exactly_once(tmp_path: Path) -> None:
    data = _jsonl(GOOD * 20)
    path = tmp_path / "big.jsonl"
    path.write_bytes(data)
    whole, _, _ = read_all(_source(path), path)
    for split in (1024, 1500, 4096):
        ranges = file_ranges(str(path), len(data), "jsonl", split)
        assert len(ranges) == -(-len(data) // split) > 1
        docs, rejected, _ = read_all(_source(path), path, ReadConfig(split_bytes=split))
        assert rejected == [] and docs == whole
    assert len(file_ranges(str(path) + ".gz", len(data), "jsonl", 1024)) == 1


def test_bad_records_are_dead_lettered_with_reasons_and_offsets(tmp_path: Path) -> None:
    lines = [
        json.dumps(GOOD[0]).encode(),
        b'{"id": "x", "text": "unterminated',
        b'{"id": "bad-utf8", "text": "caf\xe9"}',
        json.dumps({"id": "num", "text": 42}).encode(),
        json.dumps({"id": "list", "text": ["a", "b"]}).encode(),
        json.dumps({"id": "empty", "text": "  "}).encode(),
        json.dumps({"id": "missing"}).encode(),
        json.dumps([1, 2, 3]).encode(),
        b'{"id": "surrogate", "text": "lone \\ud800 half"}',
        b"",
        json.dumps(GOOD[1]).encode(),
    ]
    data = b"\n".join(lines) + b"\n"
    (tmp_path / "bad.jsonl").write_bytes(data)
    docs, rejected, seen = read_all(_source(tmp_path / "bad.jsonl"), tmp_path / "bad.jsonl")
    offsets = _offsets(data)
    assert [d["id"] for d in docs] == ["src/d0", "src/d1"]
    assert seen == 10  # the blank line is not a record
    assert [(r.record["offset"], r.reason) for r in rejected] == [
        (offsets[1], "bad_json"),
        (offsets[2], "bad_utf8"),
        (offsets[3], "wrong_type"),
        (offsets[4], "wrong_type"),
        (offsets[5], "empty_text"),
        (offsets[6], "missing_text"),
        (offsets[7], "not_an_object"),
        (offsets[8], "bad_utf8"),
    ]
    first = rejected[0].record
    assert first["path"] == str(tmp_path / "bad.jsonl") and first["stage"] == "read"
    assert first["raw"].startswith('{"id": "x"') and first["error"].startswith("bad_json: ")


def test_raw_record_is_cut_at_64_kb_and_long_lines_are_not_held(tmp_path: Path) -> None:
    big = b'{"id": "big", "text": "' + b"a" * 300_000 + b'"'  # not JSON: no closing brace
    long_line = json.dumps({"id": "long", "text": "b" * 200_000}).encode()
    path = tmp_path / "x.jsonl"
    path.write_bytes(big + b"\n" + long_line + b"\n" + json.dumps(GOOD[0]).encode() + b"\n")
    docs, rejected, _ = read_all(_source(path), path, ReadConfig(max_line_bytes=100_000))
    assert [d["id"] for d in docs] == ["src/d0"]
    assert [r.reason for r in rejected] == ["line_too_long", "line_too_long"]
    assert all(len(r.record["raw"].encode()) == 64 * 1024 for r in rejected)
    docs, rejected, _ = read_all(_source(path), path)
    assert [r.reason for r in rejected] == ["bad_json"] and len(rejected[0].record["raw"]) == 64 * 1024


@pytest.mark.parametrize("suffix", [".gz", ".zst"])
def test_truncated_stream_keeps_records_before_the_damage(tmp_path: Path, suffix: str) -> None:
    # Several zstd blocks (128 KiB each): a cut stream can only keep whole blocks.
    data = _jsonl(GOOD * 2000)
    packed = gzip.compress(data) if suffix == ".gz" else zstandard.ZstdCompressor().compress(data)
    path = tmp_path / f"cut.jsonl{suffix}"
    path.write_bytes(packed[: len(packed) // 2])
    docs, rejected, _ = read_all(_source(path), path)
    assert 0 < len(docs) < 40_000
    assert [r.reason for r in rejected] == ["truncated_stream"]
    # The dead letter points at the first byte (decompressed) that was not read.
    last = docs[-1]
    assert (
        rejected[0].record["offset"] == last["src_offset"] + len(json.dumps(GOOD[(len(docs) - 1) % 20])) + 1
    )


@pytest.mark.parametrize(
    "content", [b"", gzip.compress(b"", mtime=0), b"\n\n  \n"], ids=["empty", "empty-gzip", "blank-lines"]
)
def test_empty_files_are_reported(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / ("e.jsonl.gz" if content.startswith(b"\x1f\x8b") else "e.jsonl")
    path.write_bytes(content)
    docs, rejected, _ = read_all(_source(path), path)
    assert docs == [] and [(r.record["offset"], r.reason) for r in rejected] == [(0, "empty_file")]


def test_oversize_truncates_or_dead_letters() -> None:
    src = SourceConfig(name="s", inputs=["x"])
    big = {"id": "big", "text": "é" * 1000}
    doc = make_document(big, src, ReadConfig(max_doc_bytes=101), "x", 1)
    assert len(doc["text"].encode()) <= 101 and doc["text"] == "é" * 50
    with pytest.raises(BadRecord) as err:
        make_document(big, src, ReadConfig(max_doc_bytes=100, oversize="dead_letter"), "x", 1)
    assert err.value.reason == "oversize"
    assert truncate_utf8("aé", 2) == "a"


def test_parquet_reads_projected_columns_and_derives_row_ids(tmp_path: Path) -> None:
    rows = [{**r, "unused": "x" * 10} for r in GOOD]
    rows[3] = {**rows[3], "id": None}
    rows[4] = {**rows[4], "text": None}
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "a.parquet", row_group_size=7)
    source = _source(tmp_path / "a.parquet", "parquet", fields=FieldMapping(metadata=["url"]))
    docs, rejected, seen = read_all(source, tmp_path / "a.parquet")
    assert seen == 20 and [(r.record["offset"], r.reason) for r in rejected] == [(5, "missing_text")]
    assert docs[3]["id"] == "src/a.parquet#4"
    assert all(sorted(d["meta"]) == ["url"] for d in docs)


def test_corrupt_truncated_and_textless_parquet_are_dead_lettered(tmp_path: Path) -> None:
    (tmp_path / "garbage.parquet").write_bytes(b"PAR1 this is not parquet")
    pq.write_table(pa.Table.from_pylist(GOOD), tmp_path / "good.parquet")
    data = (tmp_path / "good.parquet").read_bytes()
    (tmp_path / "cut.parquet").write_bytes(data[: len(data) - 20])
    pq.write_table(pa.Table.from_pylist([{"body": "x"}]), tmp_path / "notext.parquet")
    for name, reason in (
        ("garbage", "corrupt_parquet"),
        ("cut", "corrupt_parquet"),
        ("notext", "missing_text"),
    ):
        path = tmp_path / f"{name}.parquet"
        docs, rejected, _ = read_all(_source(path, "parquet"), path)
        assert docs == [] and [r.reason for r in rejected] == [reason], name


def test_text_files_one_document_each(tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text("# Honesty\n\nBe honest.")
    (tmp_path / "b.txt").write_text("Be safe.")
    (tmp_path / "c.md").write_text("   ")
    (tmp_path / "d.md").write_bytes(b"caf\xe9")
    (tmp_path / "e.md.gz").write_bytes(gzip.compress(b"compressed section"))
    results = {p.name: read_all(_source(p, "text"), p) for p in sorted(tmp_path.iterdir())}
    assert [d["id"] for d in results["a.md"][0]] == ["src/a.md"]
    assert results["b.txt"][0][0]["text"] == "Be safe."
    assert [r.reason for r in results["c.md"][1]] == ["empty_text"]
    assert [r.reason for r in results["d.md"][1]] == ["bad_utf8"]
    assert results["e.md.gz"][0][0]["text"] == "compressed section"


def test_warc_extracts_main_text_and_keeps_url_and_record_id(shared_data: Path) -> None:
    path = shared_data / "warc" / "dolma-sample-0000.warc.gz"
    source = _source(path, "warc", fields=FieldMapping(metadata=["url", "warc_record_id"]))
    docs, rejected, seen = read_all(source, path)
    assert seen == 22 and len(docs) >= 20
    assert all(r.reason in {"not_html", "empty_text"} for r in rejected)
    first = docs[0]
    assert first["id"] == "src/urn:uuid:283E41D7-F686-4C3E-B7DA-E8D248A100C1"
    assert first["meta"] == {
        "url": "https://www.semanticscholar.org/research/research-team",
        "warc_record_id": "urn:uuid:283E41D7-F686-4C3E-B7DA-E8D248A100C1",
    }
    assert "<div" not in first["text"] and len(first["text"]) > 200


def test_clipped_warc_keeps_records_before_the_damage(shared_data: Path, tmp_path: Path) -> None:
    # The shared clipped file holds one response record cut inside its body: nothing to keep.
    clipped = shared_data / "warc" / "resiliparse-clipped.warc.gz"
    docs, rejected, _ = read_all(_source(clipped, "warc"), clipped)
    assert docs == [] and [(r.record["offset"], r.reason) for r in rejected] == [(0, "truncated_stream")]
    # A whole WARC followed by a clipped one: every record of the first is kept.
    whole = (shared_data / "warc" / "dolma-sample-0000.warc.gz").read_bytes()
    path = tmp_path / "joined.warc.gz"
    path.write_bytes(whole + clipped.read_bytes())
    docs, rejected, seen = read_all(_source(path, "warc"), path)
    assert seen == 23 and len(docs) + len(rejected) == 23
    assert rejected[-1].reason == "truncated_stream" and rejected[-1].record["offset"] > 0


@pytest.mark.parametrize("fmt", ["warc", "wet"])
def test_every_shared_warc_file_reads_and_balances(shared_data: Path, fmt: str) -> None:
    # Real files with quirks (block-sized records, ClueWeb headers, a clipped body) and the
    # wrong record type for half of the runs: nothing crashes, every file is accounted for.
    totals = {}
    for path in sorted((shared_data / "warc").glob("*.warc.gz")):
        docs, _, seen = read_all(_source(path, fmt), path)
        assert seen >= 1 and all(d["text"].strip() for d in docs)
        totals[path.name] = len(docs)
    if fmt == "warc":
        assert totals["resiliparse-clueweb-quirk.warc.gz"] == 29 and totals["dolma-sample-0001.warc.gz"] == 15
    else:
        assert sum(totals.values()) == 0


def _wet_record(uri: str, record_id: str, body: bytes) -> bytes:
    head = (
        f"WARC/1.0\r\nWARC-Type: conversion\r\nWARC-Target-URI: {uri}\r\n"
        f"WARC-Date: 2020-04-01T00:00:00Z\r\nWARC-Record-ID: <{record_id}>\r\n"
        f"Content-Type: text/plain\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    return head + body + b"\r\n\r\n"


def test_wet_plain_text_records(tmp_path: Path) -> None:
    data = (
        _wet_record("https://a.example/", "urn:uuid:1", "First page, café.".encode())
        + _wet_record("https://b.example/", "urn:uuid:2", b"bad \xff bytes")
        + _wet_record("https://c.example/", "urn:uuid:3", b"Third page.")
    )
    path = tmp_path / "x.warc.wet.gz"
    path.write_bytes(gzip.compress(data))
    source = _source(path, "wet", fields=FieldMapping(metadata=["url"]))
    docs, rejected, _ = read_all(source, path)
    assert [(d["id"], d["text"], d["meta"]["url"]) for d in docs] == [
        ("src/urn:uuid:1", "First page, café.", "https://a.example/"),
        ("src/urn:uuid:3", "Third page.", "https://c.example/"),
    ]
    assert [r.reason for r in rejected] == ["bad_utf8"]


def test_read_source_pipeline_mixes_formats_and_counts_every_file(tmp_path: Path) -> None:
    (tmp_path / "a.jsonl").write_bytes(_jsonl(GOOD) + b"not json\n")
    (tmp_path / "b.jsonl.gz").write_bytes(gzip.compress(_jsonl([{"text": "no id here"}])))
    (tmp_path / "c.jsonl").write_bytes(b"")
    source = SourceConfig(name="src", inputs=[str(tmp_path / "*.jsonl"), str(tmp_path / "*.gz")])
    p = make_pipeline()
    out = p | ReadSource(source, ReadConfig(split_bytes=1024))
    assert_that(
        out.kept | "Ids" >> beam.Map(lambda d: d["id"]),
        equal_to([f"src/d{i}" for i in range(20)] + ["src/b.jsonl.gz@0"]),
        label="Docs",
    )
    assert_that(
        out.dead_letter
        | "Reasons" >> beam.Map(lambda d: (os.path.basename(d["path"]), d["error"].split(":")[0])),
        equal_to([("a.jsonl", "bad_json"), ("c.jsonl", "empty_file")]),
        label="Dead",
    )
    assert_that(
        out.counts | "Total" >> beam.CombinePerKey(sum),
        equal_to([(("read_seen", "src"), 23), (("read_files", "src"), 3)]),
        label="Counts",
    )
    p.run()


def test_stage_commands_pick_the_reader_from_the_extension() -> None:
    from pipelines.stages import input_format

    assert [
        input_format(p) for p in ("a/*.jsonl.zst", "b/*.parquet", "c/*.warc.gz", "d/*.warc.wet.gz", "e/*")
    ] == [
        "jsonl",
        "parquet",
        "warc",
        "wet",
        "jsonl",
    ]


def _response(uri: str, content_type: str, body: bytes) -> bytes:
    http = f"HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\n\r\n".encode() + body
    head = (
        f"WARC/1.0\r\nWARC-Type: response\r\nWARC-Target-URI: {uri}\r\n"
        f"WARC-Record-ID: <urn:uuid:{uri[-1]}>\r\nContent-Type: application/http; msgtype=response\r\n"
        f"Content-Length: {len(http)}\r\n\r\n"
    ).encode()
    return head + http + b"\r\n\r\n"


def test_warc_non_html_and_textless_pages_are_dead_lettered(tmp_path: Path) -> None:
    page = (
        b"<html><body><article><p>"
        + b"An AI helped a gardener plan the season. " * 5
        + b"</p></article></body></html>"
    )
    data = (
        _response("https://x.example/1", "text/html; charset=utf-8", page)
        + _response("https://x.example/2", "image/png", b"\x89PNG\r\n\x1a\n")
        + _response("https://x.example/3", "text/html", b"<html><body><script>x()</script></body></html>")
    )
    path = tmp_path / "x.warc"
    path.write_bytes(data)
    docs, rejected, _ = read_all(_source(path, "warc"), path)
    assert [d["id"] for d in docs] == ["src/urn:uuid:1"] and "gardener" in docs[0]["text"]
    assert [(r.record["offset"] > 0, r.reason) for r in rejected] == [
        (True, "not_html"),
        (True, "empty_text"),
    ]


def test_deeply_nested_record_is_a_dead_letter_not_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "deep.jsonl"
    deep = b'{"id": "deep", "text": "x", "meta": ' + b"[" * 100_000 + b"]" * 100_000 + b"}\n"
    path.write_bytes(_jsonl(GOOD[:3]) + deep + _jsonl(GOOD[3:5]))
    docs, rejected, _ = read_all(_source(path), path)
    assert [d["id"] for d in docs] == [f"src/d{i}" for i in range(5)]
    assert [(r.reason, r.record["offset"]) for r in rejected] == [("too_deep", len(_jsonl(GOOD[:3])))]
    assert rejected[0].record["error"].startswith("too_deep: ")


@pytest.mark.parametrize("suffix", [".gz", ".zst"])
@pytest.mark.parametrize("records", [10, 3000])
def test_members_after_junk_are_recovered_and_the_junk_reported(
    tmp_path: Path, suffix: str, records: int
) -> None:
    def pack(data: bytes) -> bytes:
        return gzip.compress(data, mtime=0) if suffix == ".gz" else zstandard.ZstdCompressor().compress(data)

    rows = [{"id": f"r{i}", "text": f"record {i} " * 8} for i in range(records)]
    half = records // 2
    junk = b"\x00junk after a member\xff" * 3
    path = tmp_path / f"junk.jsonl{suffix}"
    path.write_bytes(pack(_jsonl(rows[:half])) + junk + pack(_jsonl(rows[half:])) + b"trailing")
    docs, rejected, _ = read_all(_source(path), path)
    assert [d["id"] for d in docs] == [f"src/r{i}" for i in range(records)]
    assert [(r.reason, r.record["offset"]) for r in rejected] == [
        ("junk_bytes", len(_jsonl(rows[:half]))),
        ("junk_bytes", len(_jsonl(rows))),
    ]
    assert rejected[0].record["error"].startswith(f"junk_bytes: {len(junk)} bytes")
    assert rejected[1].record["error"].startswith("junk_bytes: 8 bytes")


def test_byte_order_mark_is_stripped(tmp_path: Path) -> None:
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + _jsonl(GOOD[:2]))
    docs, rejected, _ = read_all(_source(path), path)
    assert rejected == [] and [d["id"] for d in docs] == ["src/d0", "src/d1"]
    assert docs[0]["src_offset"] == 0
    text = tmp_path / "page.md"
    text.write_bytes("\ufeffA page.".encode())
    docs, rejected, _ = read_all(_source(text, "text"), text)
    assert [d["text"] for d in docs] == ["A page."]


def test_a_directory_matched_by_a_glob_is_a_dead_letter(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    docs, rejected, _ = read_all(_source(tmp_path / "sub"), tmp_path / "sub")
    assert docs == [] and [(r.reason, r.record["path"]) for r in rejected] == [
        ("not_a_file", str(tmp_path / "sub"))
    ]
