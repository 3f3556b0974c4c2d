"""Scale curve, kernel costs and a sampling profile of the full tropemix DAG.

For every corpus (``benchmarks/corpus.py`` output) it runs the whole DAG
(``python -m pipelines.run``) on the in-process FnApiRunner with
``--workers`` processes and reports wall time, CPU ms per document and the peak
RSS of every process.  In the same invocation it times the kernels alone,
single-threaded on the first ``--kernel-docs`` documents of the corpus, once before
and once after the DAG, and uses the mean (both sums are printed):

* read: gunzip + ``json.loads``;
* classify: ``score_documents`` (fastText ``predict`` on the configured chunks);
* dedup keys: ``normalize_for_dedup`` once, then ``bands_of_normalized`` (shingle, MinHash,
  bands) and ``exact_hash``, as the pipeline's ``Keys`` step does;
* Parquet encode: ``encode_parquet`` of the shard rows.

``--profile`` runs the DAG of one corpus under ``py-spy`` (all worker processes,
active samples only) and splits the samples into kernels, tropemix Python per
stage, and framework (Beam runner, coders, gRPC)::

    python benchmarks/scale.py --corpus /tmp/tropemix-bench/corpus-10k /tmp/tropemix-bench/corpus-100k
    python benchmarks/scale.py --corpus /tmp/tropemix-bench/corpus-10k --profile
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.harness import Measurement, measure  # noqa: E402
from benchmarks.vs_datatrove import tropemix_config  # noqa: E402
from schemas.config import parse_config  # noqa: E402
from schemas.records import SHARD_SCHEMA  # noqa: E402
from schemas.taxonomy import label_scores_of  # noqa: E402
from transforms.classify.model import load_fasttext, read_model_card  # noqa: E402
from transforms.classify.score import score_documents  # noqa: E402
from transforms.dedup.keys import bands_of_normalized, exact_hash  # noqa: E402
from transforms.io.write import encode_parquet, shard_row  # noqa: E402
from transforms.text import normalize_for_dedup  # noqa: E402

# Innermost matching frame decides a sample's kernel; order matters (first match wins
# when scanning from the leaf).
KERNELS: dict[str, tuple[str, ...]] = {
    "fastText predict": ("predict (fasttext/FastText.py",),
    "shingle + MinHash": (
        "transforms/dedup/minhash.py",
        "normalize_for_dedup (",
        "exact_hash (",
    ),
    "Parquet encode": ("encode_parquet (",),
    "gunzip + JSON parse": ("(gzip.py", "(json/decoder.py", "(json/__init__.py", "(_compression.py"),
}
# Leaf frames of threads that wait (py-spy may count a GIL-free wait as active).
IDLE = ("Condition.wait (threading.py", "_serve (grpc/", "channel_spin (grpc/", "Event.wait (threading.py")
STAGES: dict[str, str] = {
    "transforms/io/source.py": "Read",
    "transforms/io/jsonl.py": "Read",
    "transforms/io/parquet.py": "Read",
    "transforms/io/warc.py": "Read",
    "transforms/io/text.py": "Read",
    "transforms/io/streams.py": "Read",
    "transforms/io/documents.py": "Read",
    "transforms/classify/": "Classify",
    "transforms/dedup/": "Dedup",
    "transforms/blend/sample.py": "Blend",
    "transforms/io/write.py": "Write",
    "transforms/report/counts.py": "Report",
    "transforms/report/conservation.py": "Report",
    "transforms/report/records.py": "Report",
}


def cpu_split(m: Measurement) -> dict[str, float]:
    """CPU seconds of the runner's driver process and of its SDK worker processes.

    Args:
      m: a measured ``pipelines.run`` run.
    """
    split = {"driver": 0.0, "SDK workers": 0.0}
    for key, cpu in m.cpu_by_process_s.items():
        if "sdk_worker_main" in key:
            split["SDK workers"] += cpu
        elif "pipelines.run" in key:
            split["driver"] += cpu
    return split


def _cpu_ms_per_doc(fn: Callable[[], Any], docs: int) -> float:
    start = time.process_time()
    fn()
    return 1000 * (time.process_time() - start) / docs


def kernel_costs(corpus: Path, cfg_dict: dict[str, Any], docs: int) -> dict[str, float]:
    """CPU ms per document of each kernel alone, on the corpus's first ``docs`` documents.

    Args:
      corpus: a corpus directory.
      cfg_dict: the tropemix config the DAG runs with.
      docs: how many documents to time.
    """
    cfg = parse_config(cfg_dict)
    first = sorted(corpus.glob("*.jsonl.gz"))[0]
    records: list[dict[str, Any]] = []

    def parse() -> None:
        with gzip.open(first, "rb") as f:
            for line in f:
                records.append(json.loads(line))
                if len(records) == docs:
                    break

    out = {"gunzip + JSON parse": _cpu_ms_per_doc(parse, docs)}
    n = len(records)
    texts = [r["text"] for r in records]
    model = load_fasttext(cfg.classifier.model)
    rule = label_scores_of(read_model_card(cfg.classifier.model))
    batch = cfg.classifier.batch_size
    out["fastText predict"] = _cpu_ms_per_doc(
        lambda: [
            score_documents(
                model, texts[i : i + batch], cfg.classifier.chunk_chars, cfg.classifier.aggregate, rule
            )
            for i in range(0, n, batch)
        ],
        n,
    )
    docs_in = [{"id": r["id"], "source": "bench", "text": r["text"], "meta": {}} for r in records]

    def dedup_keys() -> None:
        # As the Keys step does: normalize once, then hash and sign the normalized text.
        for i in range(0, n, 256):
            normalized = [normalize_for_dedup(t) for t in texts[i : i + 256]]
            bands_of_normalized(normalized, cfg.dedup)
            [exact_hash(t) for t in normalized]

    out["shingle + MinHash"] = _cpu_ms_per_doc(dedup_keys, n)
    rows = [shard_row(d) for d in docs_in]
    out["Parquet encode"] = _cpu_ms_per_doc(
        lambda: encode_parquet(rows, SHARD_SCHEMA, cfg.output.row_group_size), n
    )
    return out


def _run_cmd(config: Path, workers: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "pipelines.run",
        "--config",
        str(config),
        f"--direct_num_workers={workers}",
        "--direct_running_mode=multi_processing",
    ]


def run_dag(corpus: Path, work: Path, args: argparse.Namespace) -> tuple[Measurement, dict[str, Any]]:
    """One measured run of the whole DAG; returns the measurement and the config used."""
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    cfg = tropemix_config(corpus, work / "out", args.model, args)
    config = work / "tropemix.yaml"
    config.write_text(json.dumps(cfg))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    m = measure(_run_cmd(config, args.workers), env=env, cwd=str(REPO), log=str(work / "tropemix.log"))
    if m.returncode:
        raise RuntimeError(f"tropemix failed with exit status {m.returncode}; see {work}/tropemix.log")
    return m, cfg


def _classify_sample(frames: list[str]) -> tuple[str, str]:
    """(kernel, 'idle' or 'other'; stage) of one stack, frames root first."""
    if any(m in frames[-1] for m in IDLE):
        return "idle", "framework"
    stage = "framework"
    for frame in frames:
        for marker, name in STAGES.items():
            if marker in frame:
                stage = name
    for frame in reversed(frames):
        for kernel, markers in KERNELS.items():
            if any(m in frame for m in markers):
                return kernel, stage
    return "other", stage


def profile(corpus: Path, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Runs the DAG under py-spy and splits its samples into kernels and overhead per stage."""
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    config = work / "tropemix.yaml"
    config.write_text(json.dumps(tropemix_config(corpus, work / "out", args.model, args)))
    raw = work / "profile.txt"
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    cmd = [pyspy, "record", "--subprocesses", "-r", str(args.rate), "-f", "raw", "-o", str(raw), "--"]
    start = time.perf_counter()
    subprocess.run(
        cmd + _run_cmd(config, args.workers),
        env={**os.environ, "PYTHONPATH": str(REPO)},
        cwd=str(REPO),
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=open(work / "py-spy.log", "w"),  # noqa: SIM115 - lives as long as the run
    )
    result = analyze(raw, time.perf_counter() - start)
    # py-spy does not pass the run's exit status on: read the run's own verdict.
    report = work / "out" / "report.json"
    verdict = "no report written"
    if report.exists():
        conservation = json.loads(report.read_text())["conservation"]
        verdict = "OK" if conservation["ok"] else conservation["summary"]
    result["conservation"] = verdict
    return result


def analyze(raw: Path, wall: float) -> dict[str, Any]:
    """Splits py-spy raw samples into kernels, idle waits and other work, per stage.

    Args:
      raw: ``py-spy record -f raw`` output.
      wall: the run's wall seconds.
    """
    by_kernel: Counter[str] = Counter()
    by_stage: Counter[tuple[str, str]] = Counter()
    leaves: Counter[tuple[str, str]] = Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        n = int(count)
        kernel, stage = _classify_sample(frames)
        by_kernel[kernel] += n
        by_stage[(stage, kernel)] += n
        leaves[(stage, frames[-1])] += n
    total = sum(by_kernel.values())
    return {"wall_s": wall, "samples": total, "by_kernel": by_kernel, "by_stage": by_stage, "leaves": leaves}


def _print_profile(p: dict[str, Any], top: int) -> None:
    idle = p["by_kernel"].get("idle", 0)
    total = p["samples"] - idle
    kernels = sum(n for k, n in p["by_kernel"].items() if k not in ("other", "idle"))
    print(
        f"\nprofile: {p['samples']} samples over {p['wall_s']:.1f} s wall (all processes), {idle} idle waits"
    )
    print(f"kernels: {100 * kernels / total:.1f}% of busy samples")
    print(f"profiled run's conservation check: {p.get('conservation', 'not recorded')}\n")
    print("| kernel | share of busy samples |")
    print("|---|---|")
    for kernel, n in p["by_kernel"].most_common():
        if kernel == "idle":
            continue
        print(f"| {kernel} | {100 * n / total:.1f}% |")
    print("\n| stage | kernel | share |")
    print("|---|---|---|")
    for (stage, kernel), n in sorted(p["by_stage"].items(), key=lambda kv: -kv[1]):
        if kernel != "idle" and n / total >= 0.005:
            print(f"| {stage} | {kernel} | {100 * n / total:.1f}% |")
    print(f"\ntop {top} leaf frames per stage (self time):")
    stages = sorted({s for s, _ in p["leaves"]})
    for stage in stages:
        mine = [(n, f) for (s, f), n in p["leaves"].items() if s == stage and not any(m in f for m in IDLE)]
        items = sorted(mine, reverse=True)[:top]
        share = sum(n for n, _ in mine) / total
        print(f"- {stage} ({100 * share:.1f}%):")
        for n, frame in items:
            print(f"    {100 * n / total:5.1f}%  {frame[:110]}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--corpus", type=Path, nargs="+", required=True, help="corpus directories, smallest first"
    )
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--model", type=Path, default=REPO / "models" / "tropes-v1.ftz")
    parser.add_argument("--ngram", type=int, default=5)
    parser.add_argument("--num-perm", type=int, default=128)
    parser.add_argument("--threshold", type=float, default=0.8)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--num-shards", type=int, default=4)
    parser.add_argument("--kernel-docs", type=int, default=1000)
    parser.add_argument("--profile", action="store_true", help="profile the first corpus with py-spy instead")
    parser.add_argument("--rate", type=int, default=50, help="py-spy samples per second per process")
    parser.add_argument("--top", type=int, default=6)
    parser.add_argument(
        "--raw", type=Path, default=None, help="with --profile: analyze this py-spy raw file again"
    )
    parser.add_argument("--work", type=Path, default=None, help="scratch directory (default: a temp dir)")
    args = parser.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="tropemix-scale-"))
    if args.profile and args.raw:
        _print_profile(analyze(args.raw, float("nan")), args.top)
        return 0
    if args.profile:
        _print_profile(profile(args.corpus[0], work / "profile", args), args.top)
        return 0
    print(
        "| docs | wall s | docs/s | CPU ms/doc | kernels ms/doc | CPU / kernels | peak RSS per process MB |"
    )
    print("|---|---|---|---|---|---|---|")
    for corpus in args.corpus:
        docs = json.loads((corpus / "corpus.json").read_text())["docs"]
        sample = min(args.kernel_docs, docs)
        cfg = tropemix_config(corpus, work / corpus.name / "out", args.model, args)
        # Kernels are timed before and after the DAG and averaged: this host's speed
        # drifts by up to a third within minutes, which one timing would fold into the ratio.
        before = kernel_costs(corpus, cfg, sample)
        m, _ = run_dag(corpus, work / corpus.name, args)
        after = kernel_costs(corpus, cfg, sample)
        kernels = {k: (before[k] + after[k]) / 2 for k in before}
        cpu = 1000 * m.cpu_s / docs
        ksum = sum(kernels.values())
        rss = ", ".join(f"{v:.0f}" for v in sorted(m.peak_rss_mb.values(), reverse=True) if v >= 50)
        print(
            f"| {docs} | {m.wall_s:.1f} | {docs / m.wall_s:.0f} | {cpu:.2f} | {ksum:.2f} | {cpu / ksum:.2f} | {rss} |",
            flush=True,
        )
        print(
            "|  | kernels: " + ", ".join(f"{k} {v:.3f}" for k, v in kernels.items()) + " ms/doc "
            f"(sum {sum(before.values()):.2f} before the DAG, {sum(after.values()):.2f} after) |||||",
            flush=True,
        )
        split = cpu_split(m)
        print(
            "|  | CPU ms/doc by process: "
            + ", ".join(f"{k} {1000 * v / docs:.2f}" for k, v in split.items())
            + " |||||",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
