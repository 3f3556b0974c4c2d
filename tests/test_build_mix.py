"""The whole DAG on the demo corpus: outputs, conservation, shares, determinism."""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import apache_beam as beam
import pyarrow.parquet as pq
import pytest
from apache_beam.runners.portability.fn_api_runner import worker_handlers
from apache_beam.runners.worker import data_plane
from apache_beam.testing.test_pipeline import TestPipeline

import transforms.dedup.deduplicate
from pipelines.cli import main as cli_main
from pipelines.run import run
from pipelines.runner import pipeline_options, raise_unwrapped
from schemas.config import MixConfig
from schemas.loading import load_config
from transforms.blend.plan_model import PlanError
from transforms.io.ids import DuplicateIdError
from transforms.io.publication import staging_dir
from transforms.report.conservation import JOIN_LOSS, JoinIntegrityError

from .conftest import DEMO_CONFIG, FN_API_RUNNER, write_demo_config


def _config(out: Path) -> MixConfig:
    cfg = load_config(str(DEMO_CONFIG))
    return cfg.model_copy(update={"output": cfg.output.model_copy(update={"path": str(out)})})


def _output_hashes(out: Path) -> dict[str, str]:
    """sha256 of every shard, ledger and dead-letter file of a run, by relative path."""
    return {
        str(Path(p).relative_to(out)): hashlib.sha256(Path(p).read_bytes()).hexdigest()
        for folder in ("shards", "ledger", "dead_letter")
        for p in sorted(glob.glob(f"{out}/{folder}/*"))
    }


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[MixConfig, Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("demo")
    cfg = _config(out)
    report = run(cfg, [f"--runner={FN_API_RUNNER}"])
    return cfg, out, report


def test_demo_writes_every_output(demo_run: tuple[MixConfig, Path, dict[str, Any]]) -> None:
    _, out, report = demo_run
    assert sorted(p.name for p in out.iterdir()) == [
        "_COMPLETE",
        "dead_letter",
        "dedup_index",
        "ledger",
        "manifest.json",
        "report.html",
        "report.json",
        "shards",
    ]
    assert len(list((out / "shards").glob("mix-*-of-00004.parquet"))) == 4
    assert report["status"] == "ok"
    assert report["conservation"]["ok"]
    assert not list(out.rglob(".tmp-*"))


def test_conservation_matches_the_files(demo_run: tuple[MixConfig, Path, dict[str, Any]]) -> None:
    _, out, report = demo_run
    shards = pq.read_table(sorted(glob.glob(f"{out}/shards/*.parquet")))
    ledger = pq.read_table(sorted(glob.glob(f"{out}/ledger/*.parquet"))).to_pylist()
    dead = [
        json.loads(line)
        for line in (out / "dead_letter" / "dead_letter-00000-of-00001.jsonl").read_text().splitlines()
    ]
    # The three deliberately bad lines of the demo web file.
    assert len(dead) == 3
    assert all({"source", "path", "offset", "stage", "error", "raw"} <= set(d) for d in dead)
    ids = [r["id"] for r in ledger]
    assert len(ids) == len(set(ids)), "one ledger row per document"
    written = {r["id"]: r["copies"] for r in ledger if r["fate"] == "written"}
    shard_ids = Counter(shards.column("id").to_pylist())
    assert shard_ids == Counter(written)
    epoch0 = sum(1 for e in shards.column("epoch").to_pylist() if e == 0)
    for name, s in report["conservation"]["sources"].items():
        assert s["records_in"] == s["documents_written"] + sum(s["dropped"].values()) + s["dead_letters"], (
            name
        )
    assert epoch0 == len(written)
    total_in = sum(s["records_in"] for s in report["conservation"]["sources"].values())
    assert total_in == len(ledger) + len(dead)


def test_realized_shares_within_one_document(demo_run: tuple[MixConfig, Path, dict[str, Any]]) -> None:
    cfg, out, report = demo_run
    manifest = json.loads((out / "manifest.json").read_text())
    total = sum(s["rows"] for s in manifest["shards"])
    for name, src in cfg.blend.sources.items():
        realized = sum(s["by_source"].get(name, 0) for s in manifest["shards"])
        assert abs(realized - src.share * total) <= 1, (name, realized, src.share * total)
        per_shard = [s["by_source"].get(name, 0) for s in manifest["shards"]]
        assert max(per_shard) - min(per_shard) <= 1, (name, per_shard)
        assert report["realized"][name]["realized"] == realized
    for shard in manifest["shards"]:
        assert hashlib.sha256(Path(shard["path"]).read_bytes()).hexdigest() == shard["sha256"]


def test_byte_identical_across_worker_counts(
    demo_run: tuple[MixConfig, Path, dict[str, Any]], tmp_path: Path
) -> None:
    _, first, _ = demo_run
    cfg = _config(tmp_path)
    run(cfg, [f"--runner={FN_API_RUNNER}", "--direct_num_workers=2", "--direct_running_mode=multi_threading"])
    hashes = _output_hashes(tmp_path)
    assert any(name.startswith("ledger/") for name in hashes)
    assert hashes == _output_hashes(first)


def _prism() -> str | None:
    """A Prism runner binary: ``$TROPEMIX_PRISM``, the one ``make prism`` builds, or one on PATH."""
    candidates = [
        os.environ.get("TROPEMIX_PRISM"),
        str(Path(sys.executable).parent / "prism"),
        shutil.which("prism"),
    ]
    return next((c for c in candidates if c and Path(c).is_file()), None)


@pytest.mark.skipif(_prism() is None, reason="no Prism binary; `make prism` builds one (needs Go)")
def test_byte_identical_on_the_prism_runner(
    demo_run: tuple[MixConfig, Path, dict[str, Any]], tmp_path: Path
) -> None:
    _, first, _ = demo_run
    report = run(_config(tmp_path), ["--runner=PrismRunner", f"--prism_location={_prism()}"])
    assert report is not None and report["conservation"]["ok"]
    hashes = _output_hashes(tmp_path)
    assert hashes and hashes == _output_hashes(first)


def test_a_stage_that_loses_documents_fails_the_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    original = transforms.dedup.deduplicate._apply

    def leaky(item: tuple[str, dict[str, Any]]) -> Iterator[Any]:
        # Silently loses every document whose id ends in 7: no ledger row, no count.
        if item[0][-1].endswith("7"):  # the key is the winner node; its last element is the id
            return
        yield from original(item)

    monkeypatch.setattr(transforms.dedup.deduplicate, "_apply", leaky)
    with pytest.raises(Exception, match=r"conservation FAILED") as err:
        run(_config(tmp_path), [f"--runner={FN_API_RUNNER}"])
    assert "MISMATCH" in str(err.value)
    # Not published: the report stays in the staging directory the message names.
    assert not any(tmp_path.iterdir())
    report = json.loads((Path(staging_dir(str(tmp_path))) / "report.json").read_text())
    assert report["status"] == "conservation_failed"
    assert any("MISMATCH stage dedup" in line for line in report["conservation"]["lines"])


def test_cli_run_prints_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_demo_config(tmp_path, tmp_path / "out")
    assert cli_main(["run", str(config)]) == 0
    printed = capsys.readouterr().out
    assert "conservation OK" in printed
    assert f"{tmp_path}/out/shards/" in printed


def test_a_portable_runners_wrapped_error_surfaces_as_its_type() -> None:
    # Multi-process workers, Prism and Dataflow carry a DoFn's traceback as text.
    name = f"{JoinIntegrityError.__module__}.{JoinIntegrityError.__qualname__}"
    wrapped = RuntimeError(
        f"Pipeline job failed: Traceback ...\n{name}: DocJoin: web/a has its "
        f"exact group's keys or copies but no dedup decision; {JOIN_LOSS} [while running 'Dedup/ApplyDecisions']"
    )
    with pytest.raises(JoinIntegrityError) as caught:
        raise_unwrapped(wrapped, PlanError, JoinIntegrityError)
    assert (
        str(caught.value)
        == f"DocJoin: web/a has its exact group's keys or copies but no dedup decision; {JOIN_LOSS}"
    )
    # The same words under another type are not a join loss: left to the caller.
    raise_unwrapped(RuntimeError(f"Traceback ...\nValueError: DocJoin: {JOIN_LOSS}"), JoinIntegrityError)


def test_the_in_process_runners_wrapped_error_surfaces_as_its_type() -> None:
    def fail(_: int) -> int:
        raise DuplicateIdError("any wording at all")

    with pytest.raises(DuplicateIdError, match=r"^any wording at all$"):
        try:
            with TestPipeline(options=pipeline_options([])) as p:
                _ = p | beam.Create([1]) | "Fail" >> beam.Map(fail)
        except Exception as err:
            raise_unwrapped(err, PlanError, DuplicateIdError)
            raise


def test_local_runs_stop_the_runners_timed_flush(monkeypatch: pytest.MonkeyPatch) -> None:
    # Beam's default; any earlier local run in this process has already set it to 0.
    monkeypatch.setattr(worker_handlers, "DATA_BUFFER_TIME_LIMIT_MS", 1000)
    pipeline_options([])  # the options every tropemix pipeline runs with; local by default
    # The runner builds its data servicer from the constant; with 0 a bundle input is
    # sent when its stream closes, and no timer thread races the runner's writes.
    servicer = data_plane.BeamFnDataServicer(worker_handlers.DATA_BUFFER_TIME_LIMIT_MS)
    stream = servicer.get_conn_by_worker_id("worker").output_stream("bundle", "input")
    assert not isinstance(stream, data_plane.TimeBasedBufferingClosableOutputStream)
