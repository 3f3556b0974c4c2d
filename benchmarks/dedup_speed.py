"""Dedup speed: MinHash signatures against datasketch, and the whole ``tropemix dedup`` stage.

Signatures (one process, so per core), on the same normalized Wikipedia texts:

* tropemix ``minhash: fast``: word hashes, 5-gram shingle hashes and batched
  one-permutation signatures, all numpy;
* tropemix ``minhash: datasketch``: the same with batched affine permutations;
* datasketch as usually driven: 5-gram strings, ``encode``, ``MinHash.update_batch``
  with its default SHA-1 hash;
* datasketch fed tropemix's shingle hashes (identity ``hashfunc``), the kernel alone.

Whole stage: ``tropemix dedup`` as its own process (read JSONL, exact + LSH +
clustering + decisions, write kept documents, ledger and index) on the
in-process runner over ``--docs`` documents: 250-word chunks of Wikipedia pages
plus near-duplicate copies.  Prints docs/s and that process's peak RSS.

    PYTHONPATH=. python benchmarks/dedup_speed.py signatures --docs 2000
    PYTHONPATH=. python benchmarks/dedup_speed.py stage --docs 10000
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from datasketch import MinHash

from transforms.dedup.minhash import (
    MinHashParams,
    batch_shingle_hashes,
    one_permutation_signatures,
    shingle_hashes,
    signatures,
    word_hashes,
)
from transforms.text import normalize_for_dedup

DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "wikipedia"
RUNNER = "--runner=apache_beam.runners.portability.fn_api_runner.FnApiRunner"


def wiki_texts() -> Iterator[str]:
    for path in sorted(DATA.glob("pages-*.jsonl.gz")):
        with gzip.open(path, "rt", encoding="utf-8") as f:
            yield from (json.loads(line)["text"] for line in f)


def chunks(count: int, words_per_doc: int, seed: int) -> list[str]:
    """``count`` documents: word chunks of the pages (at most 5 in 6), then near-duplicate copies."""
    rng = random.Random(seed)
    docs: list[str] = []
    wanted = int(count / 1.2)
    for text in wiki_texts():
        words = text.split(" ")
        docs.extend(
            " ".join(words[start : start + words_per_doc])
            for start in range(0, len(words) - words_per_doc // 2, words_per_doc)
        )
        if len(docs) >= wanted:
            break
    originals = len(docs[:wanted])
    del docs[originals:]
    while len(docs) < count:
        words = docs[rng.randrange(originals)].split(" ")
        for _ in range(rng.choice([1, 2, 5, 10])):
            words[rng.randrange(len(words))] = f"edit{rng.randrange(10**6)}"
        docs.append(" ".join(words))
    return docs


def bench_signatures(count: int, ngram: int, num_perm: int, bits: int) -> None:
    texts = [normalize_for_dedup(t) for _, t in zip(range(count), wiki_texts(), strict=False)]
    words = sum(len(t.split()) for t in texts)
    print(
        f"{len(texts)} Wikipedia pages, {words / len(texts):.0f} words each on average, num_perm={num_perm}"
    )
    params = MinHashParams(num_perm=num_perm, seed=1, bits=bits)
    perms = params.permutations()
    # Warm-up: numpy's first calls and the cached hash powers are not what is measured.
    warm = batch_shingle_hashes(texts[:256], ngram)
    one_permutation_signatures(*warm, 256, num_perm, 1, bits)
    signatures([shingle_hashes(word_hashes(t), ngram) for t in texts[:64]], params, perms)

    start = time.perf_counter()
    for i in range(0, len(texts), 256):
        flat, docs = batch_shingle_hashes(texts[i : i + 256], ngram)
        one_permutation_signatures(flat, docs, len(texts[i : i + 256]), num_perm, 1, bits)
    t_fast = time.perf_counter() - start

    start = time.perf_counter()
    ours = []
    for i in range(0, len(texts), 256):
        batch = [shingle_hashes(word_hashes(t), ngram) for t in texts[i : i + 256]]
        ours.append(signatures(batch, params, perms))
    t_ours = time.perf_counter() - start

    start = time.perf_counter()
    for t in texts:
        w = t.split(" ")
        grams = {" ".join(w[j : j + ngram]) for j in range(max(1, len(w) - ngram + 1))}
        m = MinHash(num_perm=num_perm, seed=1, scheme=f"affine{bits}")
        m.update_batch([g.encode("utf-8") for g in grams])
    t_ds = time.perf_counter() - start

    shingles = [shingle_hashes(word_hashes(t), ngram) for t in texts]
    inputs = [params.input_hashes(s).tolist() for s in shingles]
    start = time.perf_counter()
    theirs = []
    for values in inputs:
        m = MinHash(num_perm=num_perm, seed=1, scheme=f"affine{bits}", hashfunc=lambda v: v)
        m.update_batch(values)
        theirs.append(m.hashvalues)
    t_kernel = time.perf_counter() - start
    assert np.array_equal(np.vstack(ours), np.vstack(theirs)), "signatures differ from datasketch"

    n = len(texts)
    print(f"tropemix minhash=fast (words -> shingles -> signatures): {n / t_fast:8.0f} docs/s per core")
    print(f"tropemix minhash=datasketch (same, affine permutations):  {n / t_ours:8.0f} docs/s per core")
    print(
        f"datasketch update_batch, 5-gram strings + SHA-1:          {n / t_ds:8.0f} docs/s per core "
        f"(fast {t_ds / t_fast:.1f}x faster, datasketch mode {t_ds / t_ours:.1f}x)"
    )
    print(
        f"datasketch update_batch on tropemix shingle hashes:       {n / t_kernel:8.0f} docs/s per core "
        f"(fast {t_kernel / t_fast:.1f}x faster, datasketch mode {t_kernel / t_ours:.1f}x; "
        "datasketch-mode signatures identical)"
    )


def bench_stage(count: int, words_per_doc: int) -> None:
    docs = chunks(count, words_per_doc, seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "docs.jsonl"
        src.write_text("".join(json.dumps({"id": f"{i:07d}", "text": t}) + "\n" for i, t in enumerate(docs)))
        mb = src.stat().st_size / 1e6
        del docs
        print(f"{count} documents ({words_per_doc}-word Wikipedia chunks + near copies), {mb:.0f} MB JSONL")
        # The stage runs as its own process, so its peak RSS is the job's alone.
        command = [
            sys.executable,
            "-m",
            "pipelines.cli",
            "dedup",
            "--input",
            str(src),
            "--output",
            f"{tmp}/out",
        ]
        command += ["--shards", "4", RUNNER]
        start = time.perf_counter()
        subprocess.run(command, check=True, cwd=Path(__file__).resolve().parent.parent)
        elapsed = time.perf_counter() - start
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"command: {' '.join(command[1:])}")
    print(
        f"tropemix dedup stage: {count / elapsed:.0f} docs/s, {mb / elapsed:.2f} MB/s "
        f"({elapsed:.0f} s wall, one in-process worker), peak RSS {rss:.0f} MB"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("what", choices=["signatures", "stage"])
    parser.add_argument("--docs", type=int, default=2000)
    parser.add_argument("--words", type=int, default=250, help="words per document in the stage benchmark")
    parser.add_argument("--num-perm", type=int, default=128)
    parser.add_argument("--bits", type=int, choices=[32, 64], default=32)
    args = parser.parse_args()
    if args.what == "signatures":
        bench_signatures(args.docs, 5, args.num_perm, args.bits)
    else:
        bench_stage(args.docs, args.words)


if __name__ == "__main__":
    main()
