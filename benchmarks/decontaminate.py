"""Decontamination speed: docs/s per core against 10,000 eval records, kernel and Beam stage.

Eval records: the first ``--evals`` Wikipedia pages of ``pages-02`` then ``pages-01``, cut to their first
``--eval-words`` words (the size of a benchmark question with its context).  Training
documents: the benchmark corpus (``benchmarks/corpus.py``), whose paragraphs are drawn
from the same real pages, so some documents really overlap an eval record.

Prints the index build time and size, then docs/s of ``find_match`` in this one
process (per core), then of the ``Decontaminate`` transform on the in-process runner
with one worker (per core, with the runner's overhead)::

    PYTHONPATH=$PWD python benchmarks/corpus.py --docs 10000 --out /tmp/tropemix-bench/corpus-10k
    PYTHONPATH=$PWD python benchmarks/decontaminate.py --corpus /tmp/tropemix-bench/corpus-10k
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from schemas.config import DecontaminateConfig, EvalSet
from training.jsonl import read_jsonl
from transforms.decontaminate import Decontaminate, find_match, load_index

WIKIPEDIA = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "wikipedia"
EVAL_PAGES = ("pages-02.jsonl.gz", "pages-01.jsonl.gz")
RUNNER = "apache_beam.runners.portability.fn_api_runner.FnApiRunner"


def write_evals(path: Path, count: int, words: int) -> int:
    """Writes ``count`` eval records (Wikipedia openings of ``words`` words); returns how many."""
    n = 0
    with path.open("w", encoding="utf-8") as out:
        for name in EVAL_PAGES:
            for page in read_jsonl(str(WIKIPEDIA / name)):
                if n >= count:
                    return n
                text = " ".join(page["text"].split()[:words])
                out.write(json.dumps({"id": f"{name}:{page['id']}", "text": text}) + "\n")
                n += 1
    return n


def corpus_docs(corpus: Path) -> Iterator[dict[str, str]]:
    """The benchmark corpus's documents, shards in order."""
    for part in sorted(corpus.glob("part-*.jsonl.gz")):
        for doc in read_jsonl(str(part)):
            yield {"id": doc["id"], "source": "bench", "text": doc["text"]}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--corpus", type=Path, required=True)
    parser.add_argument("--evals", type=int, default=10_000)
    parser.add_argument("--eval-words", type=int, default=300)
    parser.add_argument("--stage-docs", type=int, default=10_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        eval_path = Path(tmp) / "evals.jsonl"
        n_evals = write_evals(eval_path, args.evals, args.eval_words)
        cfg = DecontaminateConfig(evals=[EvalSet(path=str(eval_path))])
        start = time.process_time()
        index = load_index(cfg)
        build = time.process_time() - start
        size_mb = (index.hashes.nbytes + index.records.nbytes + index.sizes.nbytes) / 1e6
        print(
            f"index: {n_evals} eval records, {index.hashes.size:,} n-grams, {size_mb:.1f} MB, built in {build:.1f} s CPU"
        )

        docs = list(corpus_docs(args.corpus))
        words = sum(len(d["text"].split()) for d in docs)
        start = time.process_time()
        dropped = sum(find_match(d["text"], index, cfg.ngram, cfg.threshold) is not None for d in docs)
        cpu = time.process_time() - start
        print(
            f"kernel: {len(docs)} docs ({words / len(docs):.0f} words avg), {dropped} contaminated, "
            f"{len(docs) / cpu:,.0f} docs/s per core ({words / cpu / 1e6:.2f} M words/s)"
        )

        stage_docs = docs[: args.stage_docs]
        base = _pipeline_cpu(stage_docs, None)
        cpu = _pipeline_cpu(stage_docs, cfg)
        print(
            f"stage: {len(stage_docs)} docs, {cpu:.1f} s CPU, one worker: {len(stage_docs) / cpu:,.0f} docs/s "
            f"per core; the same pipeline with an identity step instead: {base:.1f} s CPU, so the stage "
            f"alone: {len(stage_docs) / max(cpu - base, 1e-9):,.0f} docs/s per core"
        )


def _pipeline_cpu(docs: list[dict[str, str]], cfg: DecontaminateConfig | None) -> float:
    """CPU seconds of Create -> Decontaminate (or an identity step) -> count, on one in-process worker."""
    # One in-process worker: the pipeline's CPU is this process's, whatever else the machine runs.
    options = PipelineOptions([f"--runner={RUNNER}", "--direct_num_workers=1"])
    start = time.process_time()
    with beam.Pipeline(options=options) as p:
        created = p | beam.Create(docs)
        out = (created | Decontaminate(cfg)).kept if cfg else created | beam.Map(lambda d: d)
        _ = out | beam.combiners.Count.Globally()
    return time.process_time() - start


if __name__ == "__main__":
    main()
