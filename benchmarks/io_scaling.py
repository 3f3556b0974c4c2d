"""Peak memory of reading JSONL as the file grows: plain files split, gzip streams.

Builds plain and gzip JSONL files of growing size from the shared Wikipedia sample
(by concatenation: the gzip files are multi-member, which every gzip reader
accepts), then reads each with ``ReadSource`` in its own process on the
FnApiRunner with worker processes, and prints the number of byte ranges, how many
worker processes parsed documents, documents, wall time, MB/s (JSONL bytes per
wall second, pipeline start-up included), and the peak RSS of the whole process
tree (driver plus SDK workers, sampled from /proc every 0.2 s) and of its largest
process.  Flat peak RSS across sizes means the read streams.  The files live under ``--workdir`` (default in /tmp) and are deleted at the end.  Usage::

    PYTHONPATH=. python benchmarks/io_scaling.py [--copies 3 7 14] [--workers 2]
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import resource
import shutil
import subprocess
import sys
import threading
import time
import zlib

MB = 1e6


def _tree_rss_mb(root: int) -> tuple[float, float]:
    """(sum, largest) resident set of ``root`` and all its descendants, from /proc, in MB."""
    parents: dict[int, int] = {}
    rss: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(entry)] = int(fields[1])
        rss[int(entry)] = int(fields[21]) * resource.getpagesize() / 2**20
    tree = {root}
    grew = True
    while grew:
        grew = False
        for pid, parent in parents.items():
            if parent in tree and pid not in tree:
                tree.add(pid)
                grew = True
    sizes = [rss.get(pid, 0.0) for pid in tree]
    return sum(sizes), max(sizes)


class RssSampler(threading.Thread):
    """Samples the process tree's RSS every 0.2 s; keeps the peak sum and the peak single process."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak_total = 0.0
        self.peak_process = 0.0
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.wait(0.2):
            total, largest = _tree_rss_mb(os.getpid())
            self.peak_total = max(self.peak_total, total)
            self.peak_process = max(self.peak_process, largest)

    def stop(self) -> None:
        self._done.set()
        self.join()


def child(path: str, workers: int, split_bytes: int) -> None:
    """Reads ``path`` in a Beam pipeline and prints one JSON line of figures."""
    import apache_beam as beam

    from pipelines.runner import pipeline_options
    from schemas.config import ReadConfig, SourceConfig
    from transforms.io.source import ReadSource, file_ranges

    source = SourceConfig(name="bench", inputs=[path])
    read_cfg = ReadConfig(split_bytes=split_bytes)
    size = os.path.getsize(path)
    out_dir = path + ".out"
    os.makedirs(out_dir, exist_ok=True)
    options = pipeline_options([f"--direct_num_workers={workers}", "--direct_running_mode=multi_processing"])
    sampler = RssSampler()
    sampler.start()
    start = time.perf_counter()
    with beam.Pipeline(options=options) as p:
        read = p | "Read" >> ReadSource(source, read_cfg)
        docs = read.kept | "CountDocs" >> beam.combiners.Count.Globally()
        pids = (
            read.kept
            | "Pid" >> beam.Map(lambda _: os.getpid())
            | "Distinct" >> beam.Distinct()
            | "CountPids" >> beam.combiners.Count.Globally()
        )
        dead = read.dead_letter | "CountDead" >> beam.combiners.Count.Globally()
        seen = (
            read.counts
            | "Seen" >> beam.Filter(lambda kv: kv[0] == ("read_seen", "bench"))
            | "SeenKey" >> beam.Map(lambda kv: ("read_seen", kv[1]))
            | "Sum" >> beam.CombinePerKey(sum)
        )
        figures_path = os.path.join(out_dir, "figures.json")

        def write_figures(figures: dict[str, int]) -> None:
            with open(figures_path, "w") as f:
                json.dump(figures, f)

        _ = (
            [
                docs | "D" >> beam.Map(lambda n: ("docs", n)),
                pids | "P" >> beam.Map(lambda n: ("workers", n)),
                dead | "X" >> beam.Map(lambda n: ("dead", n)),
                seen,
            ]
            | "All" >> beam.Flatten()
            | "ToDict" >> beam.combiners.ToDict()
            | "Write" >> beam.Map(write_figures)
        )
    seconds = time.perf_counter() - start
    sampler.stop()
    with open(figures_path) as f:
        figures = json.load(f)
    shutil.rmtree(out_dir)
    figures.update(
        size=size,
        ranges=len(file_ranges(path, size, "jsonl", split_bytes)),
        seconds=seconds,
        peak_tree_mb=sampler.peak_total,
        peak_process_mb=sampler.peak_process,
    )
    print(json.dumps(figures))


def build_files(data: str, workdir: str, copies: list[int]) -> list[tuple[str, int]]:
    """Plain and gzip JSONL of ``copies`` times the sample each: (path, JSONL bytes)."""
    plain_parts = []
    for path in sorted(glob.glob(os.path.join(data, "*.jsonl.gz"))):
        with open(path, "rb") as f:
            plain_parts.append(zlib.decompress(f.read(), wbits=31))
    base = b"".join(plain_parts)
    base_gz = zlib.compressobj(1, zlib.DEFLATED, 31)
    member = base_gz.compress(base) + base_gz.flush()
    paths = []
    for n in copies:
        for suffix, chunk in ((".jsonl", base), (".jsonl.gz", member)):
            path = os.path.join(workdir, f"wiki-x{n}{suffix}")
            with open(path, "wb") as f:
                for _ in range(n):
                    f.write(chunk)
            paths.append((path, n * len(base)))
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="../shared/data/wikipedia")
    parser.add_argument("--workdir", default="/tmp/tropemix-io-scaling")
    parser.add_argument("--copies", type=int, nargs="+", default=[3, 7, 14], help="sample copies per file")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--split-bytes", type=int, default=64 * 1024 * 1024)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.workers, args.split_bytes)
        return
    os.makedirs(args.workdir, exist_ok=True)
    try:
        paths = build_files(args.data, args.workdir, args.copies)
        print(
            f"{'file':<22} {'MB':>7} {'ranges':>6} {'workers':>7} {'docs':>10} {'s':>7} {'MB/s':>6} {'tree RSS MB':>11} {'max proc MB':>11}"
        )
        for path, jsonl_bytes in paths:
            result = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--child",
                    path,
                    "--workers",
                    str(args.workers),
                    "--split-bytes",
                    str(args.split_bytes),
                ],
                check=True,
                capture_output=True,
                text=True,
            )
            fig = json.loads(result.stdout.strip().splitlines()[-1])
            assert fig.get("read_seen") == fig["docs"] + fig.get("dead", 0), fig
            print(
                f"{os.path.basename(path):<22} {fig['size'] / MB:7.0f} {fig['ranges']:6d} {fig['workers']:7d} "
                f"{fig['docs']:10,d} {fig['seconds']:7.1f} {jsonl_bytes / MB / fig['seconds']:6.1f} {fig['peak_tree_mb']:11.0f} {fig['peak_process_mb']:11.0f}",
                flush=True,
            )
    finally:
        shutil.rmtree(args.workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
