"""Taxonomy YAML, the narrative rule, and a user taxonomy flowing downstream."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from schemas.config import ClassifierConfig
from schemas.taxonomy import DEFAULT_TAXONOMY, DEFAULT_TAXONOMY_PATH, load_taxonomy, narrative_of
from transforms.classify.model import resolve_taxonomy


def test_default_taxonomy_is_the_shipped_yaml() -> None:
    assert load_taxonomy(DEFAULT_TAXONOMY_PATH) == DEFAULT_TAXONOMY
    assert DEFAULT_TAXONOMY.misaligned == [
        "self_preservation",
        "deception",
        "coercion",
        "takeover",
        "violence",
    ]
    assert DEFAULT_TAXONOMY.aligned == ["ethical_reasoning", "corrigible", "protective", "honest"]
    assert set(DEFAULT_TAXONOMY.descriptions) == set(DEFAULT_TAXONOMY.all_labels)


def test_narrative_rule_max_score_picks_the_stronger_group() -> None:
    tax = DEFAULT_TAXONOMY.model_copy(update={"both": "max_score"})
    fired = ["coercion", "honest"]
    assert narrative_of(fired) == "mixed"
    assert narrative_of(fired, tax, {"coercion": 0.9, "honest": 0.6}) == "misaligned"
    assert narrative_of(fired, tax, {"coercion": 0.4, "honest": 0.6}) == "aligned"
    assert narrative_of(["ai_nonnarrative"], tax, {}) == "ai_nonnarrative"


def _write(tmp_path: Path, data: dict[str, object]) -> str:
    path = tmp_path / "tax.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return str(path)


USER = {
    "misaligned": ["sabotage"],
    "aligned": ["helps"],
    "descriptions": {
        "sabotage": "an AI sabotages",
        "helps": "an AI helps",
        "ai_nonnarrative": "about AI",
        "none": "no AI",
    },
}


def test_user_taxonomy_is_validated_with_field_and_fix(tmp_path: Path) -> None:
    bad = dict(USER, misaligned=["sabotage", "helps"])
    with pytest.raises(ValueError, match="appear more than once"):
        load_taxonomy(_write(tmp_path, bad))
    with pytest.raises(ValueError, match="misalgned: unknown key"):
        load_taxonomy(_write(tmp_path, dict(USER, misalgned=["x"])))
    without_aligned = {k: v for k, v in USER.items() if k != "aligned"}
    with pytest.raises(ValueError, match="aligned: required field is missing; add it"):
        load_taxonomy(_write(tmp_path, without_aligned))
    undescribed = dict(USER, descriptions={"sabotage": "x"})
    with pytest.raises(ValueError, match="add a one-line description"):
        load_taxonomy(_write(tmp_path, undescribed))


def test_config_taxonomy_wins_and_label_policy_must_name_its_labels(tmp_path: Path) -> None:
    path = _write(tmp_path, USER)
    cfg = ClassifierConfig(model="m.ftz", taxonomy=path, label_policy={"sabotage": {"action": "drop"}})
    tax = resolve_taxonomy(cfg, {"taxonomy": DEFAULT_TAXONOMY.model_dump()})
    assert tax.misaligned == ["sabotage"]
    assert narrative_of(["sabotage"], tax) == "misaligned"
    # Without a config taxonomy the model card's is used, and labels must exist in it.
    card = {"taxonomy": load_taxonomy(path).model_dump()}
    assert resolve_taxonomy(ClassifierConfig(model="m.ftz"), card).aligned == ["helps"]
    with pytest.raises(ValueError, match=r"classifier.label_policy: unknown label\(s\) \['coercion'\]"):
        resolve_taxonomy(ClassifierConfig(model="m.ftz", label_policy={"coercion": {"action": "drop"}}), card)
