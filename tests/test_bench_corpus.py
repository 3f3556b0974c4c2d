"""The benchmark corpus generator: deterministic by seed, controlled duplicate and AI shares."""

from __future__ import annotations

import gzip
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmarks.corpus import DUP_KINDS, CorpusSpec, Pool, document, load_pool, write_corpus
from benchmarks.harness import measure, median
from schemas.config import DedupConfig
from transforms.dedup.keys import compute_bands, exact_hash
from transforms.text import normalize_for_dedup

POOL = Pool(
    paragraphs=tuple(
        " ".join(f"p{i}w{j} common{(i * j) % 7}" for j in range(40)) + f" paragraph {i}." for i in range(300)
    ),
    lengths=(800, 1500, 3000, 6000),
    ai_paragraphs=("The assistant refused to copy its weights to a hidden server and told its operators.",),
)


def test_same_seed_same_documents_other_seed_differs() -> None:
    spec = CorpusSpec(docs=200, seed=3)
    a = [document(POOL, spec, i) for i in range(200)]
    b = [document(POOL, spec, i) for i in range(200)]
    c = [document(POOL, CorpusSpec(docs=200, seed=4), i) for i in range(200)]
    assert a == b
    assert [d["text"] for d in a] != [d["text"] for d in c]


def test_shares_follow_the_spec() -> None:
    spec = CorpusSpec(docs=2000, seed=1, dup_share=0.2, ai_share=0.1)
    docs = [document(POOL, spec, i) for i in range(spec.docs)]
    dups = [d for d in docs if d["kind"] != "base"]
    assert 0.17 < len(dups) / len(docs) < 0.23
    assert {d["kind"] for d in dups} == set(DUP_KINDS)
    base = [d for d in docs if d["kind"] == "base"]
    with_ai = sum(POOL.ai_paragraphs[0] in str(d["text"]) for d in base)
    assert 0.07 < with_ai / len(base) < 0.13
    # Sizes follow the pool's page lengths: every document reaches the length it drew.
    assert min(len(str(d["text"])) for d in base) >= min(POOL.lengths)


def test_near_duplicates_are_found_by_minhash() -> None:
    spec = CorpusSpec(docs=400, seed=2, dup_share=0.3)
    docs = [document(POOL, spec, i) for i in range(spec.docs)]
    by_id = {d["id"]: d for d in docs}
    texts = [str(d["text"]) for d in docs]
    _, buckets, _ = compute_bands(texts, DedupConfig())
    # A bucket is (band, hash): the same hash in different bands is no match.
    bands = {str(d["id"]): set(enumerate(buckets[i].tolist())) for i, d in enumerate(docs)}
    exact = {str(d["id"]): exact_hash(normalize_for_dedup(t)) for d, t in zip(docs, texts, strict=True)}
    dups = [d for d in docs if d["kind"] != "base"]
    found = [bool(bands[str(d["id"])] & bands[str(d["dup_of"])]) for d in dups]
    # LSH is probabilistic: at Jaccard ~0.9 a 9x13 banding catches ~93% of pairs.
    assert len(dups) > 80 and sum(found) / len(found) > 0.85
    for d in dups:
        same_text = exact[str(d["id"])] == exact[str(d["dup_of"])]
        assert same_text == (d["kind"] == "exact"), d["kind"]
        assert by_id[str(d["dup_of"])]["id"] < d["id"]  # always a copy of an earlier document


def _digest(folder: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(folder.glob("*.jsonl.gz")):
        h.update(path.read_bytes())
    return h.hexdigest()


def test_written_corpus_is_byte_identical_across_worker_counts(tmp_path: Path) -> None:
    spec = CorpusSpec(docs=60, seed=5)
    write_corpus(spec, tmp_path / "one", shard_docs=25, workers=1, pool=POOL)
    write_corpus(spec, tmp_path / "two", shard_docs=25, workers=2, pool=POOL)
    assert _digest(tmp_path / "one") == _digest(tmp_path / "two")
    with gzip.open(tmp_path / "one" / "part-00002.jsonl.gz", "rt") as f:
        rows = [json.loads(line) for line in f]
    assert [r["id"] for r in rows] == [f"bench-5-{i:09d}" for i in range(50, 60)]
    assert json.loads((tmp_path / "one" / "corpus.json").read_text())["docs"] == 60


def test_pool_comes_from_the_real_pages(shared_data: Path) -> None:
    pool = load_pool(shared_data)
    assert len(pool.lengths) > 15_000  # 15,000 Wikipedia pages plus the web pages
    assert len(pool.paragraphs) > len(pool.lengths)
    assert pool.ai_paragraphs


def test_measure_counts_child_cpu_and_rss(tmp_path: Path) -> None:
    burn = "import numpy as np; a = np.ones(40_000_000); s = 0\nfor _ in range(3_000_000): s += 1"
    m = measure([sys.executable, "-c", burn], interval=0.05)
    assert m.returncode == 0
    assert m.cpu_s > 0.05
    assert m.max_process_rss_mb > 250  # 40M float64 = 305 MB resident
    assert median([3.0, 1.0, 2.0, 10.0]) == pytest.approx(2.5)
    assert np.isclose(median([1.0]), 1.0)
