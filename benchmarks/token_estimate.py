"""How far the built-in token estimate is from a real byte-level BPE count.

Trains nothing and downloads nothing: pass a ``tokenizer.json`` (for the figures in
BENCHMARKS.md, a 32k byte-level BPE trained with ``tokenizers`` on
``wikipedia/pages-00.jsonl.gz``; ``--train`` builds that one), then the script
tokenizes held-out files and prints the per-file and per-document error of
``transforms.blend.units.estimate_tokens``, plus a least-squares fit of its two constants.

    python benchmarks/token_estimate.py --tokenizer /tmp/bpe32k.json --train \
        ../shared/data/wikipedia/pages-01.jsonl.gz ../shared/data/wikipedia/pages-02.jsonl.gz \
        ../shared/data/web/trafilatura-pages.jsonl.gz
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import time
from collections.abc import Iterator

import numpy as np

from transforms.blend.units import _PIECES, estimate_tokens, load_tokenizer

TRAIN_FILE = "../shared/data/wikipedia/pages-00.jsonl.gz"


def texts(path: str) -> Iterator[str]:
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        for line in f:
            yield json.loads(line)["text"]


def train(path: str, vocab_size: int) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tok.train_from_iterator(texts(TRAIN_FILE), trainer)
    tok.save(path)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokenizer", required=True)
    parser.add_argument("--train", action="store_true", help="train a BPE on pages-00 first")
    parser.add_argument("--vocab-size", type=int, default=32000)
    parser.add_argument("files", nargs="+")
    args = parser.parse_args()
    if args.train and not os.path.exists(args.tokenizer):
        train(args.tokenizer, args.vocab_size)
    tok = load_tokenizer(args.tokenizer)
    rows = []
    for path in args.files:
        docs = list(texts(path))
        t0 = time.perf_counter()
        bpe = [len(e.ids) for e in tok.encode_batch(docs, add_special_tokens=False)]
        t_bpe = time.perf_counter() - t0
        t0 = time.perf_counter()
        est = [estimate_tokens(d) for d in docs]
        t_est = time.perf_counter() - t0
        mb = sum(len(d.encode("utf-8")) for d in docs) / 1e6
        pieces = [len(_PIECES.findall(d)) for d in docs]
        nbytes = [len(d.encode("utf-8")) for d in docs]
        rows.append((pieces, nbytes, bpe))
        rel = np.array([(e - b) / b for e, b in zip(est, bpe, strict=True) if b > 0])
        print(
            f"{os.path.basename(path)}: {len(docs)} docs {mb:.1f} MB; BPE {sum(bpe)} tokens "
            f"({mb / t_bpe:.1f} MB/s), estimate {sum(est)} ({mb / t_est:.1f} MB/s); "
            f"total error {(sum(est) - sum(bpe)) / sum(bpe):+.2%}; per-doc error median "
            f"{np.median(rel):+.2%}, p5 {np.percentile(rel, 5):+.2%}, p95 {np.percentile(rel, 95):+.2%}"
        )
    x = np.array([[p, b] for r in rows for p, b in zip(r[0], r[1], strict=True)], dtype=float)
    y = np.array([t for r in rows for t in r[2]], dtype=float)
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    print(f"least-squares fit over all files: tokens = {coef[0]:.4f} * pieces + {coef[1]:.4f} * bytes")


if __name__ == "__main__":
    main()
