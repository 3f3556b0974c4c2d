"""The fast text normalizations equal their plain regex definitions.

``normalize_for_dedup`` character for character; ``fasttext_text`` token for token as
fastText's tokenizer reads them (it leaves runs of spaces, which the tokenizer skips).
"""

from __future__ import annotations

import gzip
import json
import re
import unicodedata
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from transforms.text import fasttext_key, fasttext_text, normalize_for_dedup

_WS = re.compile(r"\s+")


def reference_dedup(text: str) -> str:
    """The definition: NFKC, lowercase, non-word characters and ``_`` to spaces, whitespace collapsed."""
    text = re.sub(r"[^\w\s]|_", " ", unicodedata.normalize("NFKC", text).lower())
    return _WS.sub(" ", text).strip()


# fastText's tokenizer (Dictionary::readWord) splits on these bytes and ends a line at "\n".
_FT_SPLIT = re.compile(r"[ \t\n\v\f\r\x00]+")


def fasttext_tokens(text: str) -> list[str]:
    """The words fastText reads from one line of ``text``; fails on text it would cut."""
    assert "\n" not in text
    return [w for w in _FT_SPLIT.split(text) if w]


def assert_same_fasttext_input(text: str) -> None:
    out = fasttext_text(text)
    assert fasttext_tokens(out) == fasttext_tokens(reference_fasttext(text))
    # No whitespace fastText would keep inside a word, so Python's split agrees too.
    assert out.split() == reference_fasttext(text).split()
    assert fasttext_key(text) == reference_fasttext(text)


def reference_fasttext(text: str) -> str:
    """The definition: NFKC, lowercase, punctuation except ``'`` padded with spaces, whitespace collapsed."""
    text = re.sub(r"([^\w\s'])", r" \1 ", unicodedata.normalize("NFKC", text).lower())
    return _WS.sub(" ", text).strip()


# Mixes ASCII punctuation and control characters, Unicode whitespace (\x1c-\x1f, \x85,
# \u2028, \u3000), compatibility forms NFKC rewrites (ﬁ, ①, fullwidth), combining marks
# and non-ASCII punctuation.
ALPHABET = st.sampled_from(
    list("aZ9_ '\t\n\r\x0b\x0c\x1c\x1d\x1e\x1f\x00\x07\x7f,.;:!?\"()[]{}<>/\\|@#$%^&*-+=~`")
    + list(
        "\x85\xa0\u2028\u3000\u2013\u2014\u201c\u201d\u2019\u00bf\u00e9\u0301\ufb01\u2460\uff21\uff0c\u00b2\u0130\u03a3\u4e2d"
    )
)


@settings(max_examples=600, deadline=None)
@given(st.text(alphabet=ALPHABET, max_size=60) | st.text(max_size=40))
def test_fast_paths_equal_regex_definitions(text: str) -> None:
    assert normalize_for_dedup(text) == reference_dedup(text)
    assert_same_fasttext_input(text)


def test_fast_paths_equal_regex_definitions_on_real_pages(shared_data: Path) -> None:
    texts: list[str] = []
    for path in (
        shared_data / "web" / "trafilatura-pages.jsonl.gz",
        shared_data / "wikipedia" / "pages-00.jsonl.gz",
    ):
        with gzip.open(path, "rt", encoding="utf-8") as f:
            texts += [json.loads(line)["text"] for _, line in zip(range(300), f, strict=False)]
    assert sum(not t.isascii() for t in texts) > 100
    for text in texts:
        assert normalize_for_dedup(text) == reference_dedup(text)
        assert_same_fasttext_input(text)


def test_lone_surrogates_survive_like_the_definition() -> None:
    # json.loads accepts lone surrogate escapes, so documents can carry them.
    text = json.loads('"A\\ud83d,b\\ude00_c \\ud83d\\ude00."')
    assert normalize_for_dedup(text) == reference_dedup(text)
    assert_same_fasttext_input(text)
