"""Narrative balance end to end: a web corpus that is mostly misaligned, balanced by the plan."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipelines.cli import main as cli_main
from pipelines.run import run
from schemas.loading import load_config
from schemas.taxonomy import DEFAULT_TAXONOMY

from .conftest import FN_API_RUNNER, REPO

MIN_ALIGNED = 0.7


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Web text: every misaligned seed example plus a few texts without AI; stories tagged in metadata.

    Both sources carry their trope tags, so the corpus is mostly misaligned by construction,
    whatever the shipped classifier makes of it (the classifier has tests of its own).
    """
    tmp = tmp_path_factory.mktemp("balance")
    web = []
    for line in (REPO / "data" / "seed" / "tropes_seed.jsonl").read_text().splitlines():
        rec = json.loads(line)
        mis = [label for label in rec["labels"] if label in DEFAULT_TAXONOMY.misaligned]
        if (mis and not set(rec["labels"]) & set(DEFAULT_TAXONOMY.aligned)) or (
            not rec["labels"] and len(web) % 4 == 0
        ):
            web.append({"id": rec["id"], "text": rec["text"], "tropes": rec["labels"]})
    (tmp / "web.jsonl").write_text("".join(json.dumps(r) + "\n" for r in web))
    data = {
        "run_name": "balance",
        "sources": [
            {
                "name": "web",
                "role": "web",
                "inputs": [str(tmp / "web.jsonl")],
                "fields": {"metadata": ["tropes"]},
                "tropes_field": "tropes",
            },
            {
                "name": "stories",
                "role": "synthetic_story",
                "inputs": [str(REPO / "examples" / "demo" / "stories" / "stories.jsonl")],
                "fields": {"metadata": ["title", "tropes"]},
                "tropes_field": "tropes",
            },
        ],
        "classifier": {"model": str(REPO / "models" / "tropes-v1.ftz")},
        "dedup": {"threshold": 0.9},
        "blend": {
            "unit": "documents",
            "sources": {"web": {"share": 0.9}, "stories": {"share": 0.1, "max_epochs": 4}},
            "shard_size": 100,
            "seed": 5,
            "narrative_balance": {"min_aligned_share": MIN_ALIGNED, "strategy": "both", "match_tropes": True},
        },
        "output": {"path": str(tmp / "out")},
    }
    path = tmp / "balance.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="module")
def planned(config: Path) -> tuple[str, dict[str, Any]]:
    import contextlib
    import io

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert cli_main(["plan", str(config), "--", f"--runner={FN_API_RUNNER}"]) == 0
    out = Path(load_config(str(config)).output.path)
    return printed.getvalue(), json.loads((out / "plan.json").read_text())


def test_plan_says_how_the_balance_is_met(planned: tuple[str, dict[str, Any]], config: Path) -> None:
    printed, plan = planned
    out = Path(load_config(str(config)).output.path)
    assert not (out / "shards").exists(), "plan writes no shards"
    nb = plan["narrative_balance"]
    assert nb["before"]["aligned_share"] < 0.2, "the web part is mostly misaligned"
    assert nb["planned"]["aligned_share"] >= MIN_ALIGNED
    # Stories hit their max_epochs first, then misaligned web text is downsampled.
    assert plan["sources"]["stories"]["epochs"] == pytest.approx(4, abs=0.01)
    assert any(a.startswith("added") for a in nb["actions"])
    assert any(a.startswith("took") and "misaligned" in a for a in nb["actions"])
    assert "narrative balance (aligned / (aligned + misaligned) >= 0.7, strategy both)" in printed
    for action in nb["actions"]:
        assert action in printed
    # Trope-matched: every misaligned web trope is listed against its counter-stories.
    assert set(plan["trope_matching"]) >= {"deception", "coercion"}
    assert "trope deception: web misaligned" in printed


def test_run_realizes_the_plan(planned: tuple[str, dict[str, Any]], config: Path) -> None:
    _, plan = planned
    cfg = load_config(str(config))
    report = run(cfg, [f"--runner={FN_API_RUNNER}"])
    out = Path(cfg.output.path)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["plan"] == plan, "run executes the same plan that `tropemix plan` printed"
    assert report["realized_narratives"]["aligned_share"] >= MIN_ALIGNED
    # shard_size 100 documents: the plan sets the shard count from its total.
    assert plan["num_shards"] == -(-plan["total"] // 100)
    assert sorted(p.name for p in (out / "shards").iterdir()) == [
        f"mix-{i:05d}-of-{plan['num_shards']:05d}.parquet" for i in range(plan["num_shards"])
    ]
    for name, p in plan["sources"].items():
        assert report["realized"][name]["realized"] == p["target"], name
        assert report["realized"][name]["per_shard"] == p["shard_targets"], name
    stories = [s["by_source"].get("stories", 0) for s in manifest["shards"]]
    assert sum(stories) == plan["sources"]["stories"]["target"]
    for shard in manifest["shards"]:
        assert set(shard) >= {"by_source", "by_narrative", "units_by_source", "bytes", "sha256"}


def test_unmeetable_balance_fails_before_writing(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = yaml.safe_load(config.read_text())
    data["blend"]["narrative_balance"] = {"min_aligned_share": 0.9, "strategy": "add_stories"}
    data["output"]["path"] = str(tmp_path / "out")
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(data))
    assert cli_main(["run", str(path), "--", f"--runner={FN_API_RUNNER}"]) == 3
    err = capsys.readouterr().err
    assert "narrative balance cannot be met" in err
    assert "need 0.9000" in err
    assert not list((tmp_path / "out").rglob("*.parquet")), "nothing written"
    assert not (tmp_path / "out" / "dead_letter").exists()
