"""The fast text normalizations equal their plain regex definitions, character for character."""

from __future__ import annotations

import gzip
import json
import re
import unicodedata
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from transforms.text import fasttext_text, normalize_for_dedup

_WS = re.compile(r"\s+")


def reference_dedup(text: str) -> str:
    """The definition: NFKC, lowercase, non-word characters and ``_`` to spaces, whitespace collapsed."""
    text = re.sub(r"[^\w\s]|_", " ", unicodedata.normalize("NFKC", text).lower())
    return _WS.sub(" ", text).strip()


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
    assert fasttext_text(text) == reference_fasttext(text)


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
        assert fasttext_text(text) == reference_fasttext(text)


def test_lone_surrogates_survive_like_the_definition() -> None:
    # json.loads accepts lone surrogate escapes, so documents can carry them.
    text = json.loads('"A\\ud83d,b\\ude00_c \\ud83d\\ude00."')
    assert normalize_for_dedup(text) == reference_dedup(text)
    assert fasttext_text(text) == reference_fasttext(text)
