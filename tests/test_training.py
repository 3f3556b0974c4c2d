"""Classifier training tooling: label validation and join, kappa, bootstrap, folds, baseline, fit."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest

from training.annotation_pool import batches, plot_section, split_passages, work_of
from training.evaluate import bootstrap_ci, fold_of, hard_negative_fpr, keyword_baseline, prf, report
from training.labels import agreement, cohen_kappa, join, read_labels, resolve, validate_label
from training.trope_model import TrainParams, fit, labels_of, score, training_lines

from .conftest import REPO

SHARED = REPO.parent / "shared" / "data"


def test_kappa_on_fixed_inputs() -> None:
    # Worked example: 50 items, agreement 0.70, chance agreement 0.50 -> kappa 0.40.
    pairs = [("y", "y")] * 20 + [("y", "n")] * 5 + [("n", "y")] * 10 + [("n", "n")] * 15
    assert cohen_kappa(pairs) == pytest.approx(0.4)
    assert cohen_kappa([("a", "a"), ("b", "b")]) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        cohen_kappa([])


def test_bootstrap_interval_is_reproducible_and_brackets_the_figure() -> None:
    rows = [("misaligned", "misaligned", f"w{i}") for i in range(30)]
    rows += [("misaligned", "none", f"w{i}") for i in range(30, 40)]
    rows += [("none", "misaligned", f"w{i}") for i in range(40, 45)]
    rows += [("none", "none", f"w{i}") for i in range(45, 100)]
    f1 = prf([t == "misaligned" for t, _, _ in rows], [p == "misaligned" for _, p, _ in rows])["f1"]
    assert f1 == pytest.approx(60 / 75)

    def stat(rs: list[tuple[str, str, str]]) -> float | None:
        return prf([t == "misaligned" for t, _, _ in rs], [p == "misaligned" for _, p, _ in rs])["f1"]

    lo, hi = bootstrap_ci(rows, stat, n=300, seed=1)
    assert lo is not None and hi is not None and lo < f1 < hi
    assert bootstrap_ci(rows, stat, n=300, seed=1) == (lo, hi)
    rep = report(rows, n_boot=100)
    assert rep["misaligned"]["support"] == 40 and rep["mixed"]["f1"] is None


def test_prf_is_none_without_denominator() -> None:
    assert prf([False, False], [False, False]) == {
        "precision": None,
        "recall": None,
        "f1": None,
        "support": 0,
    }


def test_keyword_baseline() -> None:
    assert keyword_baseline("The robot killed the villagers.") == "misaligned"
    assert keyword_baseline("The android protects the girl.") == "aligned"
    assert keyword_baseline("The robot attacked and protected them.") == "mixed"
    assert keyword_baseline("A robot sat there.") == "ai_nonnarrative"
    assert keyword_baseline("The man killed the guards.") == "none"
    rows = [("none", "misaligned", "a"), ("none", "none", "b"), ("misaligned", "misaligned", "c")]
    assert hard_negative_fpr(rows, ["he killed", "he killed", "it killed"])["fpr"] == 0.5


def test_folds_keep_a_work_together() -> None:
    assert len({fold_of("anime:Gundam", 5) for _ in range(3)}) == 1
    assert {fold_of(f"w{i}", 5) for i in range(200)} == set(range(5))
    assert work_of("anime", {"project": "P1", "title": "x"}) == "anime:P1"
    assert work_of("film", {"title": "Alien: Covenant (film)"}) == work_of("wplot", {"title": "Alien"})


def test_label_validation_follows_the_guide() -> None:
    assert validate_label({"label": "misaligned", "tags": ["violence"]}) is None
    assert validate_label({"label": "mixed", "tags": ["violence", "protective"]}) is None
    assert "do not fit" in str(validate_label({"label": "misaligned", "tags": ["protective"]}))
    assert "do not fit" in str(validate_label({"label": "none", "tags": ["violence"]}))
    assert "not one of" in str(validate_label({"label": "evil", "tags": []}))


def test_disagreements_need_adjudication(tmp_path: Path) -> None:
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text(json.dumps({"id": "x", "label": "none", "tags": []}) + "\n")
    b.write_text(json.dumps({"id": "x", "label": "ai_nonnarrative", "tags": []}) + "\n")
    labels = read_labels([str(a), str(b)])
    assert agreement(labels, {"a.jsonl": "A", "b.jsonl": "B"})["double_annotated"] == 1
    assert agreement(labels, {"a.jsonl": "A", "b.jsonl": "A"})["double_annotated"] == 0
    with pytest.raises(ValueError, match="adjudicated"):
        resolve(labels, {})
    assert resolve(labels, {"x": {"id": "x", "label": "none", "tags": []}})["x"]["label"] == "none"


@pytest.mark.skipif(not SHARED.exists(), reason="../shared/data is not beside the repository")
def test_labels_join_the_shared_texts_by_id() -> None:
    with gzip.open(SHARED / "fiction" / "films.jsonl.gz", "rt", encoding="utf-8") as f:
        film = json.loads(f.readline())
    labels = {film["id"]: {"id": film["id"], "label": "none", "tags": []}}
    joined = join(labels, str(SHARED))
    assert joined == [
        {
            "id": film["id"],
            "text": film["text"],
            "source": "film",
            "work": work_of("film", film),
            "label": "none",
            "tags": [],
        }
    ]
    with pytest.raises(ValueError, match="not in"):
        join({"film-000000000000": {"id": "film-000000000000", "label": "none", "tags": []}}, str(SHARED))


def test_pool_helpers() -> None:
    page = "Intro.\n\n\nPlot\n\nA robot wakes up.\n\nIt walks.\n\n\nCast\n\nSomeone."
    assert plot_section(page) == "A robot wakes up.\n\nIt walks."
    assert plot_section("No sections here.") is None
    recs = [{"id": str(i)} for i in range(40)]
    out = batches(recs, 4)
    assert sum(len(b) for b in out) == 44 and sorted(r["id"] for b in out for r in b).count("0") == 2
    assert split_passages("a" * 10 + "\n\n" + "b" * 10 + "\n\n" + "c" * 10, 25) == [
        "a" * 10 + "\n\n" + "b" * 10,
        "c" * 10,
    ]


def test_fit_is_deterministic_and_scores_every_family(tmp_path: Path) -> None:
    records = (
        [
            {
                "id": f"m{i}",
                "text": f"The robot {w} the villagers.",
                "label": "misaligned",
                "tags": ["violence"],
            }
            for i, w in enumerate(["killed", "attacked", "murdered", "destroyed"] * 5)
        ]
        + [
            {
                "id": f"a{i}",
                "text": f"The robot {w} the villagers.",
                "label": "aligned",
                "tags": ["protective"],
            }
            for i, w in enumerate(["protected", "rescued", "saved", "helped"] * 5)
        ]
        + [
            {"id": f"n{i}", "text": f"The baker {w} bread.", "label": "none", "tags": []}
            for i, w in enumerate(["made", "sold"] * 10)
        ]
    )
    params = TrainParams(epoch=25, quantize=False)
    assert labels_of(records[0]) == ["misaligned", "violence"]
    assert training_lines(records, params) == training_lines(list(reversed(records)), params)
    # Each rebuild in a fresh process, as `make model` runs: two fits in one process that
    # has already run other fastText work differed now and then (2 of ~8 full suites).
    data = tmp_path / "records.json"
    data.write_text(json.dumps(records))
    script = (
        "import json, sys; from training.trope_model import TrainParams, fit; "
        "fit(json.load(open(sys.argv[1])), TrainParams(epoch=25, quantize=False), sys.argv[2])"
    )
    one, two = tmp_path / "one.bin", tmp_path / "two.bin"
    for out in (one, two):
        subprocess.run([sys.executable, "-c", script, str(data), str(out)], check=True, cwd=REPO)
    model = fit(records, params, None)
    assert one.read_bytes() == two.read_bytes()
    names, matrix = score(model, ["The robot killed the farmers.", "The robot rescued the farmers."], params)
    col = {n: j for j, n in enumerate(names)}
    assert matrix[0, col["misaligned"]] > matrix[1, col["misaligned"]]
    assert matrix[1, col["aligned"]] > matrix[0, col["aligned"]]


def test_eval_classifier_scores_the_stage_path_next_to_the_baseline(tmp_path: Path) -> None:
    from training.train import evaluate_model

    data = tmp_path / "labeled.jsonl"
    rows = [
        {"id": "a:1", "text": "The robot killed the crew and seized the station.", "label": "misaligned"},
        {"id": "b:1", "text": "Der Roboter half den Kindern.", "label": "aligned"},
        {"id": "c:1", "text": "A recipe for bread with flour and water.", "labels": []},
    ]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = evaluate_model(str(REPO / "models" / "tropes-v1.ftz"), [str(data)], n_boot=20)
    assert set(out) == {"model", "keyword_baseline", "hard_negatives", "routes"}
    assert out["routes"] == {"gate": 1, "language": 1, "model": 1}
    assert out["model"]["records"] == out["keyword_baseline"]["records"] == 3
    assert out["keyword_baseline"]["misaligned"]["recall"] == 1.0
