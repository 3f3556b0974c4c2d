"""Property-based fuzzing: corrupted JSONL and gzip never crash a reader, and every file balances."""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

import apache_beam as beam
from apache_beam.testing.util import assert_that, equal_to
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.config import ReadConfig, SourceConfig
from schemas.records import SHARD_SCHEMA
from transforms.io.source import ReadSource
from transforms.io.write import encode_jsonl, encode_parquet, shard_row

from .conftest import make_pipeline
from .test_read import read_all

RECORDS = [
    {"id": f"r{i}", "text": f"Record {i}: the robot said «non» and 日本 {i * 7} " * (1 + i % 4), "n": i}
    for i in range(40)
]
RECORDS[5] = {"text": "no id, derived from the byte offset"}
BASE = b"".join(json.dumps(r, ensure_ascii=i % 2 == 0).encode() + b"\n" for i, r in enumerate(RECORDS))
SPLIT = 1024

# A mutation is (kind, position in [0, 1), byte or length).
mutation = st.tuples(
    st.sampled_from(["flip", "cut", "splice", "insert"]),
    st.floats(min_value=0, max_value=1, exclude_max=True),
    st.integers(min_value=0, max_value=255),
)


def mutate(data: bytes, mutations: list[tuple[str, float, int]]) -> bytes:
    """Applies byte flips, cuts, splices (a copy of another part of the data) and raw insertions."""
    buf = bytearray(data)
    for kind, where, value in mutations:
        if not buf:
            break
        i = int(where * len(buf))
        if kind == "flip":
            buf[i] ^= value or 1
        elif kind == "cut":
            del buf[i:]
        elif kind == "splice":
            j = (i + value * 7) % len(buf)
            buf[i:i] = buf[j : j + value]
        else:
            buf[i:i] = bytes([value, 0x80 | (value % 64), 0x0A][: 1 + value % 3])
    return bytes(buf)


def check_file(path: Path) -> None:
    """Reads ``path`` whole and in 1 KB ranges; both balance, agree, and their output can be written."""
    source = SourceConfig(name="fz", inputs=[str(path)])
    docs, rejected, _ = read_all(source, path, ReadConfig(split_bytes=1 << 20))
    split_docs, split_rejected, _ = read_all(source, path, ReadConfig(split_bytes=SPLIT))
    assert split_docs == docs and split_rejected == rejected
    # Whatever got through must be writable downstream, and dead letters must serialize.
    encode_parquet([shard_row(d) for d in docs], SHARD_SCHEMA, 100)
    encode_jsonl([r.record for r in rejected])


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mutations=st.lists(mutation, min_size=1, max_size=6))
def test_corrupted_plain_jsonl(tmp_path: Path, mutations: list[tuple[str, float, int]]) -> None:
    path = tmp_path / "f.jsonl"
    path.write_bytes(mutate(BASE, mutations))
    check_file(path)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    mutations=st.lists(mutation, min_size=1, max_size=4),
    members=st.integers(min_value=1, max_value=3),
    before=st.booleans(),
)
def test_corrupted_gzip(
    tmp_path: Path, mutations: list[tuple[str, float, int]], members: int, before: bool
) -> None:
    # Corrupt the text and then compress it, or compress (in 1-3 members) and corrupt the stream.
    data = mutate(BASE, mutations) if before else BASE
    step = max(1, -(-len(data) // members))
    packed = b"".join(
        gzip.compress(data[i : i + step], mtime=0) for i in range(0, len(data), step)
    ) or gzip.compress(b"")
    path = tmp_path / "f.jsonl.gz"
    path.write_bytes(packed if before else mutate(packed, mutations))
    check_file(path)


def test_pipeline_conserves_every_corrupted_file(tmp_path: Path) -> None:
    rng = random.Random(20261123)
    for n in range(12):
        muts = [
            (rng.choice(["flip", "cut", "splice", "insert"]), rng.random(), rng.randrange(256))
            for _ in range(3)
        ]
        if n % 2:
            (tmp_path / f"f{n}.jsonl.gz").write_bytes(mutate(gzip.compress(BASE, mtime=0), muts))
        else:
            (tmp_path / f"f{n}.jsonl").write_bytes(mutate(BASE * 3, muts))
    expected = {"docs": 0, "dead": 0}
    for path in tmp_path.iterdir():
        docs, rejected, _ = read_all(SourceConfig(name="fz", inputs=[str(path)]), path)
        expected["docs"] += len(docs)
        expected["dead"] += len(rejected)
    source = SourceConfig(name="fz", inputs=[str(tmp_path / "*")])
    p = make_pipeline()
    result = p | "Read" >> ReadSource(source, ReadConfig(split_bytes=SPLIT))
    assert_that(
        result.counts | "Sum" >> beam.CombinePerKey(sum),
        equal_to([(("read_files", "fz"), 12), (("read_seen", "fz"), expected["docs"] + expected["dead"])]),
        label="Counts",
    )
    assert_that(
        result.kept | "CountDocs" >> beam.combiners.Count.Globally(), equal_to([expected["docs"]]), label="D"
    )
    assert_that(
        result.dead_letter | "CountDead" >> beam.combiners.Count.Globally(),
        equal_to([expected["dead"]]),
        label="X",
    )
    p.run()
