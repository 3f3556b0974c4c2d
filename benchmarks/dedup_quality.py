"""Near-duplicate quality of ``tropemix dedup`` on real text, against brute force and datasketch.

Builds a near-duplicate set from Wikipedia pages (``../shared/data/wikipedia``):
copies with word edits, insertions, deletions, shared boilerplate and reordered
paragraphs, some of them copies of copies.  Then:

* exact Jaccard over the same word 5-gram shingles for every pair, by brute force
  (a sparse document x shingle matrix times its transpose);
* ``tropemix dedup`` (the Beam stage, in-process runner) gives clusters;
* ``datasketch.MinHashLSH`` in memory with the same threshold, permutations, seed
  and weights, over ``datasketch.MinHash`` signatures, gives candidate pairs whose
  union-find components are compared with tropemix's clusters.  With
  ``--minhash datasketch`` the signatures are bit-identical, so the partitions
  must be identical; with ``fast`` (one-permutation MinHash) they agree closely.

Prints recall on pairs with true Jaccard >= 0.9, the false-merge rate (pairs put
in one cluster, directly or through a chain, whose true Jaccard is <= 0.5) and the
agreement with datasketch.

    PYTHONPATH=. python benchmarks/dedup_quality.py --bases 2000 --variants 2000 [--minhash datasketch]
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import tempfile
import time
from collections import Counter
from itertools import combinations
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from datasketch import MinHash, MinHashLSH
from scipy import sparse

from pipelines.stages import run_dedup
from schemas.config import DedupConfig
from transforms.dedup.minhash import MinHashParams, lsh_params, shingle_hashes, word_hashes
from transforms.text import normalize_for_dedup

DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "wikipedia"
RUNNER = "--runner=apache_beam.runners.portability.fn_api_runner.FnApiRunner"
BOILERPLATE = (
    "Home | About us | Contact | Privacy policy | Terms of use. This article is reproduced from our "
    "partner network. Subscribe to our newsletter for daily updates, share this page on social media, "
    "and read more stories like this one in our archive. All rights reserved. Cookies help us deliver "
    "our services; by using our services you agree to our use of cookies."
)


def load_pages(count: int, max_words: int) -> list[str]:
    """The first ``count`` pages with at least 150 words, cut to ``max_words`` words."""
    texts: list[str] = []
    for path in sorted(DATA.glob("pages-*.jsonl.gz")):
        with gzip.open(path, "rt", encoding="utf-8") as f:
            for line in f:
                text = json.loads(line)["text"]
                if len(text.split()) < 150:
                    continue
                paragraphs, words = [], 0
                for para in text.split("\n"):
                    if words >= max_words:
                        break
                    paragraphs.append(para)
                    words += len(para.split())
                texts.append("\n".join(paragraphs))
                if len(texts) == count:
                    return texts
    return texts


def mutate(text: str, rng: random.Random) -> tuple[str, str]:
    """One near-duplicate variant of ``text`` and the kind of change."""
    kind = rng.choice(["edit", "insert", "delete", "boilerplate", "reorder"])
    rate = rng.choice([0.005, 0.01, 0.02, 0.05, 0.1, 0.2])
    words = text.split(" ")
    if kind == "edit":
        for _ in range(max(1, int(rate * len(words)))):
            words[rng.randrange(len(words))] = f"edit{rng.randrange(10**6)}"
        return " ".join(words), kind
    if kind == "insert":
        for _ in range(max(1, int(rate * len(words)))):
            words.insert(rng.randrange(len(words) + 1), f"ins{rng.randrange(10**6)}")
        return " ".join(words), kind
    if kind == "delete":
        for _ in range(max(1, int(rate * len(words)))):
            if len(words) > 1:
                del words[rng.randrange(len(words))]
        return " ".join(words), kind
    if kind == "boilerplate":
        return f"{BOILERPLATE}\n{text}\n{BOILERPLATE}", kind
    paragraphs = [p for p in text.split("\n") if p.strip()]
    rng.shuffle(paragraphs)
    return "\n".join(paragraphs), kind


def build_corpus(bases: int, variants: int, max_words: int, seed: int) -> tuple[list[str], Counter[str]]:
    rng = random.Random(seed)
    texts = load_pages(bases, max_words)
    kinds: Counter[str] = Counter()
    for _ in range(variants):
        # A third of the variants are copies of earlier variants: chains of edits.
        parent = rng.randrange(len(texts)) if rng.random() < 0.33 else rng.randrange(bases)
        text, kind = mutate(texts[parent], rng)
        texts.append(text)
        kinds[kind] += 1
    return texts, kinds


def true_jaccard_pairs(shingles: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every pair (i < j) sharing a shingle with its exact Jaccard; others are 0."""
    vocab, inverse = np.unique(np.concatenate(shingles), return_inverse=True)
    rows = np.repeat(np.arange(len(shingles)), [len(s) for s in shingles])
    matrix = sparse.csr_matrix(
        (np.ones(len(rows), dtype=np.int32), (rows, inverse)), shape=(len(shingles), len(vocab))
    )
    inter = sparse.triu(matrix @ matrix.T, k=1).tocoo()
    sizes = np.array([len(s) for s in shingles])
    union = sizes[inter.row] + sizes[inter.col] - inter.data
    return inter.row, inter.col, inter.data / union


def datasketch_components(shingles: list[np.ndarray], cfg: DedupConfig) -> list[int]:
    """Union-find components of datasketch.MinHashLSH candidate pairs."""
    params = MinHashParams(cfg.num_perm, cfg.seed, cfg.bits)
    lsh = MinHashLSH(threshold=cfg.threshold, num_perm=cfg.num_perm)
    assert (lsh.b, lsh.r) == lsh_params(cfg.threshold, cfg.num_perm)
    sketches = []
    for i, s in enumerate(shingles):
        m = MinHash(num_perm=cfg.num_perm, seed=cfg.seed, scheme=f"affine{cfg.bits}", hashfunc=lambda v: v)
        m.update_batch(params.input_hashes(s).tolist())
        lsh.insert(i, m)
        sketches.append(m)
    parent = list(range(len(shingles)))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for i, m in enumerate(sketches):
        for j in lsh.query(m):
            a, b = find(i), find(j)
            if a != b:
                parent[max(a, b)] = min(a, b)
    return [find(i) for i in range(len(shingles))]


def groups_of(labels: list[int]) -> list[list[int]]:
    """Document indexes per cluster label."""
    groups: dict[int, list[int]] = {}
    for i, label in enumerate(labels):
        groups.setdefault(label, []).append(i)
    return list(groups.values())


def same_cluster_pairs(labels: list[int]) -> set[tuple[int, int]]:
    return {pair for members in groups_of(labels) for pair in combinations(sorted(members), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bases", type=int, default=1500, help="distinct Wikipedia pages")
    parser.add_argument("--variants", type=int, default=1500, help="near-duplicate copies")
    parser.add_argument("--max-words", type=int, default=1500, help="pages are cut to this many words")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threshold", type=float, default=0.8)
    parser.add_argument("--minhash", choices=["fast", "datasketch"], default="fast")
    args = parser.parse_args()

    cfg = DedupConfig(threshold=args.threshold, minhash=args.minhash, max_rounds=16, write_index=False)
    texts, kinds = build_corpus(args.bases, args.variants, args.max_words, args.seed)
    shingles = [shingle_hashes(word_hashes(normalize_for_dedup(t)), cfg.ngram) for t in texts]
    print(f"minhash={cfg.minhash}, threshold={cfg.threshold}, num_perm={cfg.num_perm}, ngram={cfg.ngram}")
    print(f"corpus: {len(texts)} documents ({args.bases} pages + variants {dict(sorted(kinds.items()))})")

    start = time.perf_counter()
    rows, cols, jac = true_jaccard_pairs(shingles)
    print(
        f"brute-force exact Jaccard: {len(jac)} pairs share a shingle ({time.perf_counter() - start:.1f} s)"
    )
    true_high = {(int(a), int(b)) for a, b, j in zip(rows, cols, jac, strict=True) if j >= 0.9}
    true_of = {(int(a), int(b)): float(j) for a, b, j in zip(rows, cols, jac, strict=True)}

    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "docs.jsonl"
        src.write_text("".join(json.dumps({"id": f"{i:06d}", "text": t}) + "\n" for i, t in enumerate(texts)))
        start = time.perf_counter()
        run_dedup(str(src), f"{tmp}/out", cfg, 1, [RUNNER])
        elapsed = time.perf_counter() - start
        ledger = pq.read_table(f"{tmp}/out/ledger").to_pylist()
    cluster_of = {int(r["id"].split("/")[1]): r["cluster_id"] for r in ledger}
    kept_tm = [cluster_of[i] == f"input/{i:06d}" for i in range(len(texts))]
    labels_tm = [hash(cluster_of[i]) for i in range(len(texts))]
    print(f"tropemix dedup: {len(texts)} docs in {elapsed:.1f} s, {len(set(labels_tm))} clusters")

    pairs_tm = same_cluster_pairs(labels_tm)
    recall = len(true_high & pairs_tm) / len(true_high) if true_high else 1.0
    false_merges = [p for p in pairs_tm if true_of.get(p, 0.0) <= 0.5]
    print(
        f"recall on pairs with true Jaccard >= 0.9: {recall:.4f} ({len(true_high & pairs_tm)}/{len(true_high)})"
    )
    print(
        f"false-merge rate (same cluster, true Jaccard <= 0.5): {len(false_merges) / max(1, len(pairs_tm)):.4f} "
        f"({len(false_merges)} of {len(pairs_tm)} same-cluster pairs)"
    )

    start = time.perf_counter()
    labels_ds = datasketch_components(shingles, cfg)
    pairs_ds = same_cluster_pairs(labels_ds)
    print(
        f"datasketch MinHashLSH (b, r = {lsh_params(cfg.threshold, cfg.num_perm)}): {time.perf_counter() - start:.1f} s"
    )
    agree = len(pairs_tm & pairs_ds) / max(1, len(pairs_tm | pairs_ds))
    # Ids are zero-padded indexes, so tropemix's survivor (smallest id) is the component's smallest index.
    kept_ds = [labels_ds[i] == i for i in range(len(texts))]
    same_fate = sum(a == b for a, b in zip(kept_tm, kept_ds, strict=True)) / len(texts)
    same_partition = {frozenset(g) for g in groups_of(labels_tm)} == {
        frozenset(g) for g in groups_of(labels_ds)
    }
    print(
        f"agreement with datasketch: same-cluster pairs Jaccard {agree:.4f} "
        f"(tropemix {len(pairs_tm)}, datasketch {len(pairs_ds)}, both {len(pairs_tm & pairs_ds)}); "
        f"identical partition: {same_partition}; same kept/dropped decision for {same_fate:.4f} of documents"
    )


if __name__ == "__main__":
    main()
