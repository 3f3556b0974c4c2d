"""Shared fixtures: paths, the in-process runner, and the shipped model."""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"
MODEL = REPO / "models" / "tropes-v1.ftz"
DEMO_CONFIG = REPO / "examples" / "demo.yaml"
FN_API_RUNNER = "apache_beam.runners.portability.fn_api_runner.FnApiRunner"


def write_demo_config(directory: Path, out: Path, data: dict[str, Any] | None = None) -> Path:
    """Writes ``data`` (default: the demo config) into ``directory`` with absolute paths and ``out`` as output.

    The demo config's relative paths are relative to examples/, so a copy elsewhere
    needs them made absolute.
    """
    data = copy.deepcopy(data if data is not None else yaml.safe_load(DEMO_CONFIG.read_text()))
    base = DEMO_CONFIG.parent
    for s in data["sources"]:
        s["inputs"] = [str(base / p) for p in s["inputs"]]
    data["classifier"]["model"] = str(base / data["classifier"]["model"])
    data["output"]["path"] = str(out)
    path = directory / "demo.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def make_pipeline(*extra: str) -> TestPipeline:
    """A TestPipeline on the in-process runner (the DirectRunner would try to fetch Prism)."""
    options = PipelineOptions([f"--runner={FN_API_RUNNER}", *extra])
    return TestPipeline(runner=FN_API_RUNNER, options=options, blocking=True)


@pytest.fixture
def pipeline() -> TestPipeline:
    return make_pipeline()


@pytest.fixture(scope="session")
def model_path() -> str:
    assert MODEL.exists(), "models/tropes-v1.ftz is missing; rebuild it with `make model`"
    return str(MODEL)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.exists():
        pytest.skip(f"{SHARED_DATA} is not present")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def _no_ambient_gcs(monkeypatch: pytest.MonkeyPatch) -> None:
    # Tests never talk to real Google Cloud; only the emulator fixture sets this.
    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
    os.environ.setdefault("GOOGLE_CLOUD_PROJECT", "tropemix-test")


@pytest.fixture(scope="session")
def bpe_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A small byte-level BPE ``tokenizer.json`` trained here on the demo stories and constitution.

    Nothing can be downloaded, so tests train their own real BPE (deterministic, ~1 s).
    """
    import json

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    demo = REPO / "examples" / "demo"
    texts = [p.read_text(encoding="utf-8") for p in sorted((demo / "constitution").glob("*.md"))]
    texts += [
        json.loads(line)["text"] for line in (demo / "stories" / "stories.jsonl").read_text().splitlines()
    ]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=2000, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tok.train_from_iterator(texts, trainer)
    path = tmp_path_factory.mktemp("tokenizer") / "tokenizer.json"
    tok.save(str(path))
    return str(path)


@dataclass
class DaskCluster:
    """A Dask scheduler and its workers, each a separate process on 127.0.0.1.

    Args:
      address: the scheduler's ``host:port``.
      scheduler_file: the JSON file workers find the scheduler by.
      processes: the scheduler's and the workers' processes, stopped by PID at the end.
      workdir: where their logs and scratch space are.
    """

    address: str
    scheduler_file: Path
    processes: list[subprocess.Popen[bytes]]
    workdir: Path

    def start_worker(self, name: str, memory_limit: str = "2GB") -> subprocess.Popen[bytes]:
        """Starts one single-thread ``dask worker`` process (no nanny, so its PID is the worker)."""
        log = (self.workdir / f"{name}.log").open("wb")
        proc = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "dask"),
                "worker",
                "--scheduler-file",
                str(self.scheduler_file),
                "--name",
                name,
                "--nthreads",
                "1",
                "--no-nanny",
                "--no-dashboard",
                "--host",
                "127.0.0.1",
                "--memory-limit",
                memory_limit,
                "--local-directory",
                str(self.workdir / name),
            ],
            # Workers import the DoFns of tests/ by module name.
            env={**os.environ, "PYTHONPATH": str(REPO)},
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.processes.append(proc)
        return proc

    def wait_for_workers(self, n: int) -> None:
        """Blocks until ``n`` workers are registered with the scheduler."""
        from distributed import Client

        with Client(self.address, timeout=60) as client:
            client.wait_for_workers(n, timeout=120)


def _scheduler_address(scheduler: subprocess.Popen[bytes], scheduler_file: Path) -> str:
    """The ``host:port`` the scheduler writes to its file once it listens.

    Polled: the file appears, possibly still empty, with no event to wait on.
    """
    while scheduler.poll() is None:
        text = scheduler_file.read_text() if scheduler_file.exists() else ""
        if text.strip().endswith("}"):
            address: str = json.loads(text)["address"]
            return address.removeprefix("tcp://")
        time.sleep(0.1)
    raise RuntimeError(f"dask scheduler exited with status {scheduler.returncode}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture(scope="session")
def dask_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaskCluster]:
    """``dask scheduler`` and two single-thread ``dask worker`` processes on 127.0.0.1, stopped by PID."""
    pytest.importorskip("distributed", reason="apache-beam[dask] is in the test extra")
    workdir = tmp_path_factory.mktemp("dask")
    scheduler_file = workdir / "scheduler.json"
    log = (workdir / "scheduler.log").open("wb")
    scheduler = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "dask"),
            "scheduler",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--no-dashboard",
            "--scheduler-file",
            str(scheduler_file),
        ],
        # The scheduler unpickles task graphs, which name DoFns of tests/ by module.
        env={**os.environ, "PYTHONPATH": str(REPO)},
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    cluster = DaskCluster("", scheduler_file, [scheduler], workdir)
    try:
        cluster.address = _scheduler_address(scheduler, scheduler_file)
        for i in range(2):
            cluster.start_worker(f"worker-{i}")
        cluster.wait_for_workers(2)
        yield cluster
    finally:
        for proc in reversed(cluster.processes):
            _stop(proc)
