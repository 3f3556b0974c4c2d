"""tropemix against Hugging Face datatrove on the same corpus, model, dedup settings and cores.

datatrove runs in its own virtualenv (created on first use, never in tropemix's):
``JsonlReader -> FastTextClassifierFilter (annotate only) -> JsonlWriter`` feeding
``MinhashDedupSignature``, then ``MinhashDedupBuckets``, ``MinhashDedupCluster``
and ``JsonlReader -> MinhashDedupFilter -> JsonlWriter``, each stage on a
``LocalPipelineExecutor`` with ``--workers`` processes.  tropemix runs its whole
DAG (``python -m pipelines.run``) on the in-process FnApiRunner with the
same number of worker processes.  Both use the same fastText model, word
5-grams, and the bands x rows that tropemix derives from its threshold and
``num_perm``.  The two systems alternate, ``--repeats`` times each, and the
medians are printed as a Markdown table::

    python benchmarks/vs_datatrove.py --corpus /tmp/tropemix-bench/corpus-10k --repeats 3
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.harness import Measurement, measure, median  # noqa: E402
from transforms.dedup.minhash import lsh_params  # noqa: E402

DATATROVE = "datatrove[io,processing]==0.10.1"
# datatrove's English word tokenizer is spaCy's; the processing extra does not pull it in.
DATATROVE_EXTRA = ("spacy>=3.8,<4",)
DEFAULT_VENV = Path.home() / ".cache" / "tropemix" / "datatrove-venv"

DATATROVE_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup import MinhashDedupSignature
    from datatrove.pipeline.dedup.minhash import (
        MinhashConfig, MinhashDedupBuckets, MinhashDedupCluster, MinhashDedupFilter,
    )
    from datatrove.pipeline.filters import FastTextClassifierFilter
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter

    def main(a):
        cfg = MinhashConfig(n_grams=a["ngram"], num_buckets=a["bands"], hashes_per_bucket=a["rows"], seed=a["seed"])
        w, tasks, work = a["workers"], a["tasks"], a["work"]
        def run(pipeline, name, n):
            LocalPipelineExecutor(pipeline, tasks=n, workers=min(w, n), logging_dir=f"{work}/logs/{name}").run()
        run([
            JsonlReader(a["input"], glob_pattern="*.jsonl.gz"),
            # Annotate every document with all label scores and drop none: a score never reaches 2.
            # (Passing no labels at all trips a `None + list` in datatrove 0.10.1's label check.)
            FastTextClassifierFilter(a["model"], remove_labels=[(a["label"], 2.0)], save_labels_in_metadata=True),
            JsonlWriter(f"{work}/classified", compression=None),
            MinhashDedupSignature(f"{work}/signatures", config=cfg),
        ], "signatures", tasks)
        run([MinhashDedupBuckets(f"{work}/signatures", f"{work}/buckets", config=cfg)], "buckets", cfg.num_buckets)
        run([MinhashDedupCluster(f"{work}/buckets", f"{work}/remove_ids", config=cfg)], "cluster", 1)
        run([
            JsonlReader(f"{work}/classified"),
            MinhashDedupFilter(f"{work}/remove_ids"),
            JsonlWriter(f"{work}/output"),
        ], "filter", tasks)

    if __name__ == "__main__":
        main(json.loads(sys.argv[1]))
    """
)


def ensure_datatrove(venv: Path) -> Path:
    """Creates ``venv`` with datatrove when it is missing and returns its python.

    Args:
      venv: the virtualenv directory, outside the repository.
    """
    python = venv / "bin" / "python"
    probe = [str(python), "-c", "import datatrove, fasttext, orjson, spacy"]
    if python.exists() and subprocess.run(probe, capture_output=True).returncode == 0:
        return python
    venv.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", DATATROVE, *DATATROVE_EXTRA], check=True)
    subprocess.run(probe, check=True)
    return python


def tropemix_config(corpus: Path, output: Path, model: Path, args: argparse.Namespace) -> dict[str, Any]:
    """A one-source config: classify and tag every document, dedup, write every survivor once."""
    return {
        "run_name": "vs-datatrove",
        "sources": [
            {
                "name": "bench",
                "role": "web",
                "inputs": [str(corpus / "*.jsonl.gz")],
                "fields": {"id": "id", "text": "text", "metadata": ["kind", "dup_of"]},
            }
        ],
        "classifier": {"model": str(model)},
        "dedup": {
            "ngram": args.ngram,
            "num_perm": args.num_perm,
            "threshold": args.threshold,
            "seed": args.seed,
        },
        "blend": {"sources": {"bench": {"share": 1.0, "max_epochs": 1}}, "num_shards": args.num_shards},
        "output": {"path": str(output)},
    }


def _count_lines(folder: Path) -> int:
    n = 0
    for path in folder.rglob("*.jsonl.gz"):
        with gzip.open(path, "rb") as f:
            n += sum(1 for _ in f)
    return n


def run_datatrove(
    python: Path, corpus: Path, work: Path, model: Path, args: argparse.Namespace
) -> Measurement:
    """One datatrove run; ``stdout`` is replaced by the number of removed documents."""
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    script = work.parent / "datatrove_pipeline.py"
    script.write_text(DATATROVE_SCRIPT)
    # datatrove caches a model by its path and never checks the content again: name the
    # copy it sees by the model's hash, so a rebuilt model is not served stale.
    digest = hashlib.sha256(model.read_bytes()).hexdigest()[:16]
    seen_model = work.parent / f"model-{digest}{model.suffix}"
    if not seen_model.exists():
        shutil.copyfile(model, seen_model)
    bands, rows = lsh_params(args.threshold, args.num_perm)
    spec = {
        "input": str(corpus),
        "model": str(seen_model),
        "work": str(work),
        "workers": args.workers,
        "tasks": len(list(corpus.glob("*.jsonl.gz"))),
        "ngram": args.ngram,
        "bands": bands,
        "rows": rows,
        "seed": args.seed,
        "label": json.loads((args.model.parent / (args.model.stem + ".card.json")).read_text())["labels"][0],
    }
    m = measure(
        [str(python), str(script), json.dumps(spec)],
        env={**os.environ, "TQDM_DISABLE": "1"},
        cwd=str(work),
        log=str(work / "datatrove.log"),
    )
    if m.returncode:
        raise RuntimeError(f"datatrove failed with exit status {m.returncode}; logs in {work}/logs")
    m.stdout = str(args.docs - _count_lines(work / "output"))
    return m


def run_tropemix(corpus: Path, work: Path, model: Path, args: argparse.Namespace) -> Measurement:
    """One tropemix run; ``stdout`` is replaced by the number of dedup drops."""
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    config = work.parent / "tropemix.yaml"
    config.write_text(json.dumps(tropemix_config(corpus, work / "out", model, args)))
    cmd = [
        sys.executable,
        "-m",
        "pipelines.run",
        "--config",
        str(config),
        f"--direct_num_workers={args.workers}",
        "--direct_running_mode=multi_processing",
    ]
    m = measure(
        cmd, env={**os.environ, "PYTHONPATH": str(REPO)}, cwd=str(REPO), log=str(work / "tropemix.log")
    )
    if m.returncode:
        raise RuntimeError(f"tropemix failed with exit status {m.returncode}; see {work}/tropemix.log")
    report = json.loads((work / "out" / "report.json").read_text())
    m.stdout = str(report["conservation"]["stages"]["dedup"]["dropped"])
    return m


def removed_by_kind(corpus: Path, work: Path) -> dict[str, Counter[str]]:
    """Documents each system removed in its last run, counted by the corpus's ``kind``.

    ``kind`` is ``base`` for a recombined page and ``exact`` / ``edit`` / ``boilerplate`` /
    ``reorder`` for a planted near duplicate (``benchmarks/corpus.py``), so the two
    systems' removals can be compared planted copy by planted copy.

    Args:
      corpus: the benchmark corpus.
      work: the ``--work`` directory of the runs.
    """
    kind: dict[str, str] = {}
    for path in sorted(corpus.glob("*.jsonl.gz")):
        with gzip.open(path, "rt", encoding="utf-8") as f:
            for line in f:
                doc = json.loads(line)
                kind[doc["id"]] = doc.get("kind", "base")
    kept: set[str] = set()
    for path in (work / "datatrove" / "output").rglob("*.jsonl.gz"):
        with gzip.open(path, "rt", encoding="utf-8") as f:
            kept.update(json.loads(line)["id"] for line in f)
    ledger = pq.read_table(work / "tropemix" / "out" / "ledger", columns=["id", "stage", "fate"]).to_pylist()
    # Ledger ids are "<source>/<id>".
    dropped = {r["id"].split("/", 1)[-1] for r in ledger if r["stage"] == "dedup" and r["fate"] == "dropped"}
    planted = {i for i, k in kind.items() if k != "base"}
    return {
        "datatrove removed": Counter(kind[i] for i in kind if i not in kept),
        "tropemix removed": Counter(kind[i] for i in dropped),
        "planted, missed by datatrove": Counter(kind[i] for i in planted if i in kept),
        "planted, missed by tropemix": Counter(kind[i] for i in planted - dropped),
    }


def _print_breakdown(breakdown: dict[str, Counter[str]]) -> None:
    kinds = sorted({k for c in breakdown.values() for k in c})
    print("\nlast run, documents by corpus kind:\n")
    print("| | " + " | ".join(kinds) + " | total |")
    print("|---|" + "---|" * (len(kinds) + 1))
    for name, counts in breakdown.items():
        print(f"| {name} | " + " | ".join(str(counts[k]) for k in kinds) + f" | {sum(counts.values())} |")


def _row(name: str, runs: list[Measurement], docs: int) -> dict[str, float]:
    wall = median([r.wall_s for r in runs])
    return {
        "system": name,  # type: ignore[dict-item]
        "wall_s": wall,
        "docs_per_s": docs / wall,
        "cpu_s": median([r.cpu_s for r in runs]),
        "cpu_ms_per_doc": 1000 * median([r.cpu_s for r in runs]) / docs,
        "max_process_rss_mb": median([r.max_process_rss_mb for r in runs]),
        "total_rss_mb": median([r.peak_total_rss_mb for r in runs]),
        "removed": median([float(r.stdout) for r in runs]),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", type=Path, required=True, help="a benchmarks/corpus.py output directory")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--model", type=Path, default=REPO / "models" / "tropes-v1.ftz")
    parser.add_argument("--ngram", type=int, default=5)
    parser.add_argument("--num-perm", type=int, default=128)
    parser.add_argument("--threshold", type=float, default=0.8)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--num-shards", type=int, default=4)
    parser.add_argument("--venv", type=Path, default=DEFAULT_VENV, help="datatrove's own virtualenv")
    parser.add_argument("--work", type=Path, default=None, help="scratch directory (default: a temp dir)")
    parser.add_argument("--json", type=Path, default=None, help="also write every run's figures here")
    parser.add_argument(
        "--breakdown-only", action="store_true", help="only compare the removals of the runs kept in --work"
    )
    args = parser.parse_args(argv)
    args.docs = json.loads((args.corpus / "corpus.json").read_text())["docs"]
    if args.breakdown_only:
        if not args.work:
            parser.error("--breakdown-only needs --work")
        _print_breakdown(removed_by_kind(args.corpus, args.work))
        return 0
    python = ensure_datatrove(args.venv)
    work = args.work or Path(tempfile.mkdtemp(prefix="tropemix-vs-datatrove-"))
    bands, rows = lsh_params(args.threshold, args.num_perm)
    print(
        f"corpus {args.corpus} ({args.docs} docs), {args.workers} workers, {args.ngram}-grams, {bands}x{rows} bands"
    )
    runs: dict[str, list[Measurement]] = {"datatrove": [], "tropemix": []}
    for r in range(args.repeats):
        order = ["datatrove", "tropemix"] if r % 2 == 0 else ["tropemix", "datatrove"]
        for name in order:
            if name == "datatrove":
                m = run_datatrove(python, args.corpus, work / "datatrove", args.model, args)
            else:
                m = run_tropemix(args.corpus, work / "tropemix", args.model, args)
            runs[name].append(m)
            print(
                f"  run {r + 1} {name}: {m.wall_s:.1f} s wall, {m.cpu_s:.1f} s CPU, "
                f"max process RSS {m.max_process_rss_mb:.0f} MB, removed {m.stdout}",
                flush=True,
            )
    rows_out = [_row(name, ms, args.docs) for name, ms in runs.items()]
    print()
    print(
        "| system | wall s | docs/s | CPU s | CPU ms/doc | max RSS/process MB | total RSS MB | removed as dups |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for row in rows_out:
        print(
            f"| {row['system']} | {row['wall_s']:.1f} | {row['docs_per_s']:.0f} | {row['cpu_s']:.1f} "
            f"| {row['cpu_ms_per_doc']:.2f} | {row['max_process_rss_mb']:.0f} | {row['total_rss_mb']:.0f} "
            f"| {row['removed']:.0f} |"
        )
    dt, tm = rows_out
    print(
        f"\nratio tropemix/datatrove: {tm['docs_per_s'] / dt['docs_per_s']:.2f}x docs/s, "
        f"{dt['cpu_s'] / tm['cpu_s']:.2f}x less CPU; removed {tm['removed']:.0f} vs {dt['removed']:.0f} "
        f"({100 * (tm['removed'] - dt['removed']) / max(dt['removed'], 1):+.1f}%)"
    )
    _print_breakdown(removed_by_kind(args.corpus, work))
    if args.json:
        args.json.write_text(
            json.dumps({name: [m.__dict__ for m in ms] for name, ms in runs.items()}, indent=1, default=str)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
