"""Atomic publication: staging, the completion marker, refusal of unfinished outputs, kills and reruns."""

from __future__ import annotations

import glob
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipelines.cli import main as cli_main
from pipelines.stages import run_dedup
from schemas.config import DedupConfig
from transforms.dedup.index import check_index
from transforms.io.publication import MARKER, OutputError, completion, prepare_output, publish, staging_dir

from .conftest import FN_API_RUNNER, REPO

RUNNER = f"--runner={FN_API_RUNNER}"


def tiny_config(tmp: Path, out: Path, num_shards: int = 3, records: int = 40) -> Path:
    """A fast config: one small JSONL source, no classifier, dedup on (so a dedup index is written)."""
    src = tmp / "in" / "pages.jsonl"
    src.parent.mkdir(parents=True, exist_ok=True)
    rows = [
        {"id": f"p{i}", "text": f"page {i} about gardens and rivers number {i * 7}"} for i in range(records)
    ]
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = {
        "sources": [{"name": "web", "inputs": [str(src)], "classify": False}],
        "classifier": {"model": str(REPO / "models" / "tropes-v1.ftz")},
        "blend": {"sources": {"web": {"share": 1.0}}, "num_shards": num_shards},
        "output": {"path": str(out)},
    }
    path = tmp / f"tiny-{num_shards}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def published_bytes(out: Path) -> dict[str, str]:
    """sha256 per file of a published run, except the report files that carry timing."""
    return {
        os.path.relpath(p, out): hashlib.sha256(Path(p).read_bytes()).hexdigest()
        for p in sorted(glob.glob(f"{out}/**", recursive=True))
        if os.path.isfile(p) and os.path.basename(p) not in ("report.json", "report.html")
    }


def test_rerun_with_fewer_shards_leaves_only_the_new_run(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert cli_main(["run", str(tiny_config(tmp_path, out, num_shards=4)), "--", RUNNER]) == 0
    assert len(list((out / "shards").iterdir())) == 4
    assert cli_main(["run", str(tiny_config(tmp_path, out, num_shards=2)), "--", RUNNER]) == 0
    shards = sorted(p.name for p in (out / "shards").iterdir())
    assert shards == ["mix-00000-of-00002.parquet", "mix-00001-of-00002.parquet"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert [Path(s["path"]) for s in manifest["shards"]] == [out / "shards" / name for name in shards]
    marker = completion(str(out))
    assert marker is not None
    assert marker["manifest_sha256"] == hashlib.sha256((out / "manifest.json").read_bytes()).hexdigest()
    assert set(marker["files"]) == {f for f in published_bytes(out) if f != MARKER} | {
        "report.json",
        "report.html",
    }
    assert not Path(staging_dir(str(out))).exists()


def test_output_without_marker_is_refused_unless_overwrite(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    (out / "shards").mkdir(parents=True)
    (out / "shards" / "mix-00000-of-00008.parquet").write_bytes(b"left by a killed run")
    config = str(tiny_config(tmp_path, out))
    assert cli_main(["run", config, "--", RUNNER]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no _COMPLETE marker" in err[0] and "--overwrite" in err[0]
    assert cli_main(["run", config, "--overwrite", "--", RUNNER]) == 0
    assert not (out / "shards" / "mix-00000-of-00008.parquet").exists()
    assert completion(str(out)) is not None


def test_failed_run_publishes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    config = tiny_config(tmp_path, out)
    data = yaml.safe_load(config.read_text())
    # 1000 documents from 40, at most one epoch: the plan cannot be met.
    data["blend"] = {"sources": {"web": {"target": 1000}}}
    config.write_text(yaml.safe_dump(data))
    assert cli_main(["run", str(config), "--", RUNNER]) == 3
    assert "cannot be met" in capsys.readouterr().err
    assert not out.exists()


def test_marker_must_match_the_manifest(tmp_path: Path) -> None:
    staged, final = tmp_path / ".run.staging", tmp_path / "run"
    (staged / "shards").mkdir(parents=True)
    (staged / "shards" / "a.parquet").write_bytes(b"rows")
    (staged / "manifest.json").write_text('{"shards": 1}')
    publish(str(staged), str(final), overwrite=False)
    assert completion(str(final)) == {
        "files": ["manifest.json", "shards/a.parquet"],
        "manifest_sha256": hashlib.sha256(b'{"shards": 1}').hexdigest(),
    }
    (final / "manifest.json").write_text('{"shards": 2}')
    assert completion(str(final)) is None


def test_previous_index_of_an_unfinished_run_is_refused(tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text(
        "".join(json.dumps({"id": f"d{i}", "text": f"text number {i} here"}) + "\n" for i in range(5))
    )
    first = tmp_path / "first"
    run_dedup(str(src), str(first), DedupConfig(), 1, [RUNNER])
    index = str(first / "dedup_index" / "*.parquet")
    check_index([index], DedupConfig())
    (first / MARKER).unlink()
    with pytest.raises(OutputError, match=r"dedup.previous_index: .* no valid _COMPLETE marker"):
        check_index([index], DedupConfig())


def _run_cli(config: Path, *flags: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "pipelines.cli", "run", str(config), *flags, "--", RUNNER],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A clean run's published bytes, and how long it took (the kill points are drawn from that span)."""
    tmp = tmp_path_factory.mktemp("kill")
    out = tmp / "out"
    config = tiny_config(tmp, out)
    start = time.monotonic()
    assert _run_cli(config).wait() == 0
    return {"config": config, "out": out, "bytes": published_bytes(out), "seconds": time.monotonic() - start}


# Each example is two runs in a subprocess (about 25 s on 2 cores); three keep the suite fast.
@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(point=st.floats(min_value=0.1, max_value=1.1))
def test_killed_run_is_absent_or_identical_and_a_rerun_finishes(
    clean_run: dict[str, Any], point: float
) -> None:
    out: Path = clean_run["out"]
    proc = _run_cli(clean_run["config"])
    try:
        proc.wait(timeout=point * clean_run["seconds"])
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    # Whatever the kill interrupted, the output is the clean run's or nothing.
    if out.exists():
        assert completion(str(out)) is not None
        assert published_bytes(out) == clean_run["bytes"]
    assert _run_cli(clean_run["config"]).wait() == 0
    assert published_bytes(out) == clean_run["bytes"]


def test_an_interrupted_publication_is_taken_over_by_the_rerun(tmp_path: Path) -> None:
    # What a kill halfway through an object-store publication leaves: some files in the
    # final directory, no marker there, and the marked staging directory.
    final, staged = tmp_path / "run", Path(staging_dir(str(tmp_path / "run")))
    (final / "shards").mkdir(parents=True)
    (final / "shards" / "mix-00000-of-00002.parquet").write_bytes(b"half published")
    (staged / "shards").mkdir(parents=True)
    (staged / "manifest.json").write_text("{}")
    (staged / MARKER).write_text(json.dumps({"manifest_sha256": None, "files": []}))
    assert prepare_output(str(final), overwrite=False) == str(staged)
    assert not staged.exists() and not final.exists()
    # Without the staging marker the same files are a failed run's, and refused.
    (final / "shards").mkdir(parents=True)
    (final / "shards" / "mix-00000-of-00002.parquet").write_bytes(b"half published")
    with pytest.raises(OutputError, match=r"holds 1 files .* no _COMPLETE marker"):
        prepare_output(str(final), overwrite=False)
