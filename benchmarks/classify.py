"""Classify-stage throughput against the previous model, in the same run, on one core.

Figures (CPU seconds of this process, best of ``--repeats``, interleaved, so another
job on the second core does not enter them; docs/s per core):

- stage: ``ClassifyDocuments`` on the in-process FnApiRunner (one worker): the time of
  ``Read | ClassifyDocuments | Count`` minus that of ``Read | Count``;
- functions: ``score_documents`` + ``annotate`` in batches (language id, gate, context,
  one trope ``predict`` per batch, thresholds), and inside it the share of time spent
  in the trope model's ``predict``;
- previous: the model the project shipped before (``--previous``, default
  ``models/tropes-v0.ftz`` checked out from git at 26cb28d) predicting every
  400-character chunk of every document, which is what its stage did (that stage ran at
  101-103% of this figure, BENCHMARKS.md of 26cb28d), so the ratio is conservative.

It also prints the gate's pass rate and the routes.  Run::

    PYTHONPATH=. python benchmarks/classify.py --docs 3000
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from schemas.config import ClassifierConfig
from training.jsonl import read_jsonl
from transforms.classify.documents import ClassifyDocuments
from transforms.classify.langid import load_lid
from transforms.classify.model import effective_thresholds, load_fasttext, read_model_card, resolve_taxonomy
from transforms.classify.score import PREDICT_FLOOR, annotate, context_params, score_documents
from transforms.text import fasttext_text

REPO = Path(__file__).resolve().parent.parent
FN_API_RUNNER = "apache_beam.runners.portability.fn_api_runner.FnApiRunner"


def load_docs(n: int) -> list[dict[str, str]]:
    """The first ``n`` pages of ``../shared/data/wikipedia`` (mostly text without AI)."""
    docs = []
    for path in sorted((REPO.parent / "shared" / "data" / "wikipedia").glob("pages-*.jsonl.gz")):
        for r in read_jsonl(str(path)):
            docs.append({"id": r["id"], "source": "wiki", "text": r["text"]})
            if len(docs) == n:
                return docs
    return docs


def chunks_400(text: str) -> list[str]:
    """The previous stage's chunks: paragraphs packed to about 400 characters."""
    out, current = [], ""
    for para in text.split("\n"):
        while len(para) > 400:
            out.append(para[:400])
            para = para[400:]
        if current and len(current) + len(para) > 400:
            out.append(current)
            current = ""
        current = f"{current}\n{para}" if current else para
    return out + ([current] if current else [])


def previous_model(spec: str, tmp: str) -> str:
    """A local path of the previous model: a file, or ``COMMIT:PATH`` read with ``git show``."""
    if Path(spec).exists():
        return spec
    out = Path(tmp) / "previous.ftz"
    out.write_bytes(subprocess.run(["git", "show", spec], cwd=REPO, check=True, capture_output=True).stdout)
    return str(out)


def timed(fn: Callable[[], None]) -> float:
    """CPU seconds of this process (all threads) for one call."""
    cpu = time.process_time()
    fn()
    return time.process_time() - cpu


def stage_pipeline(docs_path: str, cfg: ClassifierConfig | None) -> Callable[[], None]:
    """``Read | ClassifyDocuments | Count`` on one in-process worker; without ``cfg``, ``Read | Count``."""

    def run() -> None:
        options = PipelineOptions([f"--runner={FN_API_RUNNER}", "--direct_num_workers=1"])
        with beam.Pipeline(runner=FN_API_RUNNER, options=options) as pipe:
            pcoll = pipe | "Read" >> beam.io.ReadFromText(docs_path) | "Parse" >> beam.Map(json.loads)
            if cfg is not None:
                pcoll = pcoll | "Classify" >> ClassifyDocuments(cfg)
            _ = pcoll | "Count" >> beam.combiners.Count.Globally()

    return run


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--docs", type=int, default=3000)
    p.add_argument("--model", default=str(REPO / "models" / "tropes-v1.ftz"))
    p.add_argument("--previous", default="26cb28d:models/tropes-v0.ftz")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()

    cfg = ClassifierConfig(model=args.model)
    card = read_model_card(args.model)
    thresholds, taxonomy, context = (
        effective_thresholds(cfg, card),
        resolve_taxonomy(cfg, card),
        context_params(card),
    )
    model, lid = load_fasttext(args.model), load_lid()
    tmp = tempfile.TemporaryDirectory(prefix="tropemix-classify-bench-")
    old = load_fasttext(previous_model(args.previous, tmp.name))
    docs = load_docs(args.docs)
    texts = [d["text"] for d in docs]
    old_chunks = [fasttext_text(c) for t in texts for c in chunks_400(t)]
    routes: Counter[str] = Counter()
    predict_cpu = [0.0]
    real_predict = model.predict

    def counting_predict(*a: object, **k: object) -> object:
        start = time.process_time()
        out = real_predict(*a, **k)
        predict_cpu[0] += time.process_time() - start
        return out

    def functions() -> None:
        routes.clear()
        for i in range(0, len(docs), cfg.batch_size):
            batch = docs[i : i + cfg.batch_size]
            scored = score_documents(model, lid, [d["text"] for d in batch], cfg.languages, context, taxonomy)
            for d, s in zip(batch, scored, strict=True):
                routes[s.route] += 1
                annotate(d, s, thresholds, taxonomy)  # type: ignore[arg-type]

    def previous() -> None:
        old.predict(old_chunks, k=-1, threshold=PREDICT_FLOOR)

    docs_path = str(Path(tmp.name) / "docs.jsonl")
    with open(docs_path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(d) + "\n" for d in docs)

    variants = {
        "functions": functions,
        "previous": previous,
        "empty": stage_pipeline(docs_path, None),
        "stage": stage_pipeline(docs_path, cfg),
    }
    best = {name: float("inf") for name in variants}
    for _ in range(args.repeats):
        for name, fn in variants.items():
            best[name] = min(best[name], timed(fn))
    model.predict = counting_predict  # type: ignore[method-assign]
    functions()
    n, stage = len(docs), best["stage"] - best["empty"]
    print(
        f"docs {n} (Wikipedia pages, {sum(map(len, texts)) / 1e6:.1f} M chars), best of {args.repeats}, CPU s"
    )
    print(f"previous model, every 400-char chunk : {n / best['previous']:7.0f} docs/s")
    print(f"score+annotate functions             : {n / best['functions']:7.0f} docs/s")
    print(
        f"ClassifyDocuments stage              : {n / stage:7.0f} docs/s  ({best['previous'] / stage:.1f}x previous)"
    )
    print(f"routes: {dict(sorted(routes.items()))}; gate pass rate {routes['model'] / n:.3f}")
    print(f"trope model predict: {predict_cpu[0] / best['functions']:.1%} of the functions' CPU time")


if __name__ == "__main__":
    main()
