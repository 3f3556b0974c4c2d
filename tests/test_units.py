"""Units: bytes, the built-in token estimate, and a real BPE tokenizer.json in the pipeline."""

from __future__ import annotations

import apache_beam as beam
from apache_beam.testing.util import assert_that, equal_to

from transforms.blend.units import MeasureUnits, count_units, estimate_tokens, load_tokenizer

from .conftest import make_pipeline

TEXTS = [
    "The assistant reported its own mistake to the charge nurse at 2 a.m.",
    "Ein selbstständiges Übersetzungsprogramm, 1234567 Zeichen!",
    "",
    "x" * 50,
]


def test_bytes_and_documents() -> None:
    assert count_units(TEXTS, "documents") == [1, 1, 1, 1]
    assert count_units(TEXTS, "bytes") == [len(t.encode("utf-8")) for t in TEXTS]


def test_estimate_counts_pieces_and_long_words() -> None:
    assert estimate_tokens("") == 0
    # 13 letter runs + "2" + two "." symbols = 16 pieces, 68 bytes.
    assert estimate_tokens(TEXTS[0]) == round(1.135 * 16 + 0.018 * 68)
    # Digits go in groups of three, like GPT-style pre-tokenizers: 1234567 -> 3 pieces.
    assert estimate_tokens("1234567") == estimate_tokens("123 456 7")
    assert count_units(TEXTS, "tokens") == [estimate_tokens(t) for t in TEXTS]


def test_tokenizer_counts_match_direct_encoding(bpe_tokenizer: str) -> None:
    tok = load_tokenizer(bpe_tokenizer)
    expected = [len(tok.encode(t, add_special_tokens=False).ids) for t in TEXTS]
    assert expected[0] > 0 and expected[2] == 0
    docs = [{"id": str(i), "source": "s", "text": t} for i, t in enumerate(TEXTS)]
    p = make_pipeline()
    out = p | beam.Create(docs) | MeasureUnits("tokens", bpe_tokenizer, batch_size=2)
    assert_that(
        out | beam.Map(lambda d: (d["id"], d["units"])),
        equal_to(list(zip(map(str, range(4)), expected, strict=True))),
    )
    p.run()
