"""Text functions shared by several stages: stable hashing, normalization, fastText input.

Keeping them in one module guarantees that training and inference preprocess text
the same way, and that every stage hashes ids the same way.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

# The ASCII characters that are neither word characters nor whitespace, by regex rules.
_ASCII_PUNCT = [c for c in map(chr, range(128)) if not re.match(r"[\w\s]", c)]
# Dedup blanks ASCII punctuation and "_" with one C-speed byte translation.
_DEDUP_BYTES = bytes.maketrans("".join([*_ASCII_PUNCT, "_"]).encode(), b" " * (len(_ASCII_PUNCT) + 1))
# fastText pads punctuation (but not "'", which joins "don't") with spaces.
_FT_ASCII = [c for c in _ASCII_PUNCT if c != "'"]
# Whitespace that ``str.split`` and regex ``\s`` honour but fastText's tokenizer (which splits
# on " \t\n\v\f\r\0" and ends a line at "\n") does not, after NFKC: made spaces.
_FT_ASCII_BREAKS = "\n\x1c\x1d\x1e\x1f"
_FT_UNICODE_BREAKS = "\x85\u1680\u2028\u2029"
_NON_ASCII = re.compile(r"[^\x00-\x7f]")
_WORD_OR_SPACE = re.compile(r"[\w\s]")


def _nfkc(text: str) -> str:
    # The quick check costs a twentieth of a normalization, and most text is already NFKC.
    return text if unicodedata.is_normalized("NFKC", text) else unicodedata.normalize("NFKC", text)


def _non_ascii_punct(text: str) -> list[str]:
    """The distinct non-ASCII characters of ``text`` that regex ``[^\\w\\s]`` matches."""
    return [c for c in set(_NON_ASCII.findall(text)) if not _WORD_OR_SPACE.match(c)]


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
    # Same result as ``sub(r"[^\w\s]|_", " ")`` then collapsing ``\s+`` (tests/test_text.py
    # checks it), at a third of the cost: the regex ran once per punctuation mark.
    blanked = _nfkc(text).lower().encode("utf-8", "surrogatepass").translate(_DEDUP_BYTES)
    text = blanked.decode("utf-8", "surrogatepass")
    if not text.isascii():
        for c in _non_ascii_punct(text):
            text = text.replace(c, " ")
    # ``str.split()`` splits on exactly the characters regex ``\s`` matches.
    return " ".join(text.split())


def fasttext_text(text: str) -> str:
    """The one preprocessing used for fastText training and inference.

    fastText rejects newlines in ``predict`` and is case-sensitive, so the text is
    lowercased, punctuation is split from words, and every whitespace character that
    fastText's tokenizer would not split on becomes a space.  Runs of spaces are left:
    the tokenizer skips them, so fastText reads the same tokens as from the collapsed
    text (``fasttext_key``), and collapsing cost a third of this function.

    Args:
      text: raw text of a document or chunk.
    """
    # Same tokens as ``sub(r"([^\w\s'])", r" \1 ")`` then collapsing ``\s+`` (tests/test_text.py
    # checks it), five times faster: one C-speed replace per distinct mark, not a regex match per mark.
    text = _nfkc(text).lower()
    for c in _FT_ASCII:
        if c in text:
            text = text.replace(c, f" {c} ")
    for c in _FT_ASCII_BREAKS:
        if c in text:
            text = text.replace(c, " ")
    if not text.isascii():
        for c in _non_ascii_punct(text):
            text = text.replace(c, f" {c} ")
        for c in _FT_UNICODE_BREAKS:
            if c in text:
                text = text.replace(c, " ")
    return text


def fasttext_key(text: str) -> str:
    """``fasttext_text`` with whitespace collapsed: equal for texts fastText reads alike.

    Args:
      text: raw text.
    """
    return " ".join(fasttext_text(text).split())
