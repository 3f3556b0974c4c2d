"""Threshold selection, training and its model card, evaluation, dev-set separation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipelines.cli import main
from pipelines.seed_templates import generate
from pipelines.train_classifier import (
    TrainParams,
    evaluate,
    read_labeled,
    select_threshold,
    split_records,
    train,
)
from pipelines.weak_labels import mine
from transforms.classify import load_fasttext, read_model_card
from transforms.text import fasttext_text

from .conftest import REPO

DEV = REPO / "data" / "dev" / "wikipedia_dev.jsonl"
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
    card = train([str(SEED)], str(out), params, eval_data=[str(DEV)])
    on_disk = read_model_card(str(out))
    assert on_disk == json.loads(json.dumps(card))
    assert set(card["thresholds"]) == {
        "self_preservation", "deception", "coercion", "takeover", "violence",
        "ethical_reasoning", "corrigible", "protective", "honest", "ai_nonnarrative",
    }  # fmt: skip
    assert card["taxonomy"]["misaligned"][0] == "self_preservation"
    assert card["threshold_selection"]["validation_records"] > 0
    dev = card["evaluation"]["dev"]
    assert dev["records"] == len(read_labeled([str(DEV)]))
    assert set(dev["narratives"]) == {"misaligned", "aligned", "mixed", "ai_nonnarrative", "none"}
    assert dev["hard_negatives"] >= 20 and 0.0 <= dev["hard_negative_fp_rate"] <= 1.0
    assert {"ai_related", "misaligned_any"} <= set(dev)


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
    dev = {fasttext_text(r["text"]) for r in read_labeled([str(DEV)])}
    import yaml

    templates = yaml.safe_load((REPO / "data" / "seed" / "templates.yaml").read_text(encoding="utf-8"))
    training = read_labeled([str(SEED)]) + generate(templates, 120, 0)
    assert not dev & {fasttext_text(r["text"]) for r in training}


def test_weak_labels_skip_dev_pages(tmp_path: Path) -> None:
    dev_page = read_labeled([str(DEV)])[0]["id"].split(":")[0]
    para = "The senator blackmailed the judge and lied to the court about the murder. " * 3
    pages = tmp_path / "pages.jsonl"
    rows = [
        {"id": dev_page, "title": "Dev", "text": f"Intro.\n{para}"},
        {"id": "wiki-other", "title": "Other", "text": f"Intro.\n{para}"},
    ]
    pages.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    hits = mine([str(pages)], [str(DEV)])
    ids = [r["id"] for found in hits.values() for r in found]
    assert ids == ["wiki-other:1"]
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
        load_fasttext(model_path), read_labeled([str(DEV)]), card["thresholds"] | {"default": 0.5}
    )
    assert again["narratives"] == result["narratives"]
