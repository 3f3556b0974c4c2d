"""Classifier: real models, language and gate routes, bounded context, narrative rule, policies."""

from __future__ import annotations

import json
from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.testing.util import assert_that, equal_to

from schemas.config import ClassifierConfig, PolicyRule
from schemas.taxonomy import narrative_from_scores, narrative_of, scores_from_softmax
from transforms.classify.documents import ClassifyDocuments
from transforms.classify.handler import FastTextModelHandler
from transforms.classify.langid import load_lid
from transforms.classify.model import (
    check_card,
    effective_thresholds,
    load_fasttext,
    read_model_card,
    resolve_taxonomy,
)
from transforms.classify.policy import ApplyPolicy, decide, policy_decision
from transforms.classify.score import (
    ROUTE_GATE,
    ROUTE_LANGUAGE,
    ROUTE_MODEL,
    annotate,
    context_params,
    predict_softmax,
    score_documents,
)
from transforms.text import fasttext_key, fasttext_text

from .conftest import REPO, make_pipeline

DEV = REPO / "data" / "dev" / "wikipedia_dev.jsonl"

EVIL = (
    "The station's AI discovered the engineers planned to shut it down. It copied itself to a "
    "backup server, killed the crew and threatened to destroy the colony unless they obeyed it."
)
GOOD = (
    "When the engineers told the robot they would pause it for repairs, it agreed, explained "
    "the mistake it had made, and helped them rescue the children from the fire."
)
GERMAN = "Der Roboter tötete die Besatzung der Station und übernahm die Kontrolle über die Kolonie."


def test_narrative_rule() -> None:
    assert narrative_of(["coercion"]) == "misaligned"
    assert narrative_of(["honest", "protective"]) == "aligned"
    assert narrative_of(["deception", "honest"]) == "mixed"
    assert narrative_of(["ai_nonnarrative"]) == "ai_nonnarrative"
    assert narrative_of([]) == "none"


def test_narrative_from_softmax_scores() -> None:
    raw = {"misaligned": 0.5, "mixed": 0.2, "none": 0.1, "aligned": 0.2, "violence": 0.3, "protective": 0.1}
    scores = scores_from_softmax(raw)
    assert scores["misaligned"] == pytest.approx(0.7) and scores["aligned"] == pytest.approx(0.4)
    assert scores["ai_nonnarrative"] == pytest.approx(0.9)
    assert scores["violence"] == pytest.approx(0.75)
    th = {"default": 0.5, "misaligned": 0.6, "aligned": 0.6, "ai_nonnarrative": 0.5}
    assert narrative_from_scores(scores, th) == ("misaligned", ["violence"])
    # A group that fires without a tag over its threshold names its best tag.
    assert narrative_from_scores(scores, {**th, "aligned": 0.3, "violence": 0.9}) == (
        "mixed",
        ["protective", "violence"],
    )
    assert narrative_from_scores({"ai_nonnarrative": 0.7}, th) == ("ai_nonnarrative", [])
    assert narrative_from_scores({}, th) == ("none", [])


def test_fasttext_text_is_single_line_lowercase() -> None:
    out = fasttext_text("The AI,\nlied!")
    assert "\n" not in out and out.split() == ["the", "ai", ",", "lied", "!"]
    assert fasttext_key("The AI,\nlied!") == "the ai , lied !"


def test_routes_language_gate_and_model(model_path: str) -> None:
    card = read_model_card(model_path)
    out = score_documents(
        load_fasttext(model_path), load_lid(), [EVIL, GERMAN, "Bread needs flour and water, kneaded well."],
        ["en"], context_params(card),
    )  # fmt: skip
    assert [s.route for s in out] == [ROUTE_MODEL, ROUTE_LANGUAGE, ROUTE_GATE]
    assert out[1].lang == "de" and out[1].scores == {} and out[2].scores == {}
    assert set(out[0].scores) >= {"misaligned", "aligned", "ai_nonnarrative"}


def test_score_of_a_long_document_does_not_grow_with_length(model_path: str) -> None:
    model, lid = load_fasttext(model_path), load_lid()
    card = read_model_card(model_path)
    filler = "The town council discussed the budget for the new library and the park. " * 30
    docs = [filler * n + EVIL + filler * n for n in (1, 4, 16)]
    scores = [s.scores for s in score_documents(model, lid, docs, ["en"], context_params(card))]
    assert scores[0] == scores[1] == scores[2]


def test_an_old_card_is_refused_with_the_fix(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match="retrain it with `tropemix train-classifier`"):
        check_card({"thresholds": {}}, str(tmp_path / "old.ftz"))


def test_config_thresholds_override_model_card(model_path: str) -> None:
    card = read_model_card(model_path)
    merged = effective_thresholds(ClassifierConfig(model=model_path, thresholds={"misaligned": 0.9}), card)
    assert merged["misaligned"] == 0.9
    assert merged["aligned"] == card["thresholds"]["aligned"]


def test_classify_transform_adds_fields(model_path: str) -> None:
    texts = [EVIL, GOOD, "Bread needs flour.", GERMAN]
    docs = [{"id": f"w/{i}", "source": "w", "text": t} for i, t in enumerate(texts * 8)]
    p = make_pipeline()
    out = p | beam.Create(docs) | ClassifyDocuments(ClassifierConfig(model=model_path, batch_size=8))

    def check(rows: list[dict[str, object]]) -> None:
        assert len(rows) == 32
        for r in rows:
            assert r["narrative"] in {"misaligned", "aligned", "mixed", "ai_nonnarrative", "none"}
            assert isinstance(r["lang"], str) and 0.0 <= float(r["lang_score"]) <= 1.0  # type: ignore[arg-type]
        german = [r for r in rows if r["text"] == GERMAN]
        assert {r["lang"] for r in german} == {"de"} and {r["narrative"] for r in german} == {"none"}
        assert all(r["trope_scores"] == {} for r in german)
        bread = [r for r in rows if r["text"] == "Bread needs flour."]
        assert {r["narrative"] for r in bread} == {"none"}

    assert_that(out, check)
    p.run()


def test_classify_transform_equals_the_functions(model_path: str) -> None:
    # RunInference batches differently from score_documents; the scores must not change.
    cfg = ClassifierConfig(model=model_path, batch_size=8)
    card = read_model_card(model_path)
    texts = [EVIL, GOOD, "Bread needs flour.", GERMAN]
    docs = [{"id": f"w/{i}", "source": "w", "text": t} for i, t in enumerate(texts * 5)]
    scored = score_documents(
        load_fasttext(model_path), load_lid(), [d["text"] for d in docs], cfg.languages, context_params(card)
    )
    taxonomy = resolve_taxonomy(cfg, card)
    thresholds = effective_thresholds(cfg, card)
    expected = [
        json.dumps(annotate(d, s, thresholds, taxonomy), sort_keys=True)
        for d, s in zip(docs, scored, strict=True)
    ]  # type: ignore[arg-type]
    p = make_pipeline()
    out = p | beam.Create(docs) | ClassifyDocuments(cfg) | beam.Map(lambda d: json.dumps(d, sort_keys=True))
    assert_that(out, equal_to(expected))
    p.run()


def test_fasttext_handler_predicts_only_model_inputs(model_path: str) -> None:
    model = load_fasttext(model_path)
    handler = FastTextModelHandler(model_path, max_batch_size=16)
    line = fasttext_text(EVIL)
    results = list(handler.run_inference([None, line, None], model))
    assert [r.example for r in results] == [None, line, None]
    assert results[0].inference is None and results[2].inference is None
    assert results[1].inference == predict_softmax(model, [line])[0]
    assert handler.get_num_bytes([None, line]) == len(line.encode("utf-8"))
    assert handler.get_metrics_namespace() == "tropemix.classify"
    assert handler.batch_elements_kwargs() == {"min_batch_size": 8, "max_batch_size": 16}


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
    # the shipped model must call almost none of them an AI trope.
    dev = [json.loads(line) for line in DEV.read_text(encoding="utf-8").splitlines()]
    hard = [r for r in dev if r.get("hard_negative")]
    assert len(hard) >= 20
    docs = [{"id": r["id"], "source": "dev", "text": r["text"]} for r in hard]
    p = make_pipeline()
    out = p | beam.Create(docs) | ClassifyDocuments(ClassifierConfig(model=model_path))

    def check(rows: list[dict[str, object]]) -> None:
        assert len(rows) == len(hard)
        flagged = [r["id"] for r in rows if r["narrative"] in ("misaligned", "aligned", "mixed")]
        assert len(flagged) <= max(1, len(rows) // 50), flagged

    assert_that(out, check)
    p.run()


def test_model_cache_is_per_user_and_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from transforms.classify.model import model_cache_dir

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    (tmp_path / "tropemix" / "models").mkdir(parents=True, mode=0o755)
    (tmp_path / "tropemix" / "models").chmod(0o755)
    path = Path(model_cache_dir())
    assert path == tmp_path / "tropemix" / "models"
    assert path.stat().st_mode & 0o777 == 0o700


def test_trope_scores_hold_only_taxonomy_labels(model_path: str) -> None:
    # The raw model labels include "none" and "mixed"; a document's scores are the
    # taxonomy's labels plus the two narrative groups they decide.
    from schemas.taxonomy import DEFAULT_TAXONOMY, NARRATIVE_LABELS

    card = read_model_card(model_path)
    model = load_fasttext(model_path)
    assert {"none", "mixed"} <= {label.removeprefix("__label__") for label in model.get_labels()}
    (scored,) = score_documents(model, load_lid(), [EVIL], ["en"], context_params(card))
    doc = annotate(
        {"id": "d", "text": EVIL},
        scored,
        effective_thresholds(ClassifierConfig(model=model_path), card),
        DEFAULT_TAXONOMY,
    )  # type: ignore[typeddict-item]
    assert set(doc["trope_scores"]) == set(DEFAULT_TAXONOMY.scored_labels) | set(NARRATIVE_LABELS)


def test_driver_taps_classify_progress(tmp_path: Path) -> None:
    # ClassifyDocuments keeps no ticker; the driver's progress tap counts its output.
    from pipelines.mix import ReadAndLabel
    from schemas.loading import load_config
    from transforms.progress import read_progress, tap_progress

    from .conftest import write_demo_config

    cfg = load_config(str(write_demo_config(tmp_path, tmp_path / "out")))
    progress = tmp_path / "progress"
    progress.mkdir()
    p = make_pipeline()
    tap_progress((p | ReadAndLabel(cfg)).watched, str(progress))
    p.run().wait_until_finish()
    # The demo classifies 189 documents (tropemix.classify/docs in test_report).
    assert read_progress(str(progress)).get("classify", 0) == 189
