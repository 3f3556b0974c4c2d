"""Measures a command: wall time, CPU seconds of its whole process tree, peak RSS per process.

CPU is the larger of ``RUSAGE_CHILDREN`` (descendants that were waited for) and
the sum over sampled processes of their last seen ``utime + stime`` from
``/proc``: pool workers reaped by a forkserver (datatrove's executor) never reach
our ``RUSAGE_CHILDREN``, and sampling misses only each process's last interval.  Peak RSS per process is sampled
from ``/proc`` every ``interval`` seconds over the command's process tree, so a
spike shorter than the interval can be missed.
"""

from __future__ import annotations

import os
import resource
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

_PAGE = os.sysconf("SC_PAGE_SIZE")
_TICK = os.sysconf("SC_CLK_TCK")


@dataclass
class Measurement:
    """What one run of a command cost.

    Args:
      wall_s: elapsed seconds.
      cpu_s: user + system CPU seconds of the whole process tree.
      peak_rss_mb: sampled peak resident MB per process, keyed ``pid:command``.
      peak_total_rss_mb: sampled peak of the tree's summed resident MB.
      cpu_by_process_s: last sampled CPU seconds per process, keyed like ``peak_rss_mb``
        (a process's final ~``interval`` of CPU is missed).
      returncode: the command's exit status.
      stdout: its standard output.
    """

    wall_s: float
    cpu_s: float
    peak_rss_mb: dict[str, float] = field(default_factory=dict)
    peak_total_rss_mb: float = 0.0
    cpu_by_process_s: dict[str, float] = field(default_factory=dict)
    returncode: int = 0
    stdout: str = ""

    @property
    def max_process_rss_mb(self) -> float:
        return max(self.peak_rss_mb.values(), default=0.0)


def _children_index() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # The command name may hold spaces or parentheses; fields resume after the last ')'.
        ppid = int(stat[stat.rindex(b")") + 2 :].split()[1])
        kids.setdefault(ppid, []).append(int(name))
    return kids


def _tree(root: int) -> list[int]:
    kids = _children_index()
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(kids.get(pid, []))
    return out


def _usage(pid: int) -> tuple[str, float, float] | None:
    """(command, resident MB, CPU seconds) of a live process."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            resident = int(f.read().split()[1])
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmd = f.read().replace(b"\0", b" ").decode("utf-8", "replace").strip()
    except (OSError, IndexError, ValueError):
        return None
    fields = stat[stat.rindex(b")") + 2 :].split()
    cpu = (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime
    return cmd[:80], resident * _PAGE / 2**20, cpu


def measure(
    cmd: Sequence[str],
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    interval: float = 0.2,
    log: str | None = None,
) -> Measurement:
    """Runs ``cmd`` to completion and measures it.

    Args:
      cmd: the command.
      env: its environment (default: inherited).
      cwd: its working directory.
      interval: RSS sampling period in seconds.
      log: file for the command's standard error (default: inherited).
    """
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    stderr = open(log, "w") if log else None  # noqa: SIM115 - closed after the command ends
    proc = subprocess.Popen(
        list(cmd), env=dict(env) if env else None, cwd=cwd, stdout=subprocess.PIPE, stderr=stderr, text=True
    )
    peaks: dict[str, float] = {}
    cpu_seen: dict[int, float] = {}
    cpu_by_key: dict[str, float] = {}
    total = [0.0]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            now = 0.0
            for pid in _tree(proc.pid):
                got = _usage(pid)
                if got is None:
                    continue
                key = f"{pid}:{got[0]}"
                peaks[key] = max(peaks.get(key, 0.0), got[1])
                cpu_seen[pid] = got[2]
                cpu_by_key[key] = got[2]
                now += got[1]
            total[0] = max(total[0], now)
            done.wait(interval)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, _ = proc.communicate()
    wall = time.perf_counter() - start
    if stderr:
        stderr.close()
    done.set()
    sampler.join()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = max((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), sum(cpu_seen.values()))
    return Measurement(
        wall_s=wall,
        cpu_s=cpu,
        peak_rss_mb=peaks,
        peak_total_rss_mb=total[0],
        cpu_by_process_s=cpu_by_key,
        returncode=proc.returncode,
        stdout=out,
    )


def median(values: Sequence[float]) -> float:
    """Median of a non-empty sequence."""
    s = sorted(values)
    mid = len(s) // 2
    return s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2
