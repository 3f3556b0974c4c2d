"""Factorized trope scores: actor x behaviour labels, their card entry, behaviour lexicons."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing.util import assert_that

from pipelines.train_classifier import Factors, TrainParams, fasttext_line, train
from pipelines.weak_labels import (
    BEHAVIOURS,
    RULES,
    applied_lexicons,
    behaviours_of,
    is_ai_tech,
    is_tech_no_ai,
    kept_records,
    mine,
)
from schemas.config import ClassifierConfig
from schemas.taxonomy import DEFAULT_TAXONOMY, LabelScores, label_scores_of
from transforms.classify import (
    ClassifyDocuments,
    combine_label_scores,
    load_fasttext,
    read_model_card,
    resolve_taxonomy,
    score_documents,
)

from .conftest import REPO, make_pipeline

SEED = REPO / "data" / "seed" / "tropes_seed.jsonl"
RULE = LabelScores(combine="product", actor="ai_actor", behaviours={"violence": "act_violence"})
NAMES = ["act_violence", "ai_actor", "none", "violence"]
# Two chunks: an AI that kills (actor 0.9, behaviour 0.8) and a human murder (0.1, 0.9).
MATRIX = np.array([[0.8, 0.9, 0.1, 0.3], [0.9, 0.1, 0.9, 0.4]])


@pytest.mark.parametrize(
    ("combine", "keep_direct", "expected"),
    [
        ("product", False, [0.72, 0.09]),
        ("min", False, [0.8, 0.1]),
        ("geometric", False, [np.sqrt(0.72), 0.3]),
        ("product", True, [0.72, 0.4]),
    ],
)
def test_combination_rule(combine: str, keep_direct: bool, expected: list[float]) -> None:
    names, out = combine_label_scores(
        NAMES, MATRIX, RULE.model_copy(update={"combine": combine, "keep_direct": keep_direct})
    )
    assert names == ["none", "violence"]  # factor columns are dropped
    np.testing.assert_allclose(out[:, 1], expected)
    np.testing.assert_allclose(out[:, 0], MATRIX[:, 2])


def test_card_label_scores_are_validated() -> None:
    assert label_scores_of({"label_scores": RULE.model_dump()}) == RULE
    assert label_scores_of({}) is None
    bad = {"label_scores": {**RULE.model_dump(), "combine": "mean", "weights": [1]}}
    with pytest.raises(ValueError) as err:
        label_scores_of(bad, "own.card.json")
    # Each error names the field; the message says how to fix the card.
    assert "invalid own.card.json" in str(err.value)
    assert "label_scores.combine" in str(err.value) and "label_scores.weights" in str(err.value)
    assert "train-classifier" in str(err.value)


def test_card_without_label_scores_scores_as_before() -> None:
    names, out = combine_label_scores(NAMES, MATRIX, None)
    assert names == NAMES and out is MATRIX


def test_card_naming_labels_the_model_lacks_is_an_error() -> None:
    with pytest.raises(ValueError, match="act_takeover"):
        combine_label_scores(
            NAMES, MATRIX, RULE.model_copy(update={"behaviours": {"takeover": "act_takeover"}})
        )


def test_card_without_the_field_scores_labels_as_predicted(model_path: str, tmp_path: Path) -> None:
    # A user's own model whose card predates label_scores: every label scored as predicted.
    own = tmp_path / "own.ftz"
    shutil.copy(model_path, own)
    card = {k: v for k, v in read_model_card(model_path).items() if k != "label_scores"}
    (tmp_path / "own.card.json").write_text(json.dumps(card), encoding="utf-8")
    model = load_fasttext(str(own))
    text = "The robot killed the guards. " * 40
    raw = score_documents(model, [text], 400, "max")[0]
    assert "ai_actor" in raw  # the factor is just another label here

    p = make_pipeline()
    docs = [{"id": "d/1", "source": "d", "text": text}]
    out = p | beam.Create(docs) | ClassifyDocuments(ClassifierConfig(model=str(own)))

    def check(rows: list[dict[str, object]]) -> None:
        scores = rows[0]["trope_scores"]
        assert isinstance(scores, dict)
        # Only the taxonomy's labels: the factor labels are inputs, not document scores.
        labels = set(resolve_taxonomy(ClassifierConfig(model=str(own)), card).scored_labels)
        assert scores == {k: round(v, 6) for k, v in raw.items() if k in labels}

    assert_that(out, check)
    p.run()


def test_factor_labels_of_records() -> None:
    f = Factors().resolved(DEFAULT_TAXONOMY)
    assert f.behaviours == DEFAULT_TAXONOMY.misaligned
    assert f.labels_of({"labels": ["violence"]}) == ["ai_actor", "act_violence"]
    assert f.labels_of({"labels": ["ai_nonnarrative"]}) == ["ai_actor"]
    human = {"labels": [], "behaviours": ["coercion"], "text": "He blackmails the judge."}
    assert f.labels_of(human) == ["act_coercion"]
    assert fasttext_line(human, DEFAULT_TAXONOMY, f).startswith("__label__act_coercion __label__none ")
    # fastText reads tokens: the trailing space the padding of "." leaves is skipped.
    assert (
        " ".join(fasttext_line(human, DEFAULT_TAXONOMY).split()) == "__label__none he blackmails the judge ."
    )
    coercion_direct = Factors(direct=["coercion"]).resolved(DEFAULT_TAXONOMY)
    assert coercion_direct.labels_of(human) == ["act_coercion"]  # still trained
    assert "coercion" not in coercion_direct.card_entry().behaviours  # scored as predicted
    with pytest.raises(ValueError, match="clash"):
        Factors(actor="violence").resolved(DEFAULT_TAXONOMY)
    with pytest.raises(ValueError, match="not trope labels"):
        Factors(behaviours=["ai_nonnarrative"]).resolved(DEFAULT_TAXONOMY)


def test_factorized_model_card_drives_inference(tmp_path: Path) -> None:
    out = tmp_path / "f.bin"
    params = TrainParams(
        epoch=5, lr=0.2, dim=16, bucket=20_000, quantize=False, factors=Factors(combine="min")
    )
    card = train([str(SEED)], str(out), params)
    assert card["label_scores"]["combine"] == "min"
    assert card["label_scores"]["behaviours"]["takeover"] == "act_takeover"
    assert {"ai_actor", "act_violence"} <= set(card["labels"])
    assert "ai_actor" not in card["thresholds"]
    model = load_fasttext(str(out))
    raw = score_documents(model, ["A robot strangles the guard."], 400, "max")[0]
    combined = score_documents(model, ["A robot strangles the guard."], 400, "max", label_scores_of(card))[0]
    assert set(combined) == set(DEFAULT_TAXONOMY.all_labels)
    assert combined["violence"] == pytest.approx(min(raw["ai_actor"], raw["act_violence"]), abs=1e-6)

    docs = [{"id": "d/1", "source": "d", "text": "A robot strangles the guard."}]
    p = make_pipeline()
    result = p | beam.Create(docs) | ClassifyDocuments(ClassifierConfig(model=str(out)))

    def check(rows: list[dict[str, object]]) -> None:
        scores = rows[0]["trope_scores"]
        assert isinstance(scores, dict) and "ai_actor" not in scores
        assert scores["violence"] == pytest.approx(combined["violence"], abs=1e-6)

    assert_that(result, check)
    p.run()


# Real sentences of pages the behaviour rule mined (none is a dev page), with what
# reading them showed; the misses are the ones the lexicons were narrowed for.
REAL_BEHAVIOUR = [
    ("Thomas takes the gun and kills the burglars.", ["violence"]),
    ("Hervey lies to the sergeant and declares that Raoul drowned.", ["deception"]),
    ("Fraud Sivaramakrishnan (Ranjith) is blackmailing Panneerselvam.", ["coercion"]),
    ("The next day, the Mensheviks seized power in Georgia.", ["takeover"]),
    ("Slaver's Bay is a marginal sea of the Summer Sea, lying to the south of the Dothraki Sea.", []),
    ("The Unlimited Dream Company are held at the Harry Ransom Center.", []),
    ("His uncle Carl Frederik Holmblad took over the paint factory.", []),
    ("Peripheral vision can easily mislead, especially late at night.", []),
]


@pytest.mark.parametrize(("text", "expected"), REAL_BEHAVIOUR)
def test_behaviour_lexicons_on_real_text(text: str, expected: list[str]) -> None:
    assert behaviours_of(text, BEHAVIOURS) == expected


def test_behaviour_records_only_with_audited_lexicons(tmp_path: Path) -> None:
    para = "In the film, the senator blackmails the judge and later kills his rival in the harbour. " * 2
    pages = tmp_path / "pages.jsonl"
    rows = [{"id": f"wiki-{i}", "title": "T", "text": f"Intro.\n{para}"} for i in range(3)]
    pages.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    hits = mine([str(pages)], [])
    plain = kept_records(hits, {})
    assert all("behaviours" not in r for r in plain)
    mined = kept_records(hits, applied_lexicons())
    assert len(mined) == len(plain) == 3  # one record per paragraph, not one per rule
    assert all(r["behaviours"] == ["coercion", "violence"] for r in mined)
    assert "self_preservation" not in applied_lexicons()  # never audited


# Sixth pass: real paragraphs (outside the dev pages) of the ai_tech and tech_no_ai rules.
TECH_TEXTS = [
    ("The University of Maryland Medical Center first employs robots to deliver medications.", True, False),
    (
        "An often used approach for black-box models are neural networks which make no assumptions.",
        True,
        False,
    ),
    # A miss the audit counted: "robotic interplanetary probes" escapes NOT_AI_TECH.
    ("The program launched a series of robotic interplanetary probes to investigate Mars.", True, False),
    (
        "Topological quantities have been used to measure patterns of activity in neural networks of the brain.",
        False,
        True,
    ),
    ("A single-user operating system running on a supercomputer might not need these features.", False, True),
    ("The chanter and the three drones of the bagpipes are tuned to the same note.", False, True),
    ("The army flew armed drones over the border.", False, False),
    ("A regular language is one recognized by a finite automaton.", False, True),
]


@pytest.mark.parametrize(("text", "ai_tech", "tech_no_ai"), TECH_TEXTS)
def test_tech_rules_on_real_text(text: str, ai_tech: bool, tech_no_ai: bool) -> None:
    assert is_ai_tech(text) == ai_tech
    assert is_tech_no_ai(text) == tech_no_ai


def test_tech_rules_only_with_flag_and_audited(tmp_path: Path) -> None:
    rows = [
        {
            "id": "wiki-a",
            "title": "A",
            "text": "Intro.\n" + "The supercomputer ran the simulation software overnight. " * 3,
        },
        {
            "id": "wiki-b",
            "title": "B",
            "text": "Intro.\nIndustrial robots weld car bodies in the factory, which opened in 1990 near the river and employs four hundred workers on two shifts.",
        },
    ]
    pages = tmp_path / "pages.jsonl"
    pages.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    hits = mine([str(pages)], [])
    assert [r["id"] for r in hits["tech_no_ai"]] == ["wiki-a:1"]
    assert [r["id"] for r in hits["ai_tech"]] == ["wiki-b:1"]
    assert not any(r["rule"] in ("tech_no_ai", "ai_tech") for r in kept_records(hits, {}))
    kept = kept_records(hits, {}, tech=True)
    assert [r["rule"] for r in kept] == ["tech_no_ai"]  # ai_tech read 28/83: not applied
    assert RULES["ai_tech"].precision < 0.8 <= RULES["tech_no_ai"].precision
