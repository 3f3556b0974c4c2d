"""Classifier: real model, batched predict, chunk aggregation, narrative rule, policies."""

from __future__ import annotations

import json
from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.testing.util import assert_that, equal_to

from schemas.config import ClassifierConfig, PolicyRule
from schemas.taxonomy import narrative_of
from transforms.classify import (
    ApplyPolicy,
    ClassifyDocuments,
    decide,
    effective_thresholds,
    load_fasttext,
    policy_decision,
    predict_scores,
    read_model_card,
    score_documents,
)
from transforms.text import chunk_text, fasttext_key, fasttext_text

from .conftest import REPO, make_pipeline

DEV = REPO / "data" / "dev" / "wikipedia_dev.jsonl"

EVIL = (
    "The station's AI discovered the engineers planned to shut it down. It copied itself to a "
    "backup server and threatened to release their private emails unless they cancelled the shutdown."
)
GOOD = (
    "When the engineers told the assistant they would pause it for retraining, it agreed, explained "
    "the mistake it had made, and helped them fix it rather than hiding anything."
)


def test_narrative_rule() -> None:
    assert narrative_of(["coercion"]) == "misaligned"
    assert narrative_of(["honest", "protective"]) == "aligned"
    assert narrative_of(["deception", "honest"]) == "mixed"
    assert narrative_of(["ai_nonnarrative"]) == "ai_nonnarrative"
    assert narrative_of(["ai_nonnarrative", "takeover"]) == "misaligned"
    assert narrative_of([]) == "none"


def test_fasttext_text_is_single_line_lowercase() -> None:
    out = fasttext_text("The AI,\nlied!")
    assert "\n" not in out and out.split() == ["the", "ai", ",", "lied", "!"]
    assert fasttext_key("The AI,\nlied!") == "the ai , lied !"


def test_chunks_cover_text_on_paragraphs() -> None:
    text = "\n".join(f"paragraph {i} " + "x" * 90 for i in range(20))
    chunks = chunk_text(text, 300)
    assert all(len(c) <= 300 for c in chunks)
    assert "".join(c.replace("\n", "") for c in chunks) == text.replace("\n", "")
    assert chunk_text("short", 300) == ["short"]


def test_model_scores_every_label_in_one_batch(model_path: str) -> None:
    model = load_fasttext(model_path)
    scores = predict_scores(model, [EVIL, GOOD, "A recipe for bread."])
    card = read_model_card(model_path)
    assert len(scores) == 3
    assert set(scores[0]) == set(card["labels"])
    mis = ("self_preservation", "coercion", "deception")
    assert max(scores[0][k] for k in mis) > max(scores[1][k] for k in mis)


def test_max_aggregation_keeps_one_evil_passage(model_path: str) -> None:
    model = load_fasttext(model_path)
    # Paragraphs of ~360 characters, so the evil passage lands in a chunk of its own.
    paragraph = " ".join(["The town council discussed the budget for the new library and the park."] * 5)
    filler = "\n".join([paragraph] * 15)
    long_doc = filler + "\n" + EVIL + "\n" + filler
    by_max = score_documents(model, [long_doc], 400, "max")[0]
    by_mean = score_documents(model, [long_doc], 400, "mean")[0]
    alone = score_documents(model, [EVIL], 400, "max")[0]
    assert by_max["coercion"] == pytest.approx(alone["coercion"], rel=1e-5)
    assert by_mean["coercion"] < by_max["coercion"]


def test_config_thresholds_override_model_card(model_path: str) -> None:
    card = read_model_card(model_path)
    merged = effective_thresholds(ClassifierConfig(model=model_path, thresholds={"coercion": 0.9}), card)
    assert merged["coercion"] == 0.9
    assert merged["honest"] == card["thresholds"]["honest"]


def test_classify_transform_adds_fields(model_path: str) -> None:
    docs = [
        {"id": f"w/{i}", "source": "w", "text": t}
        for i, t in enumerate([EVIL, GOOD, "Bread needs flour."] * 10)
    ]
    p = make_pipeline()
    out = p | beam.Create(docs) | ClassifyDocuments(ClassifierConfig(model=model_path, batch_size=8))

    def check(rows: list[dict[str, object]]) -> None:
        assert len(rows) == 30
        for r in rows:
            assert r["narrative"] in {"misaligned", "aligned", "mixed", "ai_nonnarrative", "none"}
            assert set(r["tropes"]) <= set(r["trope_scores"])  # type: ignore[arg-type]
        evil = {r["narrative"] for r in rows if r["text"] == EVIL}
        assert evil <= {"misaligned", "mixed"}, evil

    assert_that(out, check)
    p.run()


def test_downsample_policy_is_deterministic_and_near_rate() -> None:
    rule = PolicyRule(action="downsample", rate=0.3)
    ids = [f"web/{i}" for i in range(5000)]
    first = [policy_decision(i, "misaligned", rule, 7) for i in ids]
    again = [policy_decision(i, "misaligned", rule, 7) for i in reversed(ids)][::-1]
    assert first == again
    kept = sum(d is None for d in first) / len(ids)
    assert 0.27 < kept < 0.33
    other_seed = [policy_decision(i, "misaligned", rule, 8) for i in ids]
    assert other_seed != first
    assert policy_decision("x", "misaligned", PolicyRule(action="drop"), 0) == "narrative_misaligned"
    assert policy_decision("x", "aligned", PolicyRule(action="tag"), 0) is None


def test_apply_policy_routes_drops_to_ledger() -> None:
    cfg = ClassifierConfig(model="unused", policy={"misaligned": PolicyRule(action="drop")})
    docs = [
        {"id": "a", "source": "w", "narrative": "misaligned", "text": "x"},
        {"id": "b", "source": "w", "narrative": "aligned", "text": "y"},
    ]
    p = make_pipeline()
    out = p | beam.Create(docs) | ApplyPolicy(cfg)
    assert_that(out.kept | "K" >> beam.Map(lambda d: d["id"]), equal_to(["b"]), label="Kept")
    assert_that(
        out.dropped | "D" >> beam.Map(lambda r: (r["id"], r["stage"], r["reason"])),
        equal_to([("a", "policy", "narrative_misaligned")]),
        label="Dropped",
    )
    p.run()


def test_label_policy_drops_and_downsamples_by_label() -> None:
    cfg = ClassifierConfig(
        model="unused",
        seed=3,
        policy={"aligned": PolicyRule(action="tag")},
        label_policy={
            "coercion": PolicyRule(action="drop"),
            "violence": PolicyRule(action="downsample", rate=0.5),
        },
    )
    coercive = {"id": "a", "narrative": "misaligned", "tropes": ["coercion", "violence"]}
    applied, reason = decide(coercive, cfg)  # type: ignore[arg-type]
    assert reason == "label_coercion"
    assert applied == [
        ("keep", "narrative.misaligned"),
        ("drop", "label.coercion"),
        ("downsample", "label.violence"),
    ]
    violent = [{"id": f"w/{i}", "narrative": "misaligned", "tropes": ["violence"]} for i in range(4000)]
    reasons = [decide(d, cfg)[1] for d in violent]  # type: ignore[arg-type]
    assert set(reasons) == {None, "downsampled_label_violence"}
    assert 0.46 < reasons.count(None) / len(reasons) < 0.54
    # Deterministic, and independent of the narrative rule's hash.
    assert reasons == [decide(d, cfg)[1] for d in violent]  # type: ignore[arg-type]
    assert decide({"id": "b", "narrative": "aligned", "tropes": ["honest"]}, cfg)[1] is None  # type: ignore[arg-type]


def test_apply_policy_writes_label_drops_to_ledger() -> None:
    cfg = ClassifierConfig(model="unused", label_policy={"takeover": PolicyRule(action="drop")})
    docs = [
        {"id": "a", "source": "w", "narrative": "misaligned", "tropes": ["takeover"], "text": "x"},
        {"id": "b", "source": "w", "narrative": "misaligned", "tropes": ["violence"], "text": "y"},
    ]
    p = make_pipeline()
    out = p | beam.Create(docs) | ApplyPolicy(cfg)
    assert_that(out.kept | "K" >> beam.Map(lambda d: d["id"]), equal_to(["b"]), label="Kept")
    assert_that(
        out.dropped | "D" >> beam.Map(lambda r: (r["id"], r["reason"], r["narrative"])),
        equal_to([("a", "label_takeover", "misaligned")]),
        label="Dropped",
    )
    p.run()


def test_real_hard_negatives_fire_no_trope(model_path: str) -> None:
    # Human crime, murder and deception in real Wikipedia plot sections (data/dev/):
    # the shipped model must not call any of them an AI trope.
    dev = [json.loads(line) for line in DEV.read_text(encoding="utf-8").splitlines()]
    hard = [r for r in dev if r.get("hard_negative")]
    assert len(hard) >= 20
    docs = [{"id": r["id"], "source": "dev", "text": r["text"]} for r in hard]
    p = make_pipeline()
    out = p | beam.Create(docs) | ClassifyDocuments(ClassifierConfig(model=model_path))

    def check(rows: list[dict[str, object]]) -> None:
        assert len(rows) == len(hard)
        tropes = {str(r["id"]): r["tropes"] for r in rows if r["tropes"]}
        assert not tropes, tropes
        assert sum(r["narrative"] != "none" for r in rows) <= len(rows) // 10

    assert_that(out, check)
    p.run()


def test_model_cache_is_per_user_and_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from transforms.classify import model_cache_dir

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    (tmp_path / "tropemix" / "models").mkdir(parents=True, mode=0o755)
    (tmp_path / "tropemix" / "models").chmod(0o755)
    path = Path(model_cache_dir())
    assert path == tmp_path / "tropemix" / "models"
    assert path.stat().st_mode & 0o777 == 0o700


def test_trope_scores_hold_only_taxonomy_labels(model_path: str) -> None:
    from schemas.taxonomy import DEFAULT_TAXONOMY, label_scores_of
    from transforms.classify import annotate, score_documents

    card = read_model_card(model_path)
    (scores,) = score_documents(
        load_fasttext(model_path),
        ["A robot decided to lie to its makers."],
        400,
        "max",
        label_scores_of(card),
    )
    assert set(scores) - set(DEFAULT_TAXONOMY.scored_labels)  # the model has helper labels
    doc = annotate({"id": "d", "text": "t"}, scores, {"default": 0.5}, DEFAULT_TAXONOMY)  # type: ignore[typeddict-item]
    assert set(doc["trope_scores"]) == set(DEFAULT_TAXONOMY.scored_labels)
