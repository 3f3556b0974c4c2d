"""fastText ``predict`` cost per document on 400-character chunks, for comparing models.

Takes the first 1,000 Wikipedia pages of at least 11 KB, cuts each to 11 KB, chunks
and preprocesses them as the classify stage does (``chunk_text``, ``fasttext_text``;
not timed), then times ``model.predict(chunks, k=-1)`` per model: best of
``--rounds`` interleaved rounds, one thread.

Run::

    PYTHONPATH=. python benchmarks/predict_chunks.py models/tropes-v0.ftz OTHER.ftz \\
        --pages ../shared/data/wikipedia/pages-00.jsonl.gz
"""

from __future__ import annotations

import argparse
import gzip
import json
import time

import fasttext

from transforms.text import chunk_text, fasttext_text


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", nargs="+")
    p.add_argument("--pages", default="../shared/data/wikipedia/pages-00.jsonl.gz")
    p.add_argument("--docs", type=int, default=1000)
    p.add_argument("--doc-chars", type=int, default=11_000)
    p.add_argument("--rounds", type=int, default=7)
    args = p.parse_args()
    docs: list[str] = []
    with gzip.open(args.pages, "rt", encoding="utf-8") as f:
        for line in f:
            text = json.loads(line)["text"]
            if len(text) >= args.doc_chars:
                docs.append(text[: args.doc_chars])
            if len(docs) >= args.docs:
                break
    chunks = [fasttext_text(c) for d in docs for c in chunk_text(d, 400)]
    print(f"{len(docs)} docs, {len(chunks)} chunks")
    models = {path: fasttext.load_model(path) for path in args.models}
    best = dict.fromkeys(models, float("inf"))
    for _ in range(args.rounds):
        for path, model in models.items():
            t = time.perf_counter()
            model.predict(chunks, k=-1, threshold=0.0)
            best[path] = min(best[path], time.perf_counter() - t)
    for path in models:
        print(f"{path}: {best[path] / len(docs) * 1000:.2f} ms/doc")


if __name__ == "__main__":
    main()
