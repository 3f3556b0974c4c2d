"""Memory profile of a Dask run, per Beam step: which step held the memory, and did it grow with N.

Two halves:

* ``dask_setup`` is a Dask preload (``dask worker --preload benchmarks/memprofile.py``,
  likewise the scheduler): a daemon thread samples, every ``TROPEMIX_MEMPROFILE_INTERVAL``
  seconds (0.2), into ``$TROPEMIX_MEMPROFILE_DIR/<process>.jsonl``: RSS; on a worker,
  Dask's managed bytes (``managed`` all, ``fast`` in RAM, ``spilled``), glibc's heap
  (``used``: live malloc blocks; ``free``: freed pages glibc keeps, which Dask counts as
  unmanaged), the task keys executing and the Beam step running inside the task; on the
  scheduler, its task count.  The step is read off the executing thread's stack: the
  innermost ``run_bundle`` frame's ``spec.label`` (a fused task runs several ParDos in
  turn; the stack says which one is running now) and the innermost tropemix frame under
  ``transforms/`` (``io/write.py:process``...).  A task with no ``run_bundle`` on its
  stack (a GroupByKey's shuffle, a Reshuffle's repartition) is named by its key's layer
  through the ``layers.json`` map the driver writes (``TROPEMIX_DASK_LAYERS``,
  ``pipelines/dask_runner.py``).  ``TROPEMIX_MEMPROFILE_TRIM=SECONDS`` also calls
  ``malloc_trim(0)`` that often and records what it returned (an experiment).
* ``python benchmarks/memprofile.py DIR [DIR ...]`` reports, per step, seconds running,
  peak RSS while it ran, its largest RSS growth across one run of it (RSS at a sample
  minus RSS just before the run's first sample), and its largest *live* growth (glibc's
  ``used`` likewise: what the step allocated and still held, whether or not the heap had
  room for it, so it shows a step's own footprint where RSS is already at a high-water
  mark).  With several DIRs (one run per N) the columns sit side by side with the ratio
  of the last run's live growth to the first's, so a holder that grows with N stands out;
  a table of processes follows (peak RSS, managed in RAM, spilled, heap used / free).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import re
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

_PAGE = os.sysconf("SC_PAGE_SIZE")
MB = 1 << 20
# Where each profiled process writes its samples; unset, the preload does nothing.
DIR_ENV = "TROPEMIX_MEMPROFILE_DIR"


def _rss() -> int:
    with open("/proc/self/statm", "rb") as f:
        return int(f.read().split()[1]) * _PAGE


class _Mallinfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def _malloc_stats() -> dict[str, int]:
    """glibc's heap: ``used`` bytes handed out (live objects, Python's arenas included), ``free`` kept in the heap."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = _Mallinfo2
        info = libc.mallinfo2()
    except (OSError, AttributeError):
        return {}
    return {"used": info.uordblks + info.hblkhd, "free": info.fordblks}


def _executing_thread_frames() -> list[Any]:
    """The stacks (innermost first) of threads running a task's function."""
    out = []
    for ident, frame in sys._current_frames().items():
        if ident == threading.get_ident():
            continue
        frames = []
        f = frame
        while f is not None:
            frames.append(f)
            f = f.f_back
        if any(
            fr.f_code.co_name in ("apply_function_simple", "_run_task_simple", "execute_task")
            for fr in frames
        ):
            out.append(frames)
    return out


def _step_of(frames: Sequence[Any]) -> tuple[str | None, str | None]:
    """(Beam label of the innermost ``run_bundle``, innermost ``transforms/`` frame) of one stack."""
    label = where = None
    for fr in frames:  # innermost first
        code = fr.f_code
        if where is None and "/transforms/" in code.co_filename and "apache_beam" not in code.co_filename:
            where = f"{code.co_filename.rsplit('/transforms/', 1)[1]}:{code.co_name}"
        if code.co_name == "run_bundle" and code.co_filename.endswith("dask_runner.py"):
            spec = fr.f_locals.get("spec")
            label = getattr(spec, "label", None)
            break
        if (
            label is None
            and where is None
            and code.co_name in ("_read_splits", "groupby", "_concat", "repartition")
        ):
            where = f"dask:{code.co_name}"
    return label, where


def _key_name(key: Any) -> str:
    return str(key[0] if isinstance(key, tuple) else key)


def _spill_stats(worker: Any) -> dict[str, int]:
    """Dask's managed bytes held in RAM (``fast``) and spilled to disk (``spilled``, their in-RAM size)."""
    data = getattr(worker, "data", None)
    fast = getattr(getattr(data, "fast", None), "total_weight", None)
    spilled = getattr(data, "spilled_total", None)
    out = {}
    if fast is not None:
        out["fast"] = int(fast)
    if spilled is not None:
        out["spilled"] = int(spilled.memory)
    return out


def _sample_worker(worker: Any) -> dict[str, Any]:
    state = getattr(worker, "state", None)
    executing = [_key_name(ts.key) for ts in getattr(state, "executing", ())]
    steps = [_step_of(frames) for frames in _executing_thread_frames()]
    loop = _loop_where() if executing and not steps else None
    return {
        "rss": _rss(),
        "managed": getattr(state, "nbytes", None),
        **_spill_stats(worker),
        **_malloc_stats(),
        "keys": executing,
        "steps": [[label, where] for label, where in steps],
        **({"loop": loop} if loop else {}),
    }


def _loop_where() -> str | None:
    """What the event loop does while a task counts as executing but no thread runs it: ``zict/...``
    or ``distributed/spill.py:...`` is unspilling its inputs, ``pickle`` deserializing them."""
    main = threading.main_thread().ident
    frame = sys._current_frames().get(main) if main is not None else None
    while frame is not None:
        name = frame.f_code.co_filename
        if "/zict/" in name or "spill" in name or "serialize" in name or "pickle" in name:
            return f"{name.rsplit('/', 1)[-1]}:{frame.f_code.co_name}"
        frame = frame.f_back
    return None


def _sample_scheduler(scheduler: Any) -> dict[str, Any]:
    return {"rss": _rss(), "tasks": len(getattr(scheduler, "tasks", ()))}


def _trim() -> int:
    """Bytes of RSS glibc's ``malloc_trim(0)`` gave back to the OS (free pages inside the heap)."""
    before = _rss()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    return before - _rss()


def _loop(server: Any, path: Path, interval: float, sample: Any, trim_every: float) -> None:
    last_trim = time.monotonic()
    with path.open("a", buffering=1) as out:
        while True:
            try:
                row = {"t": round(time.time(), 3), **sample(server)}
                if trim_every and time.monotonic() - last_trim >= trim_every:
                    row["trimmed"] = _trim()
                    last_trim = time.monotonic()
            except Exception as err:  # a sample must never take the process down
                row = {"t": round(time.time(), 3), "rss": _rss(), "error": repr(err)}
            out.write(json.dumps(row) + "\n")
            time.sleep(interval)


def dask_setup(server: Any) -> None:
    """Dask preload hook: starts the sampler thread of this worker or scheduler."""
    folder = os.environ.get(DIR_ENV)
    if not folder:
        return
    interval = float(os.environ.get("TROPEMIX_MEMPROFILE_INTERVAL", "0.2"))
    # An experiment, not a measurement: trims glibc's heap every so many seconds and
    # records what that returned (``trimmed``), to tell free-but-kept heap pages from
    # live objects and Python's own arenas.
    trim_every = float(os.environ.get("TROPEMIX_MEMPROFILE_TRIM", "0"))
    is_worker = hasattr(server, "state") and hasattr(server, "executor")
    name = getattr(server, "name", None) if is_worker else "scheduler"
    path = Path(folder) / f"{name or os.getpid()}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    sample = _sample_worker if is_worker else _sample_scheduler
    threading.Thread(
        target=_loop, args=(server, path, interval, sample, trim_every), daemon=True, name="memprofile"
    ).start()


# ---------------------------------------------------------------- analysis

_TOKEN = re.compile(r"[0-9a-f]{32}")


def _layer_labels(folder: Path) -> dict[str, str]:
    path = folder / "layers.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _name_task(key: str, layers: dict[str, str]) -> str:
    if key in layers:
        return layers[key]
    token = _TOKEN.search(key)
    if token:
        for name, label in layers.items():
            if token.group(0) in name:
                return label
    return key


def step_name(row: dict[str, Any], layers: dict[str, str]) -> str | None:
    """The step a worker sample belongs to, or None when idle."""
    for label, where in row.get("steps", []):
        if label:
            return label
        if where:
            keys = row.get("keys") or ["?"]
            return f"{_name_task(keys[0], layers)} [{where}]"
    keys = row.get("keys")
    if keys:
        return f"{_name_task(keys[0], layers)} [{'unspill' if row.get('loop') else 'task'}]"
    return None


def _rows(path: Path) -> list[dict[str, Any]]:
    out = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(json.JSONDecodeError):  # the last line of a killed process
            out.append(json.loads(line))
    return out


def analyze(folder: Path, interval: float = 0.2) -> dict[str, Any]:
    """Per step and per process, what the samples in ``folder`` show (MB)."""
    layers = _layer_labels(folder)
    steps: dict[str, dict[str, float]] = {}
    procs: dict[str, dict[str, float]] = {}
    for path in sorted(folder.glob("*.jsonl")):
        rows = _rows(path)
        if not rows:
            continue
        procs[path.stem] = {
            "peak_rss_mb": max(r["rss"] for r in rows) / MB,
            "peak_tasks": max((r.get("tasks", 0) for r in rows), default=0),
            "peak_managed_mb": max(r.get("fast", r.get("managed") or 0) for r in rows) / MB,
            "peak_spilled_mb": max(r.get("spilled", 0) for r in rows) / MB,
            "seconds": rows[-1]["t"] - rows[0]["t"],
            "trimmed_mb": sum(r.get("trimmed", 0) for r in rows) / MB,
            "peak_heap_free_mb": max(r.get("free", 0) for r in rows) / MB,
            "peak_heap_used_mb": max(r.get("used", 0) for r in rows) / MB,
        }
        if path.stem == "scheduler":
            continue
        prev_rss, prev_used = rows[0]["rss"], rows[0].get("used", 0)
        run_name, run_start, used_start = None, 0, 0
        for row in rows:
            name = step_name(row, layers)
            if name != run_name:
                run_name, run_start, used_start = name, prev_rss, prev_used
            if name is not None:
                s = steps.setdefault(
                    name,
                    {
                        "samples": 0,
                        "peak_rss_mb": 0.0,
                        "growth_mb": 0.0,
                        "peak_unmanaged_mb": 0.0,
                        "live_mb": 0.0,
                    },
                )
                s["samples"] += 1
                s["peak_rss_mb"] = max(s["peak_rss_mb"], row["rss"] / MB)
                s["growth_mb"] = max(s["growth_mb"], (row["rss"] - run_start) / MB)
                unmanaged = row["rss"] - row.get("fast", row.get("managed") or 0)
                s["peak_unmanaged_mb"] = max(s["peak_unmanaged_mb"], unmanaged / MB)
                s["live_mb"] = max(s["live_mb"], (row.get("used", 0) - used_start) / MB)
            prev_rss, prev_used = row["rss"], row.get("used", 0)
    for s in steps.values():
        s["seconds"] = s["samples"] * interval
    return {"steps": steps, "processes": procs}


def run_title(folder: Path) -> str:
    """A run's column title: ``WORK/CORPUS`` when the folder is ``.../WORK/corpus-30k/memprofile``."""
    return f"{folder.parent.parent.name}/{folder.parent.name}" if folder.name == "memprofile" else folder.name


def _short(name: str, width: int = 70) -> str:
    return name if len(name) <= width else "..." + name[-(width - 3) :]


def table(folders: Sequence[Path], top: int = 30) -> str:
    """A Markdown table of the steps' peaks, one column group per run, sorted by the last run's peak."""
    runs = [analyze(f) for f in folders]
    names: set[str] = set()
    for r in runs:
        names |= set(r["steps"])
    titles = [run_title(f) for f in folders]

    def growth(name: str) -> float:
        return max(float(r["steps"].get(name, {}).get("live_mb", 0.0)) for r in runs)

    head = ["step"]
    for t in titles:
        head += [f"{t} s", f"{t} peak RSS", f"{t} RSS growth", f"{t} live growth"]
    if len(runs) > 1:
        head += ["live growth ratio"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name in sorted(names, key=growth, reverse=True)[:top]:
        cells = [_short(name)]
        for r in runs:
            s = r["steps"].get(name)
            cells += (
                [
                    f"{s['seconds']:.1f}",
                    f"{s['peak_rss_mb']:.0f}",
                    f"{s['growth_mb']:.0f}",
                    f"{s['live_mb']:.0f}",
                ]
                if s
                else ["-"] * 4
            )
        if len(runs) > 1:
            a, b = runs[0]["steps"].get(name), runs[-1]["steps"].get(name)
            cells.append(f"{b['live_mb'] / a['live_mb']:.1f}" if a and b and a["live_mb"] >= 1 else "-")
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("| process | " + " | ".join(f"{t} peak RSS MB (...)" for t in titles) + " |")
    lines.append("|---|" + "---|" * len(folders))
    for proc in sorted({p for r in runs for p in r["processes"]}):
        cells = []
        for r in runs:
            p = r["processes"].get(proc)
            if p is None:
                cells.append("-")
                continue
            extra = (
                f"{p['peak_tasks']:.0f} tasks"
                if p["peak_tasks"]
                else f"{p['peak_managed_mb']:.0f} managed in RAM, {p['peak_spilled_mb']:.0f} spilled,"
                f" heap {p['peak_heap_used_mb']:.0f} used"
                f" / {p['peak_heap_free_mb']:.0f} free"
            )
            if p.get("trimmed_mb"):
                extra += f", {p['trimmed_mb']:.0f} trimmed"
            cells.append(f"{p['peak_rss_mb']:.0f} ({extra})")
        lines.append(f"| {proc} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folders", type=Path, nargs="+", help="TROPEMIX_MEMPROFILE_DIR of each run")
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(list(argv) if argv is not None else None)
    if args.json:
        print(json.dumps({str(f): analyze(f) for f in args.folders}, indent=1))
    else:
        print(table(args.folders, args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
