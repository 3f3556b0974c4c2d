"""Classify-stage throughput versus raw fastText ``predict`` on the same texts, same run.

Three figures, all on one core (one process, one worker thread):

- raw: ``model.predict`` over the documents (newlines made spaces, which fastText
  requires), ``k=-1`` so every label's probability comes back, as the stage needs;
  also with the stage's ``threshold=PREDICT_FLOOR`` (labels fastText gives no weight
  left out), so the stage is compared with both; and on the documents already
  preprocessed (``fasttext_text``, untimed), whole: fastText predicts preprocessed
  text faster (words with punctuation attached are out of its vocabulary, so their
  character n-grams are hashed at predict time), so this is the strictest baseline;
  and on the stage's own 400-character chunks (``chunk_text``, untimed), raw: the texts
  the stage hands fastText, less its preprocessing;
- functions: ``score_documents`` + ``annotate`` (preprocessing, chunking, predict,
  max aggregation, thresholds, narrative) in batches of the configured size;
- stage: ``ClassifyDocuments`` on the in-process FnApiRunner (one worker): the
  time of ``Read | ClassifyDocuments | Count`` minus that of ``Read | Count``, where
  ``Read`` is ``ReadFromText`` of the same documents as JSON lines (written once to a
  temporary file) and a JSON parse, so the pipeline start is not the stage's cost;
  the end-to-end figure is printed too.  (An earlier version used ``Create``, whose
  pickling of the texts took twice as long as the stage and made the difference noisy.)

Each variant runs ``--repeats`` times, interleaved, and the best time counts: the
machine is shared, so the minimum is the least noisy estimate.  Times are CPU
seconds of the process (``time.process_time``, all threads), so the figures are
docs/s per core and another job on the second core does not enter them; wall-clock
figures are printed after them.

Run::

    PYTHONPATH=. python benchmarks/classify.py --docs 3000
"""

from __future__ import annotations

import argparse
import gzip
import json
import resource
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from schemas.config import ClassifierConfig
from schemas.taxonomy import label_scores_of
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
from transforms.text import chunk_text, fasttext_text

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


def timed(fn: Callable[[], None]) -> tuple[float, float]:
    """CPU seconds of this process (all threads) and wall seconds of one call."""
    cpu, wall = time.process_time(), time.perf_counter()
    fn()
    return time.process_time() - cpu, time.perf_counter() - wall


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
    preprocessed = [fasttext_text(t) for t in texts]
    chunks = [c.replace("\n", " ") for t in texts for c in chunk_text(t, cfg.chunk_chars)]

    def raw() -> None:
        model.predict(flat, k=-1, threshold=0.0)

    def raw_preprocessed() -> None:
        model.predict(preprocessed, k=-1, threshold=PREDICT_FLOOR)

    def raw_floor() -> None:
        model.predict(flat, k=-1, threshold=PREDICT_FLOOR)

    def raw_chunks() -> None:
        model.predict(chunks, k=-1, threshold=PREDICT_FLOOR)

    def functions() -> None:
        for i in range(0, len(docs), cfg.batch_size):
            batch = docs[i : i + cfg.batch_size]
            scores = score_documents(
                model, [d["text"] for d in batch], cfg.chunk_chars, cfg.aggregate, label_scores_of(card)
            )
            for d, s in zip(batch, scores, strict=True):
                annotate(d, s, thresholds, taxonomy)  # type: ignore[arg-type]

    tmp = tempfile.TemporaryDirectory(prefix="tropemix-classify-bench-")
    docs_path = str(Path(tmp.name) / "docs.jsonl")
    with open(docs_path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(d) + "\n" for d in docs)

    def pipeline(classify: bool) -> Callable[[], None]:
        def run() -> None:
            options = PipelineOptions([f"--runner={FN_API_RUNNER}", "--direct_num_workers=1"])
            with beam.Pipeline(runner=FN_API_RUNNER, options=options) as pipe:
                pcoll = pipe | "Read" >> beam.io.ReadFromText(docs_path) | "Parse" >> beam.Map(json.loads)
                if classify:
                    pcoll = pcoll | "Classify" >> ClassifyDocuments(cfg)
                _ = pcoll | "Count" >> beam.combiners.Count.Globally()

        return run

    variants = {
        "raw": raw,
        "raw_floor": raw_floor,
        "raw_preprocessed": raw_preprocessed,
        "raw_chunks": raw_chunks,
        "functions": functions,
        "empty": pipeline(False),
        "stage": pipeline(True),
    }
    best = {name: float("inf") for name in variants}
    best_wall = dict(best)
    for _ in range(args.repeats):
        for name, fn in variants.items():
            cpu, wall = timed(fn)
            best[name] = min(best[name], cpu)
            best_wall[name] = min(best_wall[name], wall)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"docs {len(docs)}, {mb:.1f} MB of text, model {Path(args.model).name}, best of {args.repeats}")
    report("CPU seconds (docs/s per core)", best, len(docs), mb)
    report("wall seconds", best_wall, len(docs), mb)
    print(f"peak RSS {rss:.0f} MB")


def report(title: str, best: dict[str, float], n: int, mb: float) -> None:
    """Prints one table of docs/s from the best seconds of each variant."""
    t_raw, t_floor, t_fn = best["raw"], best["raw_floor"], best["functions"]
    t_pre, t_chunks = best["raw_preprocessed"], best["raw_chunks"]
    t_stage = best["stage"] - best["empty"]
    print(f"-- {title}")
    print(f"raw fastText predict     : {n / t_raw:7.0f} docs/s  {mb / t_raw:6.2f} MB/s")
    print(f"raw, threshold=floor     : {n / t_floor:7.0f} docs/s  {mb / t_floor:6.2f} MB/s")
    print(f"raw, preprocessed, floor : {n / t_pre:7.0f} docs/s  {mb / t_pre:6.2f} MB/s")
    print(f"raw, the stage's chunks : {n / t_chunks:7.0f} docs/s  {mb / t_chunks:6.2f} MB/s")
    print(
        f"score+annotate functions : {n / t_fn:7.0f} docs/s  {mb / t_fn:6.2f} MB/s  ({t_raw / t_fn:.0%} of raw)"
    )
    print(
        f"ClassifyDocuments stage  : {n / t_stage:7.0f} docs/s  {mb / t_stage:6.2f} MB/s  "
        f"({t_raw / t_stage:.0%} of raw, {t_floor / t_stage:.0%} with the floor, "
        f"{t_pre / t_stage:.0%} of preprocessed, {t_chunks / t_stage:.0%} of chunks)"
    )
    print(
        f"end to end incl. Read    : {n / best['stage']:7.0f} docs/s  "
        f"(Read|Count alone {best['empty']:.1f} s, with Classify {best['stage']:.1f} s)"
    )


if __name__ == "__main__":
    main()
