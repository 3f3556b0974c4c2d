"""Classify-stage throughput versus raw fastText ``predict`` on the same texts, same run.

Three figures, all on one core (one process, one worker thread):

- raw: ``model.predict`` over the documents (newlines made spaces, which fastText
  requires), ``k=-1`` so every label's probability comes back, as the stage needs;
  also with the stage's ``threshold=PREDICT_FLOOR`` (labels fastText gives no weight
  left out), so the stage is compared with both;
- functions: ``score_documents`` + ``annotate`` (preprocessing, chunking, predict,
  max aggregation, thresholds, narrative) in batches of the configured size;
- stage: ``ClassifyDocuments`` on the in-process FnApiRunner (one worker): the
  time of ``Create | ClassifyDocuments | Count`` minus that of ``Create | Count``
  (Beam's ``Create`` of large texts and the pipeline start are not the stage's
  cost); the end-to-end figure with them is printed too.

Each variant runs ``--repeats`` times, interleaved, and the best time counts: the
machine is shared, so the minimum is the least noisy estimate.

Run::

    PYTHONPATH=. python benchmarks/classify.py --docs 3000
"""

from __future__ import annotations

import argparse
import gzip
import json
import resource
import time
from collections.abc import Callable
from pathlib import Path

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from schemas.config import ClassifierConfig
from transforms.classify import (
    PREDICT_FLOOR,
    ClassifyDocuments,
    annotate,
    effective_thresholds,
    load_fasttext,
    read_model_card,
    resolve_taxonomy,
    score_documents,
)

REPO = Path(__file__).resolve().parent.parent
FN_API_RUNNER = "apache_beam.runners.portability.fn_api_runner.FnApiRunner"


def load_docs(n: int) -> list[dict[str, str]]:
    docs = []
    for path in sorted((REPO.parent / "shared" / "data" / "wikipedia").glob("pages-*.jsonl.gz")):
        with gzip.open(path, "rt", encoding="utf-8") as f:
            for line in f:
                r = json.loads(line)
                docs.append({"id": r["id"], "source": "wiki", "text": r["text"]})
                if len(docs) == n:
                    return docs
    return docs


def timed(fn: Callable[[], None]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--docs", type=int, default=3000)
    p.add_argument("--model", default=str(REPO / "models" / "tropes-v0.ftz"))
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()

    cfg = ClassifierConfig(model=args.model)
    card = read_model_card(args.model)
    thresholds = effective_thresholds(cfg, card)
    taxonomy = resolve_taxonomy(cfg, card)
    model = load_fasttext(args.model)
    docs = load_docs(args.docs)
    texts = [d["text"] for d in docs]
    mb = sum(len(t.encode("utf-8")) for t in texts) / 1e6
    flat = [t.replace("\n", " ") for t in texts]

    def raw() -> None:
        model.predict(flat, k=-1, threshold=0.0)

    def raw_floor() -> None:
        model.predict(flat, k=-1, threshold=PREDICT_FLOOR)

    def functions() -> None:
        for i in range(0, len(docs), cfg.batch_size):
            batch = docs[i : i + cfg.batch_size]
            scores = score_documents(
                model, [d["text"] for d in batch], cfg.chunk_chars, cfg.aggregate, card.get("label_scores")
            )
            for d, s in zip(batch, scores, strict=True):
                annotate(d, s, thresholds, taxonomy)  # type: ignore[arg-type]

    def pipeline(classify: bool) -> Callable[[], None]:
        def run() -> None:
            options = PipelineOptions([f"--runner={FN_API_RUNNER}", "--direct_num_workers=1"])
            with beam.Pipeline(runner=FN_API_RUNNER, options=options) as pipe:
                pcoll = pipe | "Docs" >> beam.Create(docs, reshuffle=False)
                if classify:
                    pcoll = pcoll | "Classify" >> ClassifyDocuments(cfg)
                _ = pcoll | "Count" >> beam.combiners.Count.Globally()

        return run

    variants = {
        "raw": raw,
        "raw_floor": raw_floor,
        "functions": functions,
        "empty": pipeline(False),
        "stage": pipeline(True),
    }
    best = {name: float("inf") for name in variants}
    for _ in range(args.repeats):
        for name, fn in variants.items():
            best[name] = min(best[name], timed(fn))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    n = len(docs)
    t_raw, t_fn = best["raw"], best["functions"]
    t_stage = best["stage"] - best["empty"]
    print(f"docs {n}, {mb:.1f} MB of text, model {Path(args.model).name}, best of {args.repeats}, 1 core")
    t_floor = best["raw_floor"]
    print(f"raw fastText predict     : {n / t_raw:7.0f} docs/s  {mb / t_raw:6.2f} MB/s")
    print(f"raw, threshold=floor     : {n / t_floor:7.0f} docs/s  {mb / t_floor:6.2f} MB/s")
    print(
        f"score+annotate functions : {n / t_fn:7.0f} docs/s  {mb / t_fn:6.2f} MB/s  ({t_raw / t_fn:.0%} of raw)"
    )
    print(
        f"ClassifyDocuments stage  : {n / t_stage:7.0f} docs/s  {mb / t_stage:6.2f} MB/s  ({t_raw / t_stage:.0%} of raw, {t_floor / t_stage:.0%} of raw with the floor)"
    )
    print(
        f"end to end incl. Create  : {n / best['stage']:7.0f} docs/s  "
        f"(Create|Count alone {best['empty']:.1f} s, with Classify {best['stage']:.1f} s)"
    )
    print(f"peak RSS {rss:.0f} MB")


if __name__ == "__main__":
    main()
