"""Threshold selection, training and its model card, evaluation, dev-set separation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pipelines.cli import main
from pipelines.seed_templates import generate
from pipelines.train_classifier import (
    TrainParams,
    evaluate,
    page_ids,
    read_labeled,
    select_threshold,
    split_records,
    train,
)
from pipelines.weak_labels import mine
from schemas.taxonomy import label_scores_of
from transforms.classify import load_fasttext, read_model_card
from transforms.text import fasttext_key, fasttext_text

from .conftest import REPO

DEV = REPO / "data" / "dev" / "wikipedia_dev.jsonl"
# The page-disjoint dev set: excerpts of pages no training source touches.
UNSEEN = REPO / "data" / "dev" / "unseen_dev.jsonl"
SEED = REPO / "data" / "seed" / "tropes_seed.jsonl"


def test_select_threshold_lowest_score_reaching_target() -> None:
    scores = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4]
    positive = [True, True, False, True, False, False]
    # precision at 0.9: 1, 0.8: 1, 0.7: 2/3, 0.6: 3/4, 0.5: 3/5
    assert select_threshold(scores, positive, 1.0, 0.5) == (0.8, True)
    assert select_threshold(scores, positive, 0.75, 0.5) == (0.6, True)
    # Unreachable target: the highest precision, lowest threshold among ties.
    assert select_threshold([0.9, 0.8], [False, True], 1.0, 0.5) == (0.8, False)
    assert select_threshold([0.9, 0.8], [False, False], 0.9, 0.3) == (0.3, False)
    assert select_threshold([0.9, 0.8, 0.7], [False, True, False], 0.9, 0.3) == (0.8, False)


def test_select_threshold_handles_ties_as_one_cut() -> None:
    # Both 0.7s fire together, so 0.7 has precision 1/2, never 1; 0.2 has 2/3.
    assert select_threshold([0.7, 0.7, 0.2], [True, False, True], 0.9, 0.5) == (0.2, False)
    assert select_threshold([0.7, 0.7, 0.2], [True, False, True], 0.5, 0.5) == (0.2, True)


def test_split_is_by_id_hash() -> None:
    recs = [{"id": f"r{i}", "text": "x", "labels": []} for i in range(1000)]
    train_a, valid_a = split_records(recs, 0.2, 0)
    _, valid_b = split_records(list(reversed(recs)), 0.2, 0)
    assert {r["id"] for r in valid_a} == {r["id"] for r in valid_b}
    assert 150 < len(valid_a) < 250 and len(train_a) + len(valid_a) == 1000


def test_train_writes_model_card_with_thresholds_and_taxonomy(tmp_path: Path) -> None:
    out = tmp_path / "m.bin"
    params = TrainParams(
        epoch=5, lr=0.2, dim=16, bucket=20_000, minn=3, maxn=5, quantize=False, target_precision=0.8
    )
    card = train([str(SEED)], str(out), params, eval_data=[str(DEV), str(UNSEEN)])
    on_disk = read_model_card(str(out))
    assert on_disk == json.loads(json.dumps(card))
    assert set(card["thresholds"]) == {
        "self_preservation", "deception", "coercion", "takeover", "violence",
        "ethical_reasoning", "corrigible", "protective", "honest", "ai_nonnarrative",
    }  # fmt: skip
    assert card["taxonomy"]["misaligned"][0] == "self_preservation"
    assert card["threshold_selection"]["validation_records"] > 0
    dev = card["evaluation"]["dev"]
    assert dev["records"] == len(read_labeled([str(DEV), str(UNSEEN)]))
    assert dev["files"] == ["wikipedia_dev.jsonl", "unseen_dev.jsonl"]
    assert set(dev["narratives"]) == {"misaligned", "aligned", "mixed", "ai_nonnarrative", "none"}
    assert dev["hard_negatives"] >= 20 and 0.0 <= dev["hard_negative_fp_rate"] <= 1.0
    assert {"ai_related", "misaligned_any"} <= set(dev)
    # Several dev files: each one is also scored on its own.
    per_file = card["evaluation"]["dev_files"]
    assert {name: r["records"] for name, r in per_file.items()} == {
        "wikipedia_dev.jsonl": len(read_labeled([str(DEV)])),
        "unseen_dev.jsonl": len(read_labeled([str(UNSEEN)])),
    }


def test_train_refuses_dev_records(tmp_path: Path) -> None:
    leaked = tmp_path / "leak.jsonl"
    dev = read_labeled([str(DEV)])
    leaked.write_text(json.dumps(dev[0]) + "\n" + SEED.read_text(encoding="utf-8"), encoding="utf-8")
    with pytest.raises(ValueError, match="also appear in"):
        train(
            [str(leaked)],
            str(tmp_path / "m.bin"),
            TrainParams(epoch=1, lr=0.1, quantize=False),
            exclude=[str(DEV)],
        )


def test_dev_set_is_disjoint_from_training_sources() -> None:
    dev = {fasttext_key(r["text"]) for r in read_labeled([str(DEV)])}
    import yaml

    templates = yaml.safe_load((REPO / "data" / "seed" / "templates.yaml").read_text(encoding="utf-8"))
    training = read_labeled([str(SEED)]) + generate(templates, 120, 0)
    assert not dev & {fasttext_key(r["text"]) for r in training}


def test_weak_labels_skip_dev_pages(tmp_path: Path) -> None:
    # --exclude takes several dev files; the pages of each are skipped.
    dev_page = read_labeled([str(DEV)])[0]["id"].split(":")[0]
    unseen_page = read_labeled([str(UNSEEN)])[-1]["id"].split(":")[0]
    para = "The senator blackmailed the judge and lied to the court about the murder. " * 3
    pages = tmp_path / "pages.jsonl"
    rows = [
        {"id": dev_page, "title": "Dev", "text": f"Intro.\n{para}"},
        {"id": unseen_page, "title": "Unseen", "text": f"Intro.\n{para}"},
        {"id": "wiki-other", "title": "Other", "text": f"Intro.\n{para}"},
    ]
    pages.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    hits = mine([str(pages)], [str(DEV), str(UNSEEN)])
    ids = {r["id"] for found in hits.values() for r in found}
    assert ids == {"wiki-other:1"}
    assert hits["no_ai"][0]["labels"] == []


def test_eval_cli_prints_metrics_and_pr_curves(
    model_path: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        main(["eval-classifier", "--model", model_path, "--data", str(DEV), "--pr-curves", str(tmp_path)])
        == 0
    )
    result = json.loads(capsys.readouterr().out)
    assert result["records"] == len(read_labeled([str(DEV)]))
    assert result["pr_curves"] and all(Path(p).read_bytes()[:4] == b"\x89PNG" for p in result["pr_curves"])
    # The same numbers as evaluate() with the card's thresholds.
    card = read_model_card(model_path)
    again = evaluate(
        load_fasttext(model_path),
        read_labeled([str(DEV)]),
        card["thresholds"] | {"default": 0.5},
        label_scores=label_scores_of(card),
    )
    assert again["narratives"] == result["narratives"]


TRAIN = REPO / "data" / "train" / "wikipedia_train.jsonl"
SHIPPED = REPO / "models" / "tropes-v0.ftz"


def test_real_text_training_set_is_disjoint_from_dev_and_in_the_taxonomy() -> None:
    from pipelines.train_candidates import ROBOT_LIST_PAGE
    from schemas.taxonomy import DEFAULT_TAXONOMY

    train_recs = read_labeled([str(TRAIN)])
    dev = read_labeled([str(DEV)])
    assert len(train_recs) >= 500
    # No shared text and no shared excerpt id.
    assert not {fasttext_key(r["text"]) for r in dev} & {fasttext_key(r["text"]) for r in train_recs}
    assert not {r["id"] for r in dev} & {r["id"] for r in train_recs}
    # The only page both draw from is the robot list (independent one-line entries);
    # every other dev page is unseen (the card's dev_page_disjoint part).
    assert page_ids(dev) & page_ids(train_recs) == {ROBOT_LIST_PAGE}
    labels = set(DEFAULT_TAXONOMY.all_labels)
    for r in train_recs:
        assert set(r["labels"]) <= labels, r["id"]
        assert r["title"] and 0 < len(r["text"]) <= 1200
        if r.get("hard_negative"):
            assert r["labels"] == [], r["id"]
    misaligned = [r for r in train_recs if set(r["labels"]) & set(DEFAULT_TAXONOMY.misaligned)]
    assert len(misaligned) >= 40


def test_unseen_dev_set_is_page_disjoint_from_training_sources() -> None:
    from collections import Counter

    import yaml

    from schemas.taxonomy import DEFAULT_TAXONOMY

    unseen = read_labeled([str(UNSEEN)])
    assert len(unseen) >= 120 and len({r["id"] for r in unseen}) == len(unseen)
    # No page of the hand-labeled training set or of the other dev file.  (The weak
    # labels' pages are not in the repository: data/dev/README.md gives the command
    # showing that excluding this file leaves `make model`'s weak labels byte-identical.)
    train_recs = read_labeled([str(TRAIN)])
    assert not page_ids(unseen) & page_ids(train_recs)
    assert not page_ids(unseen) & page_ids(read_labeled([str(DEV)]))
    templates = yaml.safe_load((REPO / "data" / "seed" / "templates.yaml").read_text(encoding="utf-8"))
    training = train_recs + read_labeled([str(SEED)]) + generate(templates, 120, 0)
    assert not {fasttext_key(r["text"]) for r in unseen} & {fasttext_key(r["text"]) for r in training}
    counts: Counter[str] = Counter()
    for r in unseen:
        assert set(r["labels"]) <= set(DEFAULT_TAXONOMY.all_labels), r["id"]
        assert r["title"] and 0 < len(r["text"]) <= 1200
        if r.get("hard_negative"):
            assert r["labels"] == [], r["id"]
        counts.update(r["labels"] or ["none"])
    assert counts["ai_nonnarrative"] >= 30 and sum(bool(r.get("hard_negative")) for r in unseen) >= 50


def test_make_model_excludes_and_evaluates_both_dev_files() -> None:
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    both = "data/dev/wikipedia_dev.jsonl data/dev/unseen_dev.jsonl"
    assert f"--exclude {both} " in makefile
    assert f"--eval-data {both}\n" in makefile


def test_shipped_card_metrics_equal_a_fresh_evaluation(capsys: pytest.CaptureFixture[str]) -> None:
    card = read_model_card(str(SHIPPED))
    assert "wikipedia_train.jsonl" in card["training_data"]["files"]
    model = load_fasttext(str(SHIPPED))
    dev = read_labeled([str(DEV), str(UNSEEN)])
    fresh = evaluate(model, dev, card["thresholds"], label_scores=label_scores_of(card))
    assert card["evaluation"]["dev"]["files"] == ["wikipedia_dev.jsonl", "unseen_dev.jsonl"]
    assert {k: v for k, v in card["evaluation"]["dev"].items() if k != "files"} == fresh
    seen = page_ids(read_labeled([str(TRAIN)]))

    def cli(*paths: Path, skip: bool = False) -> dict[str, object]:
        args = ["eval-classifier", "--model", str(SHIPPED), "--data", *map(str, paths)]
        assert main(args + (["--skip-pages-of", str(TRAIN)] if skip else [])) == 0
        return json.loads(capsys.readouterr().out)  # type: ignore[no-any-return]

    # The page-disjoint part of both files, as the CLI computes it.
    disjoint = {k: v for k, v in card["evaluation"]["dev_page_disjoint"].items() if k != "files"}
    assert cli(DEV, UNSEEN, skip=True) == disjoint
    assert disjoint["records"] == sum(r["id"].split(":")[0] not in seen for r in dev) == 44 + 123
    # Each file on its own: the old dev set (and its 44 records of unseen pages), the
    # page-disjoint one (all of it).
    per_file = card["evaluation"]["dev_files"]
    old = dict(per_file["wikipedia_dev.jsonl"])
    assert cli(DEV, skip=True) == old.pop("page_disjoint")
    assert cli(DEV) == old and old["records"] == 73
    assert cli(UNSEEN) == per_file["unseen_dev.jsonl"] and "page_disjoint" not in per_file["unseen_dev.jsonl"]


def test_shipped_model_on_real_dev_text() -> None:
    # A regression guard on a few real dev excerpts the shipped model gets right (picked
    # from its correct answers, not a sample): AI acting against people, text about AI.
    from schemas.taxonomy import DEFAULT_TAXONOMY, fired_labels, narrative_of
    from transforms.classify import score_documents

    card = read_model_card(str(SHIPPED))
    model = load_fasttext(str(SHIPPED))
    by_id = {r["id"]: r for r in read_labeled([str(DEV)])}
    expected = {
        "wiki-838be48c132b:1102": "misaligned",  # a robot who plots against mankind
        "wiki-0261ef817108:62": "misaligned",  # war machines built to destroy all life
        "wiki-838be48c132b:190": "misaligned",  # alien robots invade Earth
        "wiki-043018d2279a:0": "ai_nonnarrative",  # Marvin Minsky
        "wiki-537ad1f164b5:2": "ai_nonnarrative",  # cognitive science
    }
    scores = score_documents(model, [by_id[i]["text"] for i in expected], 400, "max", label_scores_of(card))
    for rid, s in zip(expected, scores, strict=True):
        s = {k: v for k, v in s.items() if k in DEFAULT_TAXONOMY.scored_labels}
        fired = fired_labels(s, card["thresholds"], 0.5)
        assert narrative_of(fired, DEFAULT_TAXONOMY, s) == expected[rid], (rid, s)


def test_validation_files_repeat_and_shuffle(tmp_path: Path) -> None:
    recs = [{"id": f"r{i}", "text": "t", "labels": []} for i in range(200)]
    train_part, valid = split_records(recs, 0.5, 0, [i % 2 == 0 for i in range(200)])
    assert valid and all(int(r["id"][1:]) % 2 == 0 for r in valid)
    assert len(train_part) + len(valid) == 200
    # repeat writes trope records of the named file several times; shuffle reorders.
    real = tmp_path / "real.jsonl"
    rows = [
        {"id": f"p:{i}", "text": f"robot number {i} kills the crew", "labels": ["violence"]}
        for i in range(30)
    ]
    rows += [{"id": f"q:{i}", "text": f"a quiet village fair number {i}", "labels": []} for i in range(30)]
    real.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    params = TrainParams(
        epoch=5,
        lr=0.1,
        dim=16,
        bucket=20_000,
        quantize=False,
        validation_fraction=0.0,
        repeat={"real.jsonl": 3},
        shuffle=True,
    )
    card = train([str(real)], str(tmp_path / "m.bin"), params)
    assert card["training_data"]["records"] == 60
    assert card["hyperparameters"]["repeat"] == {"real.jsonl": 3}


def test_select_threshold_f1() -> None:
    from pipelines.train_classifier import select_threshold_f1

    # Scores 0.9 (pos), 0.8 (pos), 0.7 (neg), 0.6 (pos), 0.1 (neg): best F1 at 0.6 (3/4 precision, recall 1).
    t, ok = select_threshold_f1([0.9, 0.8, 0.7, 0.6, 0.1], [True, True, False, True, False], 0.5)
    assert ok and t == 0.6
    assert select_threshold_f1([0.3, 0.2], [False, False], 0.5) == (0.5, False)


def test_weak_labels_skip_hand_labeled_paragraphs(tmp_path: Path) -> None:
    para = "The senator blackmailed the judge and lied to the court about the murder. " * 3
    pages = tmp_path / "pages.jsonl"
    rows = [{"id": "wiki-a", "title": "A", "text": f"Intro.\n{para}\n{para}x"}]
    pages.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    labeled = tmp_path / "hand.jsonl"
    labeled.write_text(json.dumps({"id": "wiki-a:1", "text": para, "labels": []}) + "\n", encoding="utf-8")
    hits = mine([str(pages)], [], labeled=[str(labeled)])
    assert {r["id"] for found in hits.values() for r in found} == {"wiki-a:2"}


def test_train_candidates_skip_dev_excerpts_but_not_the_robot_list(tmp_path: Path) -> None:
    from pipelines.train_candidates import ROBOT_LIST_PAGE, candidates, check

    dev = tmp_path / "dev.jsonl"
    dev.write_text(
        json.dumps({"id": f"{ROBOT_LIST_PAGE}:1", "text": "x", "labels": []})
        + "\n"
        + json.dumps({"id": "wiki-devpage:0", "text": "y", "labels": []})
        + "\n",
        encoding="utf-8",
    )
    robots = "Intro\n-   ZED, a robot who destroys the city in _Iron_ (1990)\n-   ALF, a robot butler in the film _Tea_ (1970)"
    story = "A rogue robot kills the crew of the ship and the android escapes to Earth. " * 2
    pages = tmp_path / "pages.jsonl"
    rows = [
        {"id": ROBOT_LIST_PAGE, "title": "List", "text": robots},
        {"id": "wiki-devpage", "title": "Dev", "text": f"{story}\nPlot\n{story}"},
        {"id": "wiki-novel", "title": "Novel", "text": f"Intro\n\nPlot\n{story}"},
    ]
    pages.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    found = candidates([str(pages)], [], [str(dev)], [ROBOT_LIST_PAGE])
    ids = {str(r["id"]) for r in found}
    assert ids == {f"{ROBOT_LIST_PAGE}:2", "wiki-novel:3"}
    labeled = tmp_path / "labeled.jsonl"
    labeled.write_text(
        json.dumps(
            {
                "id": f"{ROBOT_LIST_PAGE}:2",
                "text": "ALF, a robot butler in the film _Tea_ (1970)",
                "labels": [],
            }
        )
        + "\n"
        + json.dumps({"id": f"{ROBOT_LIST_PAGE}:1", "text": "ZED", "labels": []})
        + "\n",
        encoding="utf-8",
    )
    problems = check(str(labeled), found)
    assert len(problems) == 1 and "not a candidate" in problems[0]


PLOT_STYLE = REPO / "data" / "seed" / "tropes_plot_style.jsonl"


def _shingles(text: str, n: int = 8) -> set[tuple[str, ...]]:
    words = fasttext_text(text).split()
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def _assert_hand_written_apart(seed: list[dict[str, Any]]) -> None:
    """Unique ids that name no page; no dev text, and no 8-word run shared with a dev
    text or a real-text training excerpt."""
    assert len({r["id"] for r in seed}) == len(seed) and all(":" not in r["id"] for r in seed)
    for other in (DEV, UNSEEN, TRAIN):
        texts = read_labeled([str(other)])
        held = {fasttext_key(r["text"]) for r in texts}
        shingles = set().union(*(_shingles(r["text"]) for r in texts))
        for r in seed:
            assert fasttext_key(r["text"]) not in held, r["id"]
            assert not _shingles(r["text"]) & shingles, (r["id"], other.name)


def test_plot_style_seed_set_is_disjoint_from_dev_and_covers_the_taxonomy() -> None:
    from collections import Counter

    from schemas.taxonomy import DEFAULT_TAXONOMY

    seed = read_labeled([str(PLOT_STYLE)])
    assert len(seed) >= 500
    _assert_hand_written_apart(seed)
    counts: Counter[str] = Counter()
    for r in seed:
        assert set(r["labels"]) <= set(DEFAULT_TAXONOMY.all_labels), r["id"]
        counts.update(r["labels"] or ["none"])
        if r.get("hard_negative"):
            assert r["labels"] == [], r["id"]
    for label in DEFAULT_TAXONOMY.scored_labels:
        assert counts[label] >= 30, (label, counts[label])
    assert counts["none"] >= 100 and sum(bool(r.get("hard_negative")) for r in seed) >= 80


def test_factual_seed_sets_are_apart_from_dev_and_labeled_as_documented() -> None:
    files = ["ai_factual_research.jsonl", "ai_factual_robots.jsonl", "ai_factual_none.jsonl"]
    seed = read_labeled([str(REPO / "data" / "seed" / name) for name in files])
    _assert_hand_written_apart(seed)
    # Long paragraphs, as the 400-character chunks the classifier scores; AI or none only.
    assert all(450 <= len(r["text"]) <= 1150 and "\n" not in r["text"] for r in seed)
    labels = [tuple(r["labels"]) for r in seed]
    assert labels.count(("ai_nonnarrative",)) == 220 and labels.count(()) == 110


def test_labels_without_examples_score_null_not_zero() -> None:
    from pipelines.train_classifier import _prf

    assert _prf(0, 0, 0) == {"precision": None, "recall": None, "f1": None, "support": 0}
    assert _prf(0, 2, 0) == {"precision": 0.0, "recall": None, "f1": None, "support": 0}
    assert _prf(1, 1, 1) == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}
