"""Deterministic benchmark corpora built from the real text in ``../shared/data``.

Every document is a pure function of ``(seed, index)``:

* a *base* document takes the length of a real page (Wikipedia or web, picked by
  hash) and fills it with paragraphs drawn by hash from the pooled paragraphs of
  all real pages, so sizes follow the real distribution;
* a share ``ai_share`` of base documents also get one to three AI-narrative
  paragraphs (the hand-written seed set and the demo stories) spliced in;
* a share ``dup_share`` of documents are *near duplicates* of an earlier document:
  a few word edits, a boilerplate header/footer, two paragraphs swapped, or an
  exact copy.  ``dup_of`` records the original, so dedup recall can be checked.

The corpus is written as ``part-XXXXX.jsonl.gz`` shards of ``shard_docs``
documents with the fields ``id, text, source, kind, dup_of``, outside the repo::

    python benchmarks/corpus.py --docs 10000 --out /tmp/tropemix-bench/corpus-10k
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from transforms.text import stable_hash  # noqa: E402

SHARED_DATA = REPO.parent / "shared" / "data"
AI_SOURCES = (
    REPO / "data" / "seed" / "tropes_seed.jsonl",
    REPO / "examples" / "demo" / "stories" / "stories.jsonl",
)
DUP_KINDS = ("edit", "boilerplate", "reorder", "exact")
BOILERPLATE = (
    "Home | About | Contact | Privacy policy | Terms of use",
    "This article is licensed under Creative Commons Attribution-ShareAlike. Text is available under the license.",
    "Subscribe to our newsletter for weekly updates. All rights reserved.",
    "Share this page: Facebook Twitter LinkedIn Email Print",
)
MIN_PARAGRAPH_CHARS = 40


@dataclass(frozen=True)
class Pool:
    """The real text a corpus is drawn from.

    Args:
      paragraphs: paragraphs of all real pages.
      lengths: character length of every real page (the size distribution).
      ai_paragraphs: AI-narrative paragraphs.
    """

    paragraphs: tuple[str, ...]
    lengths: tuple[int, ...]
    ai_paragraphs: tuple[str, ...]


@dataclass(frozen=True)
class CorpusSpec:
    """What to generate.

    Args:
      docs: number of documents.
      seed: every choice hashes ``(seed, index, ...)``.
      dup_share: fraction of documents that are near duplicates of an earlier one.
      ai_share: fraction of base documents with AI-narrative paragraphs.
      edit_rate: fraction of words replaced in an ``edit`` near duplicate.
    """

    docs: int
    seed: int = 0
    dup_share: float = 0.1
    ai_share: float = 0.05
    edit_rate: float = 0.01


def _paragraphs(text: str) -> list[str]:
    return [p.strip() for p in text.split("\n\n") if len(p.strip()) >= MIN_PARAGRAPH_CHARS]


def _jsonl_texts(path: Path) -> Iterator[str]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        for line in f:
            text = json.loads(line).get("text")
            if isinstance(text, str) and text.strip():
                yield text


def load_pool(shared_data: Path = SHARED_DATA) -> Pool:
    """Pools the paragraphs and page lengths of the Wikipedia and web pages.

    Args:
      shared_data: the ``shared/data`` directory.
    """
    pages = [
        *sorted((shared_data / "wikipedia").glob("*.jsonl.gz")),
        shared_data / "web" / "trafilatura-pages.jsonl.gz",
        shared_data / "web" / "ccnet-sample.jsonl",
    ]
    paragraphs: list[str] = []
    lengths: list[int] = []
    for path in pages:
        for text in _jsonl_texts(path):
            paragraphs.extend(_paragraphs(text))
            lengths.append(len(text))
    ai: list[str] = []
    for path in AI_SOURCES:
        for text in _jsonl_texts(path):
            ai.extend(p for p in text.split("\n\n") if p.strip())
    return Pool(tuple(paragraphs), tuple(lengths), tuple(ai))


def _unit(seed: int, *parts: object) -> float:
    """A uniform float in [0, 1) from a stable hash."""
    return stable_hash(seed, *parts) / float(1 << 63)


def _pick(seed: int, n: int, *parts: object) -> int:
    return stable_hash(seed, *parts) % n


def _base_paragraphs(pool: Pool, spec: CorpusSpec, index: int) -> list[str]:
    target = pool.lengths[_pick(spec.seed, len(pool.lengths), "length", index)]
    out: list[str] = []
    size = 0
    j = 0
    while size < target or not out:
        para = pool.paragraphs[_pick(spec.seed, len(pool.paragraphs), "para", index, j)]
        out.append(para)
        size += len(para) + 2
        j += 1
    if _unit(spec.seed, "ai", index) < spec.ai_share:
        for k in range(1 + _pick(spec.seed, 3, "ai_count", index)):
            at = _pick(spec.seed, len(out) + 1, "ai_at", index, k)
            out.insert(at, pool.ai_paragraphs[_pick(spec.seed, len(pool.ai_paragraphs), "ai_para", index, k)])
    return out


def _edit_words(text: str, rate: float, seed: int, index: int) -> str:
    words = text.split(" ")
    for k in range(max(1, int(len(words) * rate))):
        at = _pick(seed, len(words), "edit_at", index, k)
        words[at] = f"w{_pick(seed, 100_000, 'edit_word', index, k)}"
    return " ".join(words)


def document_paragraphs(pool: Pool, spec: CorpusSpec, index: int) -> tuple[list[str], str, int | None]:
    """Paragraphs, kind and original of document ``index``.

    Args:
      pool: the real text.
      spec: the corpus parameters.
      index: the document's position, ``0 <= index < spec.docs``.

    Returns:
      ``(paragraphs, kind, dup_of)``: kind is ``base`` or one of ``DUP_KINDS``;
      ``dup_of`` is the index of the document it copies, for near duplicates.
    """
    if index == 0 or _unit(spec.seed, "dup", index) >= spec.dup_share:
        return _base_paragraphs(pool, spec, index), "base", None
    original = _pick(spec.seed, index, "dup_of", index)
    paras, _, _ = document_paragraphs(pool, spec, original)
    kind = DUP_KINDS[_pick(spec.seed, len(DUP_KINDS), "dup_kind", index)]
    if kind == "edit":
        paras = _edit_words("\n\n".join(paras), spec.edit_rate, spec.seed, index).split("\n\n")
    elif kind == "boilerplate":
        paras = [
            BOILERPLATE[_pick(spec.seed, len(BOILERPLATE), "head", index)],
            *paras,
            BOILERPLATE[_pick(spec.seed, len(BOILERPLATE), "foot", index)],
        ]
    elif kind == "reorder" and len(paras) > 1:
        a = _pick(spec.seed, len(paras), "swap_a", index)
        b = (a + 1 + _pick(spec.seed, len(paras) - 1, "swap_b", index)) % len(paras)
        paras = list(paras)
        paras[a], paras[b] = paras[b], paras[a]
    return paras, kind, original


def document(pool: Pool, spec: CorpusSpec, index: int) -> dict[str, object]:
    """The JSON record of document ``index``."""
    paras, kind, dup_of = document_paragraphs(pool, spec, index)
    return {
        "id": f"bench-{spec.seed}-{index:09d}",
        "text": "\n\n".join(paras),
        "source": "tropemix-bench",
        "kind": kind,
        "dup_of": None if dup_of is None else f"bench-{spec.seed}-{dup_of:09d}",
    }


_POOL: Pool | None = None


def _init_worker(pool: Pool | None, shared_data: str) -> None:
    global _POOL
    _POOL = pool if pool is not None else load_pool(Path(shared_data))


def _write_shard(args: tuple[CorpusSpec, int, int, str]) -> tuple[str, int]:
    spec, start, stop, path = args
    assert _POOL is not None
    tmp = f"{path}.tmp"
    # mtime=0 keeps the gzip bytes a function of the content alone.
    with open(tmp, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6, mtime=0) as gz:
        for i in range(start, stop):
            gz.write(json.dumps(document(_POOL, spec, i), ensure_ascii=False).encode("utf-8") + b"\n")
    os.replace(tmp, path)
    return path, stop - start


def write_corpus(
    spec: CorpusSpec,
    out: Path,
    shard_docs: int = 2_500,
    workers: int = 2,
    shared_data: Path = SHARED_DATA,
    pool: Pool | None = None,
) -> list[str]:
    """Writes the corpus as gzipped JSONL shards and a ``corpus.json`` description.

    Args:
      spec: what to generate.
      out: output directory (created; existing shards are overwritten).
      shard_docs: documents per shard.
      workers: processes generating shards in parallel.
      shared_data: the ``shared/data`` directory.
      pool: the text to draw from; by default each worker loads it from ``shared_data``.

    Returns:
      The shard paths.
    """
    out.mkdir(parents=True, exist_ok=True)
    num = -(-spec.docs // shard_docs)
    tasks = [
        (spec, s * shard_docs, min(spec.docs, (s + 1) * shard_docs), str(out / f"part-{s:05d}.jsonl.gz"))
        for s in range(num)
    ]
    with ProcessPoolExecutor(workers, initializer=_init_worker, initargs=(pool, str(shared_data))) as ex:
        paths = [p for p, _ in ex.map(_write_shard, tasks)]
    (out / "corpus.json").write_text(
        json.dumps({**spec.__dict__, "shard_docs": shard_docs, "shards": len(paths)}, indent=1) + "\n"
    )
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--docs", type=int, required=True, help="number of documents, e.g. 10000, 100000, 1000000"
    )
    parser.add_argument("--out", type=Path, required=True, help="output directory, outside the repo")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dup-share", type=float, default=0.1)
    parser.add_argument("--ai-share", type=float, default=0.05)
    parser.add_argument("--shard-docs", type=int, default=2_500)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    if REPO in args.out.resolve().parents:
        parser.error("write corpora outside the repository")
    spec = CorpusSpec(args.docs, args.seed, args.dup_share, args.ai_share)
    paths = write_corpus(spec, args.out, args.shard_docs, args.workers)
    size = sum(os.path.getsize(p) for p in paths)
    print(f"{args.docs} documents in {len(paths)} shards, {size / 1e6:.1f} MB gzipped -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
