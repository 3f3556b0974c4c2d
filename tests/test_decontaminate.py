"""Decontamination: planted eval passages are found, whole or reworded at the edges; common phrases are not."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import apache_beam as beam
import pytest
from apache_beam.testing.util import assert_that, equal_to

from schemas.config import DecontaminateConfig, EvalSet
from transforms.decontaminate import Decontaminate, build_index, find_match, load_index, ngram_hashes

from .conftest import REPO, make_pipeline

DEMO = REPO / "examples" / "demo"
# A phrase long enough to make 13-grams that many unrelated pages share.
BOILERPLATE = (
    "Subscribe to our newsletter for weekly updates and all the latest news from our team "
    "delivered straight to your inbox"
)
SWAPS = ["meanwhile", "quietly", "somewhere", "apparently", "however", "indeed", "perhaps", "later"]


def _stories() -> list[dict[str, Any]]:
    lines = (DEMO / "stories" / "stories.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


def _pages() -> list[dict[str, Any]]:
    """The demo's good web pages (the file also holds deliberately broken lines for the reader tests)."""
    pages = []
    for line in (DEMO / "web" / "pages-000.jsonl").read_text(encoding="utf-8").splitlines():
        try:
            page = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(page, dict) and isinstance(page.get("text"), str) and len(page["text"].split()) > 40:
            pages.append(page)
    return pages


def _passage(story: dict[str, Any], words: int = 90) -> str:
    return " ".join(story["text"].split()[:words])


def _reworded_edges(passage: str, edge: int = 12) -> str:
    """The passage with its first and last ``edge`` words replaced: paraphrased at the edges."""
    words = passage.split()
    swap = [SWAPS[i % len(SWAPS)] for i in range(edge)]
    return " ".join(swap + words[edge:-edge] + swap)


@pytest.fixture
def eval_file(tmp_path: Path) -> Path:
    """Eight eval records: the openings of stories 0-7, each ending in the common boilerplate."""
    path = tmp_path / "evals.jsonl"
    rows = [{"id": f"eval-{i}", "text": f"{_passage(s)} {BOILERPLATE}"} for i, s in enumerate(_stories()[:8])]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _config(path: Path, fmt: str = "jsonl", threshold: float = 0.1) -> DecontaminateConfig:
    return DecontaminateConfig(evals=[EvalSet(path=str(path), format=fmt)], threshold=threshold)


def _planted(page: dict[str, Any], passage: str) -> str:
    sentences = page["text"].split(". ")
    middle = len(sentences) // 2
    return ". ".join([*sentences[:middle], passage, *sentences[middle:]])


def test_recall_of_planted_passages_whole_and_reworded_at_the_edges(eval_file: Path) -> None:
    cfg = _config(eval_file)
    index = load_index(cfg)
    assert len(index.names) == 8 and index.short == 0
    pages, stories = _pages(), _stories()
    for i in range(8):
        whole = _planted(pages[i], _passage(stories[i]))
        edited = _planted(pages[10 + i], _reworded_edges(_passage(stories[i])))
        for text in (whole, edited, whole.upper().replace(" ", "  ")):
            match = find_match(text, index, cfg.ngram, cfg.threshold)
            assert match is not None and match.record == f"eval-{i}" and match.eval_file == "evals.jsonl"
    # A passage reworded at both edges still holds most of the record's 13-grams.
    match = find_match(_reworded_edges(_passage(stories[3])), index, cfg.ngram, cfg.threshold)
    assert match is not None and match.shared / match.total > 0.5


def test_precision_common_phrases_and_unrelated_pages_are_kept(eval_file: Path) -> None:
    cfg = _config(eval_file)
    index = load_index(cfg)
    pages, stories = _pages(), _stories()
    for page in pages:
        # Every page gets the boilerplate every eval record holds, and short stock phrases.
        text = f"{page['text']} {BOILERPLATE}. At the end of the day, in the middle of the night."
        assert find_match(text, index, cfg.ngram, cfg.threshold) is None, page["id"]
    # Stories that are not eval records share their themes, but not 13-grams; except
    # story-040, the demo's planted near-duplicate of story-005 (eval-4), which is caught.
    for story in stories[8:]:
        match = find_match(story["text"], index, cfg.ngram, cfg.threshold)
        if story["id"] == "story-040":
            assert match is not None and match.record == "eval-4"
        else:
            assert match is None, story["id"]
    # The threshold is the knob: at 2% of a record's 13-grams the shared boilerplate condemns a page.
    strict = find_match(f"{pages[0]['text']} {BOILERPLATE}", index, cfg.ngram, 0.02)
    assert strict is not None and strict.shared == 8


def test_ngram_hashes_ignore_case_and_punctuation_and_need_n_words() -> None:
    a = ngram_hashes("The quick brown fox, jumps over the lazy dog; again and again and again!", 13)
    b = ngram_hashes("the QUICK brown fox jumps over the lazy dog again and again and again", 13)
    assert a.size == 2 and (a == b).all()
    assert ngram_hashes("too short to make a thirteen word gram", 13).size == 0
    index = build_index([("f", "short", "only five words here now")], 13)
    assert index.short == 1 and not index.names


def test_chat_and_text_eval_files(tmp_path: Path) -> None:
    stories = _stories()
    chat = tmp_path / "chat.jsonl"
    messages = [{"role": "user", "content": _passage(stories[0], 40)}, {"role": "assistant", "content": "ok"}]
    chat.write_text(json.dumps({"id": "scenario-1", "messages": messages}) + "\n")
    text = tmp_path / "scenario-2.txt"
    text.write_text(_passage(stories[1], 60))
    cfg = DecontaminateConfig(
        evals=[EvalSet(path=str(chat), format="chat"), EvalSet(path=str(tmp_path / "*.txt"), format="text")]
    )
    index = load_index(cfg)
    assert index.names == [("chat.jsonl", "scenario-1"), ("scenario-2.txt", "scenario-2.txt")]
    hit = find_match(stories[1]["text"], index, cfg.ngram, cfg.threshold)
    assert hit is not None and hit.record == "scenario-2.txt"


def test_decontaminate_transform_drops_with_ledger_rows(eval_file: Path) -> None:
    pages, stories = _pages(), _stories()
    docs = [{"id": f"web/{p['id']}", "source": "web", "text": p["text"]} for p in pages[:20]]
    docs[4] = {**docs[4], "text": _planted(pages[4], _passage(stories[2]))}
    docs[9] = {**docs[9], "text": _planted(pages[9], _reworded_edges(_passage(stories[5])))}
    p = make_pipeline()
    result = p | beam.Create(docs) | Decontaminate(_config(eval_file))
    kept = result.kept | "KeptIds" >> beam.Map(lambda d: d["id"])
    dropped = result.dropped | "Rows" >> beam.Map(lambda r: (r["id"], r["stage"], r["reason"], r["detail"]))
    assert_that(kept, equal_to([d["id"] for i, d in enumerate(docs) if i not in (4, 9)]), label="Kept")
    assert_that(
        dropped,
        equal_to(
            [
                (
                    docs[4]["id"],
                    "decontaminate",
                    "decontaminated",
                    "eval=evals.jsonl record=eval-2 ngrams=80/100",
                ),
                (
                    docs[9]["id"],
                    "decontaminate",
                    "decontaminated",
                    "eval=evals.jsonl record=eval-5 ngrams=56/101",
                ),
            ]
        ),
        label="Dropped",
    )
    p.run()


def test_an_eval_glob_that_matches_nothing_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"matches no file; fix the glob"):
        load_index(_config(tmp_path / "missing-*.jsonl"))
