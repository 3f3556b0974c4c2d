"""Cost of the run report and of the progress line.

Prints: report.html render time and size for a finished run directory, the
per-document cost of a ``ProgressTicker.tick`` (it sits in the read, classify and
dedup hot loops) against a baseline loop, and peak RSS.

    PYTHONPATH=. python benchmarks/bench_report.py RUN_DIR [--repeat 3]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time

from transforms.progress import ProgressTicker
from transforms.report.html import render_html
from transforms.report.records import read_json


class _NullTicker:
    def tick(self, n: int = 1) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", help="a finished run's output directory")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--ticks", type=int, default=2_000_000)
    args = parser.parse_args()

    base = args.run_dir.rstrip("/")
    report, manifest = read_json(f"{base}/report.json"), read_json(f"{base}/manifest.json")
    render_html(report, manifest)  # warm up: matplotlib import and font cache
    times = []
    for _ in range(args.repeat):
        start = time.perf_counter()
        page = render_html(report, manifest)
        times.append(time.perf_counter() - start)
    print(
        f"render_html: best {min(times) * 1000:.0f} ms of {args.repeat}, {len(page.encode()) / 1024:.0f} KiB page"
    )

    with tempfile.TemporaryDirectory() as directory:
        ticker = ProgressTicker(directory, "read")
        start = time.perf_counter()
        for _ in range(args.ticks):
            ticker.tick()
        ticked = time.perf_counter() - start
        null = _NullTicker()
        start = time.perf_counter()
        for _ in range(args.ticks):
            null.tick()
        baseline = time.perf_counter() - start
    per_tick = (ticked - baseline) / args.ticks * 1e9
    print(f"ProgressTicker.tick: {per_tick:.0f} ns per call over an empty method ({args.ticks:,} calls)")
    print(f"peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
