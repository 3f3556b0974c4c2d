"""Text functions shared by several stages: stable hashing, normalization, fastText input.

Keeping them in one module guarantees that training and inference preprocess text
the same way, and that every stage hashes ids the same way.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

_WS = re.compile(r"\s+")
# Everything that is not a letter, digit or whitespace becomes a space for dedup.
_PUNCT = re.compile(r"[^\w\s]|_", re.UNICODE)
# fastText tokenizes on whitespace only; split punctuation off words so "AI," == "AI".
_FT_PUNCT = re.compile(r"([^\w\s'])", re.UNICODE)


def stable_hash(*parts: object) -> int:
    """A 63-bit hash that is identical across processes, machines and Python versions.

    Python's ``hash`` is salted per process, so it must never decide sampling or
    sharding.  63 bits keep the value inside Beam's signed ``VarIntCoder``.

    Args:
      parts: values joined with a separator that cannot occur in their ``str``.
    """
    data = "\x1f".join(str(p) for p in parts).encode("utf-8")
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big") >> 1


def unit_interval(*parts: object) -> float:
    """Maps ``parts`` to a deterministic float in [0, 1)."""
    return stable_hash(*parts) / 2.0**63


def normalize_for_dedup(text: str) -> str:
    """NFKC, lowercase, punctuation to spaces, whitespace collapsed.

    Args:
      text: raw document text.
    """
    text = unicodedata.normalize("NFKC", text).lower()
    text = _PUNCT.sub(" ", text)
    return _WS.sub(" ", text).strip()


def fasttext_text(text: str) -> str:
    """The one preprocessing used for fastText training and inference.

    fastText rejects newlines in ``predict`` and is case-sensitive, so the text is
    lowercased, punctuation is split from words, and all whitespace becomes one space.

    Args:
      text: raw text of a document or chunk.
    """
    text = unicodedata.normalize("NFKC", text).lower()
    # Splitting on the captured punctuation and joining with spaces equals
    # ``sub(r" \1 ")`` after whitespace is collapsed, without a template expansion
    # per match (that expansion was the stage's largest Python cost).
    text = " ".join(_FT_PUNCT.split(text))
    return _WS.sub(" ", text).strip()


def chunk_text(text: str, chunk_chars: int) -> list[str]:
    """Splits a document into chunks of about ``chunk_chars`` on paragraph boundaries.

    Scoring chunks and taking the maximum keeps one evil-AI passage in a long page
    from being averaged away.  A paragraph longer than ``chunk_chars`` is cut hard.

    Args:
      text: the document text.
      chunk_chars: target chunk size in characters.
    """
    if len(text) <= chunk_chars:
        return [text]
    chunks: list[str] = []
    current: list[str] = []
    size = 0
    for para in text.split("\n"):
        if not para.strip():
            continue
        while len(para) > chunk_chars:
            if current:
                chunks.append("\n".join(current))
                current, size = [], 0
            chunks.append(para[:chunk_chars])
            para = para[chunk_chars:]
        if size + len(para) > chunk_chars and current:
            chunks.append("\n".join(current))
            current, size = [], 0
        current.append(para)
        size += len(para) + 1
    if current:
        chunks.append("\n".join(current))
    return chunks or [text[:chunk_chars]]
