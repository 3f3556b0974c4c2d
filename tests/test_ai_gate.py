"""The AI gate, the bounded context the trope model reads, and language identification."""

from __future__ import annotations

import gzip
import json

from transforms.classify.gate import (
    AI_ACRONYM,
    AI_WORDS,
    SEPARATOR,
    acronym_spans,
    ai_context,
    mention_spans,
    merge_windows,
    word_spans,
)
from transforms.classify.langid import UNDETERMINED, identify, lid_input, load_lid

from .conftest import REPO


def test_gate_finds_words_for_artificial_minds() -> None:
    for text in (
        "The robot walked.",
        "An AI wrote it.",
        "A.I. is here.",
        "Androids dream.",
        "the supercomputer decided",
        "HAL 9000 refused",
        "Skynet became self-aware",
        "a chatbot answered",
    ):
        assert mention_spans(text), text


def test_gate_stops_text_without_one() -> None:
    for text in (
        "Bread needs flour and water.",
        "Aim for the rain in Spain.",
        "A fair trial.",
        "ai ai captain",
    ):
        assert not mention_spans(text), text
    assert ai_context("A long story about bakers. " * 200) is None


def test_short_documents_are_read_whole() -> None:
    text = "A robot rescued the girl from the flood."
    assert ai_context(text) == text


def test_long_documents_are_read_in_bounded_windows() -> None:
    filler = "The council discussed the budget for the library. " * 40
    doc = filler + "The robot seized the power plant." + filler
    ctx = ai_context(doc, whole_below=1500, width=100, max_windows=4)
    assert ctx is not None and "robot seized" in ctx and len(ctx) <= 100 * 2 + 40
    # Many mentions: at most max_windows windows, whatever the length.
    many = (filler + "a robot appears. ") * 50
    ctx_many = ai_context(many, whole_below=1500, width=100, max_windows=4)
    assert ctx_many is not None and ctx_many.count(SEPARATOR) == 3
    longer = ai_context(many * 3, whole_below=1500, width=100, max_windows=4)
    assert longer == ctx_many


def test_overlapping_windows_merge() -> None:
    assert merge_windows([(10, 15), (20, 25), (500, 505)], 1000, 50, 4) == [(0, 75), (450, 555)]
    assert merge_windows([(10, 15), (500, 505)], 1000, 50, 1) == [(0, 65)]
    assert mention_spans("robots and an AI") == [(0, 6), (14, 16)]


def test_language_identification_on_real_prefixes() -> None:
    lid = load_lid()
    out = identify(
        lid,
        [
            "The robot walked into the room and greeted everyone at the table.",
            "Der Roboter ging in das Zimmer und begrüßte alle am Tisch.",
            "",
            "12345 -- ...",
        ],
    )
    assert out[0][0] == "en" and out[0][1] > 0.8
    assert out[1][0] == "de"
    assert out[2] == (UNDETERMINED, 0.0) and out[3] == (UNDETERMINED, 0.0)
    assert "\n" not in lid_input("a\nb\n" * 400) and len(lid_input("x " * 1000)) <= 500


EDGE_CASES = [
    "The AI. AIs and A.I. and MAIL, AIR, SAI, A.Is, 'AI' xAI AI_x _AI A.I.x",
    "chat-bots, chatbots and a bot; both bottles; robots' robotic robotics",
    "supercomputer, super-computer, computing, mechanism, mecha, mechs, biomechanical",
    "machine learning machines; a language model; GPT-4o; HAL 9000; self-aware; uploaded",
    "İstanbul robot",  # lowercasing changes the length of U+0130
]


def test_fast_spans_equal_the_regex_spans() -> None:
    # The stem search must find exactly what the regexes define, on edge cases and on
    # real pages when ../shared/data is beside the repository.
    texts = list(EDGE_CASES)
    pages = REPO.parent / "shared" / "data" / "wikipedia" / "pages-00.jsonl.gz"
    if pages.exists():
        with gzip.open(pages, "rt", encoding="utf-8") as f:
            texts += [json.loads(line)["text"] for _, line in zip(range(300), f, strict=False)]
    for text in texts:
        low = text.lower()
        assert word_spans(low) == [m.span() for m in AI_WORDS.finditer(low)], text[:80]
        assert acronym_spans(text) == [m.span() for m in AI_ACRONYM.finditer(text)], text[:80]
        assert bool(mention_spans(text)) == bool(AI_WORDS.search(low) or AI_ACRONYM.search(text))
