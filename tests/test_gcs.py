"""gs:// for real, against gcp-storage-emulator: read from one bucket, write shards to another."""

from __future__ import annotations

import gzip
import io
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import apache_beam as beam
import pyarrow.parquet as pq
import pytest
import yaml
from apache_beam.io.filesystems import FileSystems

from pipelines.mix import BuildMix
from pipelines.run import read_report
from schemas.config import ReadConfig, SourceConfig
from schemas.loading import parse_config
from schemas.records import SHARD_SCHEMA
from transforms.io.source import ReadSource
from transforms.io.storage import EMULATOR_ENV, reset_credentials, use_emulator_credentials
from transforms.io.write import WriteSortedFiles, parquet_encoder, shard_row, write_jsonl

from .conftest import MODEL, make_pipeline

RECORDS = [{"id": f"d{i}", "text": f"page {i} about gardens and rivers " * 4} for i in range(30)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def emulator() -> Iterator[str]:
    """gcp-storage-emulator in its own process, so it does not compete with the pipeline for the GIL."""
    port = _free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gcp_storage_emulator",
            "start",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--in-memory",
            "--quiet",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("gcp-storage-emulator did not start") from None
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def gcs(emulator: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A storage client on the emulator, with Beam's GCS filesystem made anonymous."""
    from google.cloud import storage

    monkeypatch.setenv(EMULATOR_ENV, emulator)
    assert use_emulator_credentials()
    client = storage.Client.create_anonymous_client()
    try:
        yield client
    finally:
        reset_credentials()


def _bucket(client: Any, name: str) -> Any:
    bucket = client.bucket(name)
    if not bucket.exists():
        bucket = client.create_bucket(name)
    return bucket


def test_emulator_credentials_only_apply_when_the_variable_is_set() -> None:
    assert not use_emulator_credentials()


def test_read_one_bucket_write_shards_to_another(gcs: Any) -> None:
    src = _bucket(gcs, "tm-in")
    _bucket(gcs, "tm-out")
    src.blob("web/a.jsonl").upload_from_string(b"".join(json.dumps(r).encode() + b"\n" for r in RECORDS[:20]))
    src.blob("web/b.jsonl.gz").upload_from_string(
        gzip.compress(b"".join(json.dumps(r).encode() + b"\n" for r in RECORDS[20:]) + b"{broken\n")
    )
    source = SourceConfig(name="web", inputs=["gs://tm-in/web/*.jsonl", "gs://tm-in/web/*.gz"])
    p = make_pipeline()
    read = p | "Read" >> ReadSource(source, ReadConfig(split_bytes=1024))
    _ = (
        read.kept
        | "Shard" >> beam.Map(lambda d: (int(d["id"].split("d")[-1]) % 2, {**d, "epoch": 0}))
        | "WriteShards"
        >> WriteSortedFiles(
            "gs://tm-out/shards",
            "mix",
            2,
            "parquet",
            parquet_encoder(SHARD_SCHEMA, 100),
            lambda d: d["id"],
            shard_row,
        )
    )
    _ = (
        read.dead_letter
        | "DeadFile" >> beam.Map(lambda r: (0, r))
        | "WriteDead"
        >> WriteSortedFiles(
            "gs://tm-out/dead_letter", "dead_letter", 1, "jsonl", write_jsonl, lambda r: r["offset"]
        )
    )
    p.run()

    names = sorted(b.name for b in gcs.list_blobs("tm-out"))
    assert names == [
        "dead_letter/dead_letter-00000-of-00001.jsonl",
        "shards/mix-00000-of-00002.parquet",
        "shards/mix-00001-of-00002.parquet",
    ]
    ids = []
    for name in names[1:]:
        with FileSystems.open(f"gs://tm-out/{name}") as f:
            table = pq.read_table(io.BytesIO(f.read()))
        assert table.schema.equals(SHARD_SCHEMA, check_metadata=False)
        ids += table.column("id").to_pylist()
    assert sorted(ids) == sorted(f"web/d{i}" for i in range(30))
    dead = [json.loads(line) for line in gcs.bucket("tm-out").blob(names[0]).download_as_bytes().splitlines()]
    assert [(d["path"], d["error"].split(":")[0]) for d in dead] == [
        ("gs://tm-in/web/b.jsonl.gz", "bad_json")
    ]


def test_full_run_with_model_inputs_and_outputs_on_gcs(gcs: Any, tmp_path: Path) -> None:
    bucket = _bucket(gcs, "tm-run")
    bucket.blob("model/tropes-v1.ftz").upload_from_filename(str(MODEL))
    card = MODEL.with_name("tropes-v1.card.json")
    bucket.blob("model/tropes-v1.card.json").upload_from_filename(str(card))
    bucket.blob("in/pages.jsonl").upload_from_string(
        b"".join(json.dumps(r).encode() + b"\n" for r in RECORDS) + b"not json\n"
    )
    config = {
        # Dedup is covered elsewhere; off here to keep the run short.
        "sources": [{"name": "web", "inputs": ["gs://tm-run/in/*.jsonl"], "dedup": False}],
        "classifier": {"model": "gs://tm-run/model/tropes-v1.ftz"},
        "blend": {"sources": {"web": {"share": 1.0}}, "num_shards": 2},
        "output": {"path": "gs://tm-run/out", "format": "jsonl.zst"},
    }
    cfg = parse_config(yaml.safe_load(yaml.safe_dump(config)))
    with make_pipeline() as p:
        _ = p | BuildMix(cfg)
    report = read_report("gs://tm-run/out")
    assert report["conservation"]["ok"], report["conservation"]
    assert report["conservation"]["sources"]["web"]["records_seen"] == 31
    names = {b.name for b in gcs.list_blobs("tm-run", prefix="out/")}
    assert {"out/shards/mix-00000-of-00002.jsonl.zst", "out/report.json", "out/manifest.json"} <= names
    assert not [n for n in names if "/.tmp-" in n]


def test_classic_dataflow_template_is_written_to_gcs(gcs: Any) -> None:
    """``--template_location`` builds the job, stages it and writes a classic template, without running it."""
    from pipelines.run import main

    bucket = _bucket(gcs, "tm-tpl")
    config = {
        "sources": [{"name": "web", "inputs": ["gs://tm-tpl/in/*.jsonl"]}],
        "classifier": {"model": "gs://tm-tpl/model/tropes-v1.ftz"},
        "blend": {"sources": {"web": {"share": 1.0}}},
        "output": {"path": "gs://tm-tpl/out"},
    }
    bucket.blob("configs/mix.yaml").upload_from_string(yaml.safe_dump(config).encode())
    code = main(
        [
            "--config=gs://tm-tpl/configs/mix.yaml",
            "--runner=DataflowRunner",
            "--project=tropemix-test",
            "--region=us-central1",
            "--temp_location=gs://tm-tpl/tmp",
            "--staging_location=gs://tm-tpl/staging",
            "--template_location=gs://tm-tpl/templates/tropemix.json",
        ]
    )
    assert code == 0
    template = json.loads(bucket.blob("templates/tropemix.json").download_as_bytes())
    # A classic template is a Dataflow job description; nothing ran, so no output exists.
    assert template["environment"]["tempStoragePrefix"].startswith("storage.googleapis.com/tm-tpl/tmp/")
    assert "gs://tm-tpl/configs/mix.yaml" in json.dumps(template["environment"]["sdkPipelineOptions"])
    # The job's artifacts were staged to the emulator bucket too.
    assert [b.name for b in gcs.list_blobs("tm-tpl", prefix="staging/")]
    assert not list(gcs.list_blobs("tm-tpl", prefix="out/"))


def test_remote_model_without_card_is_refused_unless_allowed(
    gcs: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipelines.checks import UsageError
    from pipelines.cli import check_model_card
    from transforms.classify.model import UnverifiedModelError, localize_model

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    _bucket(gcs, "tm-model").blob("bare/tropes.ftz").upload_from_filename(str(MODEL))
    with pytest.raises(UnverifiedModelError, match=r"no model card with a sha256 .*--allow-unverified-model"):
        localize_model("gs://tm-model/bare/tropes.ftz")
    with pytest.raises(UsageError, match=r"--allow-unverified-model"):
        check_model_card("gs://tm-model/bare/tropes.ftz", allow_unverified=False)
    local = Path(localize_model("gs://tm-model/bare/tropes.ftz", allow_unverified=True))
    assert local.parent == tmp_path / "cache" / "tropemix" / "models"
    assert local.read_bytes() == MODEL.read_bytes()
    assert local.parent.stat().st_mode & 0o777 == 0o700


def test_rerun_on_gcs_replaces_the_published_run(gcs: Any) -> None:
    """Object stores have no directory rename: the old run goes, the new one appears with its marker last."""
    from transforms.io.publication import MARKER, completion, dir_exists, staging_dir

    bucket = _bucket(gcs, "tm-pub")
    bucket.blob("in/pages.jsonl").upload_from_string(
        b"".join(json.dumps(r).encode() + b"\n" for r in RECORDS)
    )
    for shards in (3, 2):
        config = {
            "sources": [
                {"name": "web", "inputs": ["gs://tm-pub/in/*.jsonl"], "classify": False, "dedup": False}
            ],
            "classifier": {"model": str(MODEL)},
            "blend": {"sources": {"web": {"share": 1.0}}, "num_shards": shards},
            "output": {"path": "gs://tm-pub/out", "format": "jsonl.zst"},
        }
        with make_pipeline() as p:
            _ = p | BuildMix(parse_config(yaml.safe_load(yaml.safe_dump(config))))
    names = sorted(b.name for b in gcs.list_blobs("tm-pub", prefix="out/"))
    assert [n for n in names if "/shards/" in n] == [
        "out/shards/mix-00000-of-00002.jsonl.zst",
        "out/shards/mix-00001-of-00002.jsonl.zst",
    ]
    assert f"out/{MARKER}" in names and "out/report.html" in names
    marker = completion("gs://tm-pub/out")
    assert marker is not None and sorted(marker["files"]) == sorted(
        n[4:] for n in names if n != f"out/{MARKER}"
    )
    assert not dir_exists(staging_dir("gs://tm-pub/out"))
