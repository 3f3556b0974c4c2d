"""The whole tropemix DAG on a local Dask cluster: wall time, CPU per document, peak RSS per process.

Also the peak of the workers' scratch directories (spilled partitions and P2P shuffle
files), sampled every 5 s.

For every corpus (``benchmarks/corpus.py`` output) it starts a ``dask scheduler`` and
``--workers`` single-thread ``dask worker`` processes on 127.0.0.1 with
``--memory-limit`` each (Dask spills partitions to ``--local-directory`` past 60% of
it and pauses the worker at 80%), runs ``python -m pipelines.run --runner=dask``
against it, stops the cluster by PID, and measures the whole process tree
(``benchmarks/harness.py``)::

    python benchmarks/dask_scale.py --corpus /tmp/tropemix-bench/corpus-10k /tmp/tropemix-bench/corpus-100k

Wall time includes starting the cluster (a few seconds).

``--profile-memory`` preloads ``benchmarks/memprofile.py`` into the scheduler and every
worker (RSS, managed bytes and the Beam step executing, every 0.2 s, into
``WORK/CORPUS/memprofile/``) and writes the per-step table to ``memprofile.md`` there;
compare runs with ``python benchmarks/memprofile.py WORK/corpus-10k/memprofile
WORK/corpus-30k/memprofile``.  ``--config-json`` merges extra settings into the config
(``'{"output": {"ledger_shards": 8}}'``) to measure a config-only mitigation.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks import memprofile  # noqa: E402
from benchmarks.harness import measure  # noqa: E402
from benchmarks.vs_datatrove import tropemix_config  # noqa: E402
from pipelines.dask_runner import LAYERS_ENV  # noqa: E402

ROLES = ("dask scheduler", "dask worker", "pipelines.run")


# What Dask's nanny gives the workers it starts (these run without one, so a PID is a
# worker): glibc returns freed memory to the OS, which a worker's memory limit counts.
# Without it a worker past 80% of its limit stayed paused for good at 100k documents.
WORKER_ENV = {"MALLOC_TRIM_THRESHOLD_": "65536", "MALLOC_ARENA_MAX": "2"}


def _start(cmd: list[str], log: Path, extra_env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    env = {**os.environ, **WORKER_ENV, **(extra_env or {})}
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)


def _scheduler_address(scheduler_file: Path) -> str:
    # The scheduler writes the file once it listens; nothing to wait on but the file.
    while True:
        text = scheduler_file.read_text() if scheduler_file.exists() else ""
        if text.strip().endswith("}"):
            address: str = json.loads(text)["address"]
            return address
        time.sleep(0.1)


def serve_and_run(
    config: Path, work: Path, workers: int, memory_limit: str, partitions: int, profile: bool = False
) -> int:
    """Starts the cluster, runs the DAG on it, stops the cluster by PID; returns the run's exit status.

    Args:
      config: the tropemix config.
      work: scratch directory for logs and spilled partitions.
      workers: single-thread worker processes.
      memory_limit: each worker's memory limit (``2GB``).
      partitions: ``--dask_npartitions``.
      profile: sample every process's memory per step into ``work/memprofile`` (``memprofile.py``).
    """
    dask = str(Path(sys.executable).parent / "dask")
    scheduler_file = work / "scheduler.json"
    scheduler = [dask, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard"]
    env: dict[str, str] = {}
    preload: list[str] = []
    if profile:
        (work / "memprofile").mkdir(exist_ok=True)
        env = {memprofile.DIR_ENV: str(work / "memprofile")}
        preload = ["--preload", str(REPO / "benchmarks" / "memprofile.py")]
    procs = [
        _start([*scheduler, *preload, "--scheduler-file", str(scheduler_file)], work / "scheduler.log", env)
    ]
    try:
        address = _scheduler_address(scheduler_file)
        worker = [dask, "worker", "--scheduler-file", str(scheduler_file), "--nthreads", "1", "--no-nanny"]
        worker += ["--no-dashboard", "--host", "127.0.0.1", "--memory-limit", memory_limit, *preload]
        for i in range(workers):
            name = f"worker-{i}"
            procs.append(
                _start(
                    [*worker, "--local-directory", str(work / name), "--name", name],
                    work / f"{name}.log",
                    env,
                )
            )
        run = [sys.executable, "-m", "pipelines.run", "--config", str(config), "--runner=dask"]
        run += [f"--dask_client_address={address}", f"--dask_npartitions={partitions}"]
        run_env = {**os.environ}
        if profile:
            run_env[LAYERS_ENV] = str(work / "memprofile" / "layers.json")
        with (work / "tropemix.log").open("wb") as log:
            return subprocess.call(run, cwd=REPO, env=run_env, stdout=log, stderr=subprocess.STDOUT)
    finally:
        for proc in reversed(procs):
            os.kill(proc.pid, signal.SIGTERM)
            proc.wait()


def by_role(values: dict[str, float]) -> dict[str, float]:
    """``pid:command`` -> value of the cluster's processes, named by role (``dask worker #1``, ...).

    Args:
      values: a ``Measurement``'s ``peak_rss_mb`` or ``cpu_by_process_s``.
    """
    out: dict[str, float] = {}
    for key, mb in sorted(values.items()):
        role = next((r for r in ROLES if r in key), None)
        if role is None:
            continue
        n = sum(1 for k in out if k.startswith(role))
        out[f"{role} #{n}" if role == "dask worker" else role] = round(mb)
    return out


class ScratchPeak(threading.Thread):
    """Samples the bytes under the workers' scratch directories (spill and P2P buffers) every 5 s.

    Args:
      work: the run's work directory; workers scratch in ``work/worker-*``.
    """

    def __init__(self, work: Path) -> None:
        super().__init__(daemon=True)
        self._work, self._done, self.peak_mb = work, threading.Event(), 0.0

    def run(self) -> None:
        while not self._done.wait(5.0):
            total = 0
            for scratch in self._work.glob("worker-*/"):
                for root, _, files in os.walk(scratch):
                    total += sum(_size(os.path.join(root, f)) for f in files)
            self.peak_mb = max(self.peak_mb, total / 2**20)

    def stop(self) -> float:
        """Stops sampling; returns the peak in MB."""
        self._done.set()
        self.join()
        return round(self.peak_mb)


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:  # spilled and deleted between listing and stat
        return 0


def bench(corpus: Path, args: argparse.Namespace) -> dict[str, Any]:
    """One measured run over ``corpus``; returns its row."""
    work = args.work / corpus.name
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    cfg = _merge(tropemix_config(corpus, work / "out", args.model, args), json.loads(args.config_json))
    config = work / "tropemix.yaml"
    config.write_text(json.dumps(cfg))
    inner = [sys.executable, __file__, "--serve", str(config), "--work", str(work)]
    inner += ["--workers", str(args.workers), "--memory-limit", args.memory_limit]
    inner += ["--partitions", str(args.partitions)] + (["--profile-memory"] if args.profile_memory else [])
    scratch = ScratchPeak(work)
    scratch.start()
    m = measure(
        inner, env={**os.environ, "PYTHONPATH": str(REPO)}, cwd=str(REPO), log=str(work / "serve.log")
    )
    peak_scratch_mb = scratch.stop()
    report = json.loads((work / "out" / "report.json").read_text()) if m.returncode == 0 else {}
    docs = json.loads((corpus / "corpus.json").read_text())["docs"]
    profile = {}
    if args.profile_memory:
        (work / "memprofile.md").write_text(memprofile.table([work / "memprofile"]) + "\n")
        profile = {"memprofile": str(work / "memprofile.md")}
    return {
        "docs": docs,
        "returncode": m.returncode,
        "wall_s": round(m.wall_s, 1),
        "docs_per_s": round(docs / m.wall_s, 1),
        "cpu_ms_per_doc": round(1000 * m.cpu_s / docs, 2),
        "peak_rss_mb": by_role(m.peak_rss_mb),
        "cpu_s": by_role(m.cpu_by_process_s),
        "peak_total_rss_mb": round(m.peak_total_rss_mb),
        "peak_scratch_mb": peak_scratch_mb,
        "conservation": report.get("conservation", {}).get("summary"),
        # Dask logs when a worker's memory passes its pause threshold or unmanaged memory is high.
        "memory_warnings": sum(
            log.read_text(errors="replace").count("memory") for log in work.glob("worker-*.log")
        ),
        **profile,
    }


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``extra``'s settings, nested mappings merged key by key."""
    out = dict(base)
    for key, value in extra.items():
        out[key] = (
            _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
        )
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", type=Path, nargs="*", default=[])
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--memory-limit", default="2GB", help="per worker; spills at 60%%, pauses at 80%%")
    parser.add_argument("--partitions", type=int, default=16, help="--dask_npartitions")
    parser.add_argument("--model", type=Path, default=REPO / "models" / "tropes-v1.ftz")
    parser.add_argument("--ngram", type=int, default=5)
    parser.add_argument("--num-perm", type=int, default=128)
    parser.add_argument("--threshold", type=float, default=0.8)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--num-shards", type=int, default=4)
    parser.add_argument("--work", type=Path, default=Path("/tmp/tropemix-bench/dask"))
    parser.add_argument(
        "--profile-memory", action="store_true", help="per-step memory profile (memprofile.py)"
    )
    parser.add_argument("--config-json", default="{}", help="settings merged into the config, as JSON")
    args = parser.parse_args(argv)
    if args.serve:
        return serve_and_run(
            args.serve, args.work, args.workers, args.memory_limit, args.partitions, args.profile_memory
        )
    for corpus in args.corpus:
        print(json.dumps(bench(corpus, args)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
