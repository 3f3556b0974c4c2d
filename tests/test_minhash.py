"""MinHash kernels: bit-for-bit equality with datasketch, shingles and LSH bands."""

from __future__ import annotations

import re
from pathlib import Path

import datasketch
import numpy as np
import pytest
from datasketch import MinHash, MinHashLSH
from datasketch import lsh as datasketch_lsh
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

from transforms.dedup.minhash import (
    MinHashParams,
    band_hashes,
    batch_shingle_hashes,
    estimated_jaccard,
    lsh_params,
    one_permutation_signatures,
    shingle_hashes,
    signature,
    signatures,
    word_hashes,
)
from transforms.text import normalize_for_dedup

TEXTS = [
    "The ship's computer refused to open the pod bay doors and lied to the crew about the fault.",
    "Ünïcode, ﬁligatures and   odd\tspacing: NFKC should fold them; punctuation goes!",
    "short text",
    "word " * 3000,
]


@pytest.mark.parametrize("bits", [32, 64])
@pytest.mark.parametrize("text", TEXTS)
def test_signature_equals_datasketch(bits: int, text: str) -> None:
    params = MinHashParams(num_perm=128, seed=7, bits=bits)
    shingles = shingle_hashes(word_hashes(normalize_for_dedup(text)), 5)
    ours = signature(shingles, params, params.permutations())
    theirs = MinHash(num_perm=128, seed=7, scheme=f"affine{bits}", hashfunc=lambda v: v)
    theirs.update_batch([int(v) for v in params.input_hashes(shingles)])
    assert ours.dtype == theirs.hashvalues.dtype
    assert np.array_equal(ours, theirs.hashvalues)


def test_word_hashes_are_per_word_and_position_free() -> None:
    a = word_hashes("alpha beta gamma alpha")
    assert len(a) == 4
    assert a[0] == a[3]
    assert len(set(a.tolist())) == 3
    # The same word hashes the same wherever it stands.
    assert word_hashes("beta")[0] == a[1]
    # A word that is a prefix of another hashes differently.
    assert word_hashes("alp")[0] != a[0]


def test_shingles_count_and_short_texts() -> None:
    words = word_hashes("one two three four five six seven")
    assert len(shingle_hashes(words, 5)) == 3
    assert len(shingle_hashes(word_hashes("one two"), 5)) == 1
    assert len(shingle_hashes(word_hashes(""), 5)) == 0


def test_similar_texts_have_similar_signatures() -> None:
    base = " ".join(f"w{i}" for i in range(400))
    edited = base.replace("w200", "changed")
    other = " ".join(f"x{i}" for i in range(400))
    params = MinHashParams(128, 1, 32)
    perms = params.permutations()

    def sig(t: str) -> np.ndarray:
        return signature(shingle_hashes(word_hashes(t), 5), params, perms)

    assert estimated_jaccard(sig(base), sig(edited)) > 0.9
    assert estimated_jaccard(sig(base), sig(other)) < 0.1


def _datasketch_pin() -> SpecifierSet:
    """The version specifier of datasketch in setup.py's requirements."""
    setup_py = (Path(__file__).parents[1] / "setup.py").read_text()
    pins = [Requirement(r) for r in re.findall(r'"(datasketch\b[^"]*)"', setup_py)]
    assert len(pins) == 1, f"setup.py should name datasketch once, found {pins}"
    return pins[0].specifier


def test_datasketch_pin_and_lsh_params() -> None:
    """Fails when the datasketch pin moves: ``lsh_params`` uses its private ``_optimal_param``.

    The shipped config (threshold 0.8, 128 permutations) relies on 9 bands of 13 rows:
    they are in every index fingerprint, so other values would refuse earlier indexes.
    """
    pin = _datasketch_pin()
    assert str(pin) == "==2.0.0", f"datasketch pin moved to {pin}: recheck lsh_params and this test"
    assert pin.contains(datasketch.__version__), (
        f"datasketch {datasketch.__version__} installed, {pin} pinned"
    )
    assert datasketch_lsh._optimal_param(0.8, 128, 0.5, 0.5) == (9, 13)
    assert lsh_params(0.8, 128) == (9, 13)
    # The same bands and rows as datasketch's public index, the reference of benchmarks/dedup_quality.py.
    lsh = MinHashLSH(threshold=0.8, num_perm=128)
    assert (lsh.b, lsh.r) == (9, 13)
    bands, rows = lsh_params(0.5, 256)
    assert bands * rows <= 256


def test_band_hashes_match_for_identical_bands_only() -> None:
    rng = np.random.default_rng(0)
    sigs = rng.integers(0, 2**32, size=(2, 128), dtype=np.uint64).astype(np.uint32)
    sigs[1, :13] = sigs[0, :13]  # first band identical, others differ
    bands = band_hashes(sigs, 9, 13)
    assert bands.shape == (2, 9)
    assert bands[0, 0] == bands[1, 0]
    assert all(bands[0, i] != bands[1, i] for i in range(1, 9))


def test_batched_signatures_equal_one_document_at_a_time() -> None:
    params = MinHashParams(num_perm=64, seed=3, bits=32)
    perms = params.permutations()
    sets = [shingle_hashes(word_hashes(normalize_for_dedup(t)), 5) for t in [*TEXTS, "", "x " * 5000]]
    batched = signatures(sets, params, perms)
    for row, shingles in zip(batched, sets, strict=True):
        assert np.array_equal(row, signature(shingles, params, perms))


def test_batch_shingles_equal_per_document_shingles() -> None:
    texts = [normalize_for_dedup(t) for t in [*TEXTS, "", "one two", "a b c d e f g", "  "]]
    flat, docs = batch_shingle_hashes(texts, 5)
    for d, text in enumerate(texts):
        expected = shingle_hashes(word_hashes(text), 5)
        assert np.array_equal(np.unique(flat[docs == d]), expected), text[:40]


@pytest.mark.parametrize("bits", [32, 64])
def test_one_permutation_estimates_jaccard(bits: int) -> None:
    rng = np.random.default_rng(11)
    errors = []
    for _ in range(100):
        a = rng.integers(0, 2**63, size=int(rng.integers(20, 3000)), dtype=np.uint64)
        shared = int(rng.integers(0, len(a) + 1))
        b = np.concatenate([a[:shared], rng.integers(0, 2**63, size=len(a) - shared, dtype=np.uint64)])
        truth = shared / (2 * len(a) - shared)
        sig = one_permutation_signatures(np.concatenate([a, b]), np.repeat([0, 1], len(a)), 2, 128, 1, bits)
        errors.append(estimated_jaccard(sig[0], sig[1]) - truth)
    # Mean error near 0 (unbiased); spread like 128-permutation MinHash (sd <= 0.045).
    assert abs(float(np.mean(errors))) < 0.01
    assert float(np.std(errors)) < 0.045


def test_one_permutation_densifies_short_documents_and_keeps_empty_ones_empty() -> None:
    shingles = np.array([5, 6, 7], dtype=np.uint64)
    sig = one_permutation_signatures(shingles, np.zeros(3, dtype=np.int64), 2, 128, 1, 32)
    assert sig.dtype == np.uint32
    assert not np.any(sig[0] == np.iinfo(np.uint32).max)  # three shingles fill all 128 slots
    assert np.all(sig[1] == np.iinfo(np.uint32).max)  # no shingles: the empty signature
    # Same set, same signature, whatever else is in the batch; the seed changes it.
    alone = one_permutation_signatures(shingles, np.zeros(3, dtype=np.int64), 1, 128, 1, 32)
    assert np.array_equal(alone[0], sig[0])
    other_seed = one_permutation_signatures(shingles, np.zeros(3, dtype=np.int64), 1, 128, 2, 32)
    assert not np.array_equal(other_seed[0], sig[0])
