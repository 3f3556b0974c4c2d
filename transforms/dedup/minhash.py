"""Vectorized MinHash kernels: word n-gram shingle hashes, signatures and LSH bands.

No Python loop touches individual words or shingles.  A document's normalized
UTF-8 bytes become a numpy array; word hashes come from a polynomial prefix hash
(mod 2**64, evaluated with cumulative sums); shingle hashes combine ``n``
consecutive word hashes with ``n`` vector operations.

Two signature schemes:

* ``one_permutation_signatures`` (the default, ``dedup.minhash: fast``): one hash
  per shingle, binned, with densification; the work does not grow with ``num_perm``.
* ``signatures`` (``dedup.minhash: datasketch``): ``num_perm`` affine permutations
  following ``datasketch.MinHash``'s ``affine32``/``affine64`` schemes bit for bit
  (same ``RandomState(seed)`` draws, same MurmurHash3 pre-mix), so feeding
  ``shingle_hashes`` to ``datasketch.MinHash(hashfunc=...)`` gives the same
  signature: tests/test_minhash.py checks it.  datasketch's ``legacy`` (Mersenne
  prime) scheme is not reproduced.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from datasketch import lsh as datasketch_lsh

U64 = np.uint64
_BASE = U64(0x100000001B3)  # odd, so it is invertible mod 2**64
_BASE_INV = U64(pow(0x100000001B3, -1, 1 << 64))
_SHINGLE_MULT = U64(0x9E3779B97F4A7C15)
_BAND_MULT = U64(0xC2B2AE3D27D4EB4F)
_ROWS_PER_BLOCK = 2048  # caps the (shingles x num_perm) matrix at 2048 rows

_pow_cache: dict[str, npt.NDArray[np.uint64]] = {}


def _powers(n: int) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.uint64]]:
    """BASE**i and BASE**-i for i < n, cached and grown geometrically per process."""
    have = _pow_cache.get("fwd")
    if have is None or len(have) < n:
        size = max(n, 2 * len(have) if have is not None else 1 << 16)
        with np.errstate(over="ignore"):
            fwd = np.full(size, _BASE, dtype=U64)
            fwd[0] = 1
            inv = np.full(size, _BASE_INV, dtype=U64)
            inv[0] = 1
            _pow_cache["fwd"] = np.cumprod(fwd, dtype=U64)
            _pow_cache["inv"] = np.cumprod(inv, dtype=U64)
    return _pow_cache["fwd"][:n], _pow_cache["inv"][:n]


def fmix64(h: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    """MurmurHash3's 64-bit finalizer, the same constants datasketch uses."""
    h = h ^ (h >> U64(33))
    h = h * U64(0xFF51AFD7ED558CCD)
    h = h ^ (h >> U64(33))
    h = h * U64(0xC4CEB9FE1A85EC53)
    return h ^ (h >> U64(33))


def fmix32(h: npt.NDArray[np.uint32]) -> npt.NDArray[np.uint32]:
    """MurmurHash3's 32-bit finalizer."""
    h = h ^ (h >> np.uint32(16))
    h = h * np.uint32(0x85EBCA6B)
    h = h ^ (h >> np.uint32(13))
    h = h * np.uint32(0xC2B2AE35)
    return h ^ (h >> np.uint32(16))


def _word_spans(data: npt.NDArray[np.uint8]) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.intp]]:
    """Hash and start offset of every space-separated word of UTF-8 bytes."""
    n = len(data)
    is_space = data == 32
    starts = np.flatnonzero(~is_space & np.concatenate(([True], is_space[:-1])))
    ends = np.flatnonzero(~is_space & np.concatenate((is_space[1:], [True])))
    fwd, inv = _powers(n)
    with np.errstate(over="ignore"):
        # prefix[i] = sum_{j<=i} (c_j + 1) * BASE**-j ; word(s..e) = BASE**e * (prefix[e] - prefix[s-1])
        prefix = np.cumsum((data.astype(U64) + U64(1)) * inv, dtype=U64)
        before = np.where(starts > 0, prefix[np.maximum(starts - 1, 0)], U64(0))
        h = fwd[ends] * (prefix[ends] - before)
        # Mixing in the length separates words that are prefixes of each other.
        h = h ^ ((ends - starts + 1).astype(U64) << U64(56))
        return fmix64(h), starts


def word_hashes(normalized: str) -> npt.NDArray[np.uint64]:
    """64-bit hash of every space-separated word of an already normalized text.

    Args:
      normalized: output of ``transforms.text.normalize_for_dedup`` (single spaces).
    """
    data = np.frombuffer(normalized.encode("utf-8"), dtype=np.uint8)
    if len(data) == 0:
        return np.empty(0, dtype=U64)
    return _word_spans(data)[0]


def batch_shingle_hashes(
    normalized: list[str], ngram: int
) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.int64]]:
    """Shingle hashes of a whole batch at once, flat, with each one's document index.

    The same hashes as ``shingle_hashes(word_hashes(text), ngram)`` per document,
    but a shingle repeated inside a document is not removed (MinHash ignores
    repeats) and the whole batch is one set of numpy operations: per-document
    calls would cost more than the arithmetic.

    Args:
      normalized: outputs of ``transforms.text.normalize_for_dedup``.
      ngram: shingle size in words.
    """
    encoded = [t.encode("utf-8") for t in normalized]
    data = np.frombuffer(b" ".join(encoded), dtype=np.uint8)
    if len(data) == 0:
        return np.empty(0, dtype=U64), np.empty(0, dtype=np.int64)
    sizes = np.array([len(e) + 1 for e in encoded], dtype=np.int64)
    words, starts = _word_spans(data)
    doc_of_word = np.searchsorted(np.cumsum(sizes) - sizes, starts, side="right") - 1
    per_doc = np.bincount(doc_of_word, minlength=len(encoded))
    parts, docs = [], []
    count = len(words) - ngram + 1
    if count > 0:
        acc = np.zeros(count, dtype=U64)
        with np.errstate(over="ignore"):
            for i in range(ngram):  # ngram vector operations, not a loop over shingles
                acc = acc * _SHINGLE_MULT + words[i : i + count]
        inside = doc_of_word[:count] == doc_of_word[ngram - 1 :]
        parts.append(fmix64(acc[inside]))
        docs.append(doc_of_word[:count][inside])
    # Documents shorter than ``ngram`` words are one shingle of all their words.
    for d in np.flatnonzero((per_doc > 0) & (per_doc < ngram)):
        parts.append(shingle_hashes(words[doc_of_word == d], ngram))
        docs.append(np.full(len(parts[-1]), d, dtype=np.int64))
    if not parts:
        return np.empty(0, dtype=U64), np.empty(0, dtype=np.int64)
    return np.concatenate(parts), np.concatenate(docs).astype(np.int64)


def shingle_hashes(words: npt.NDArray[np.uint64], ngram: int) -> npt.NDArray[np.uint64]:
    """Distinct 64-bit hashes of the word ``ngram``-grams.

    A text shorter than ``ngram`` words is one shingle of all its words, so short
    documents still get a signature; an empty text has no shingles.

    Args:
      words: word hashes in text order.
      ngram: shingle size in words.
    """
    if len(words) == 0:
        return np.empty(0, dtype=U64)
    k = min(ngram, len(words))
    count = len(words) - k + 1
    acc = np.zeros(count, dtype=U64)
    with np.errstate(over="ignore"):
        for i in range(k):  # k vector operations, not a loop over shingles
            acc = acc * _SHINGLE_MULT + words[i : i + count]
        return np.unique(fmix64(acc))


@dataclass(frozen=True)
class MinHashParams:
    """Permutation parameters, identical to ``datasketch.MinHash(scheme=affine{bits})``.

    Args:
      num_perm: number of permutations.
      seed: ``RandomState`` seed.
      bits: 32 or 64.
    """

    num_perm: int = 128
    seed: int = 1
    bits: int = 32

    def permutations(self) -> tuple[npt.NDArray, npt.NDArray]:
        gen = np.random.RandomState(self.seed)
        dtype = np.uint32 if self.bits == 32 else np.uint64
        a = gen.randint(0, 1 << (self.bits - 1), self.num_perm, dtype=dtype) * dtype(2) + dtype(1)
        b = gen.randint(0, 1 << self.bits, self.num_perm, dtype=dtype)
        return a, b

    def input_hashes(self, shingles: npt.NDArray[np.uint64]) -> npt.NDArray:
        """What datasketch's ``hashfunc`` would return for each shingle."""
        if self.bits == 32:
            return (shingles >> U64(32)).astype(np.uint32)
        return shingles


def signature(
    shingles: npt.NDArray[np.uint64], params: MinHashParams, perms: tuple[npt.NDArray, npt.NDArray]
) -> npt.NDArray:
    """MinHash signature of one document's shingle hashes.

    Args:
      shingles: distinct shingle hashes.
      params: scheme parameters.
      perms: ``params.permutations()``, computed once per worker.
    """
    a, b = perms
    dtype = a.dtype
    sig = np.full(params.num_perm, np.iinfo(dtype).max, dtype=dtype)
    hv = params.input_hashes(shingles)
    hv = fmix32(hv) if params.bits == 32 else fmix64(hv)
    with np.errstate(over="ignore"):
        for start in range(0, len(hv), _ROWS_PER_BLOCK):
            block = hv[start : start + _ROWS_PER_BLOCK, None]
            sig = np.minimum(sig, (block * a + b).min(axis=0))
    return sig


def signatures(
    shingle_sets: list[npt.NDArray[np.uint64]], params: MinHashParams, perms: tuple[npt.NDArray, npt.NDArray]
) -> npt.NDArray:
    """MinHash signatures of a batch of documents, one ``(docs, num_perm)`` array.

    Short documents are packed together so that one matrix product and one
    ``minimum.reduceat`` cover many of them: per-document numpy calls would cost
    more than the arithmetic.  A document without shingles keeps the all-max
    signature, as an empty ``datasketch.MinHash`` does.

    Args:
      shingle_sets: distinct shingle hashes per document.
      params: scheme parameters.
      perms: ``params.permutations()``, computed once per worker.
    """
    a, b = perms
    out = np.full((len(shingle_sets), params.num_perm), np.iinfo(a.dtype).max, dtype=a.dtype)
    lengths = [len(s) for s in shingle_sets]
    start = 0
    while start < len(shingle_sets):
        if lengths[start] >= _ROWS_PER_BLOCK:
            out[start] = signature(shingle_sets[start], params, perms)
            start += 1
            continue
        stop, rows = start, 0
        while stop < len(shingle_sets) and rows + lengths[stop] < _ROWS_PER_BLOCK:
            rows += lengths[stop]
            stop += 1
        members = [i for i in range(start, stop) if lengths[i]]
        if members:
            hv = params.input_hashes(np.concatenate([shingle_sets[i] for i in members]))
            hv = fmix32(hv) if params.bits == 32 else fmix64(hv)
            offsets = np.cumsum([0] + [lengths[i] for i in members[:-1]])
            with np.errstate(over="ignore"):
                out[members] = np.minimum.reduceat(hv[:, None] * a + b, offsets, axis=0)
        start = stop
    return out


_SEED_MIX = U64(0xD6E8FEB86659FD93)
_ROTATION = U64(0x9E3779B97F4A7C15)  # added per slot of distance when an empty bin borrows


def one_permutation_signatures(
    shingles: npt.NDArray[np.uint64], docs: npt.NDArray[np.int64], n: int, num_perm: int, seed: int, bits: int
) -> npt.NDArray:
    """One-permutation MinHash with rotation densification for a batch of ``n`` documents.

    Each shingle is hashed once (seeded); its high bits pick one of ``num_perm``
    bins and the other bits are its value; a bin keeps its minimum value (Li, Owen
    and Zhang, 2012).  An empty bin takes the value of the next non-empty bin to its
    right, plus ``distance * constant`` (Shrivastava and Li, 2014), so two documents
    agree in a slot with probability about their Jaccard similarity.  The work is
    one hash per shingle instead of ``num_perm``; signatures differ from
    ``datasketch``'s, which ``signatures`` reproduces instead.  A document without
    shingles keeps the all-max signature.

    Args:
      shingles: shingle hashes of the batch (repeats allowed), e.g. from ``batch_shingle_hashes``.
      docs: document index of each shingle, in ``[0, n)``.
      n: documents in the batch.
      num_perm: signature length (bins).
      seed: hash seed.
      bits: 32 or 64, the width of the values.
    """
    dtype = np.uint32 if bits == 32 else np.uint64
    top = np.iinfo(dtype).max
    out = np.full((n, num_perm), top, dtype=U64)
    if len(shingles) == 0:
        return out.astype(dtype)
    with np.errstate(over="ignore"):
        h = fmix64(shingles ^ (U64(seed) * _SEED_MIX + _SEED_MIX))
        # Multiply-shift maps the high 32 bits onto [0, num_perm) without modulo bias.
        bins = ((h >> U64(32)) * U64(num_perm)) >> U64(32)
        values = h & U64(0xFFFFFFFF) if bits == 32 else fmix64(h ^ _SEED_MIX)
    np.minimum.at(out.reshape(-1), docs * num_perm + bins.astype(np.int64), values)
    filled = out != U64(top)
    has_shingles = np.bincount(docs, minlength=n) > 0
    sparse_rows = np.flatnonzero(~filled.all(axis=1) & has_shingles)
    if len(sparse_rows):
        rows = out[sparse_rows]
        cols = np.arange(num_perm)
        # Index of the next non-empty bin at or right of each bin, wrapping around.
        nxt = np.where(filled[sparse_rows], cols, 2 * num_perm)
        nxt = np.concatenate([nxt, nxt + num_perm], axis=1)
        nxt = np.minimum.accumulate(nxt[:, ::-1], axis=1)[:, ::-1][:, :num_perm]
        distance = (nxt - cols).astype(U64)
        with np.errstate(over="ignore"):
            borrowed = rows[np.arange(len(rows))[:, None], nxt % num_perm] + distance * _ROTATION
        out[sparse_rows] = borrowed & U64(top)
    return out.astype(dtype)


@functools.lru_cache(maxsize=64)
def lsh_params(threshold: float, num_perm: int) -> tuple[int, int]:
    """Bands and rows from datasketch's optimizer, equal weight on false positives and negatives.

    Cached: the optimizer integrates numerically for every (bands, rows) candidate.

    Args:
      threshold: Jaccard similarity from which two documents are duplicates.
      num_perm: signature length.
    """
    # datasketch has no public API for its optimizer, only the private
    # ``datasketch.lsh._optimal_param`` that ``MinHashLSH`` calls.  Using it keeps our
    # bands and rows those of ``MinHashLSH(threshold, num_perm)``, the reference our
    # quality benchmarks compare with; a copy of it would drift unnoticed.  The index
    # fingerprint holds the result, so a change would refuse earlier indexes.  setup.py
    # pins datasketch exactly, and tests/test_minhash.py::test_datasketch_pin_and_lsh_params
    # fails when the pin moves or the shipped config's (bands, rows) change.
    bands, rows = datasketch_lsh._optimal_param(threshold, num_perm, 0.5, 0.5)
    return int(bands), int(rows)


def band_hashes(signatures: npt.NDArray, bands: int, rows: int) -> npt.NDArray[np.uint64]:
    """One 64-bit bucket hash per (document, band).

    Args:
      signatures: ``(docs, num_perm)`` array.
      bands: number of bands.
      rows: rows per band; ``bands * rows <= num_perm``.
    """
    sig = signatures[:, : bands * rows].astype(U64).reshape(len(signatures), bands, rows)
    mult = np.cumprod(np.full(rows, _BAND_MULT, dtype=U64), dtype=U64)
    with np.errstate(over="ignore"):
        return fmix64((sig * mult).sum(axis=2, dtype=U64))


def estimated_jaccard(sig_a: npt.NDArray, sig_b: npt.NDArray) -> float:
    """Fraction of equal signature slots, the MinHash estimate of Jaccard similarity."""
    return float(np.count_nonzero(sig_a == sig_b)) / len(sig_a)
