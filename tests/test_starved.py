"""An empty or starved source, or an empty mix, fails the plan with the source and the numbers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from pipelines.cli import main as cli_main
from schemas.config import BlendConfig, BlendSource
from transforms.blend.plan import compute_plan
from transforms.blend.plan_model import PlanError, ProfileRow

from .conftest import FN_API_RUNNER, REPO


def _cfg(shares: dict[str, float], **extra: object) -> BlendConfig:
    return BlendConfig(sources={n: BlendSource(share=s) for n, s in shares.items()}, **extra)  # type: ignore[arg-type]


def _profile(available: dict[str, int]) -> list[ProfileRow]:
    return [(name, "none", (), n, n) for name, n in available.items() if n]


def test_a_source_with_no_documents_fails_the_plan() -> None:
    with pytest.raises(PlanError, match=r"source 'junk' yields 0 documents .*--allow-empty-source"):
        compute_plan(_cfg({"web": 0.5, "junk": 0.5}), _profile({"web": 1000, "junk": 0}))


def test_an_empty_mix_fails_even_when_empty_sources_are_allowed() -> None:
    with pytest.raises(PlanError, match=r"the mix would be empty.*'web': 0 documents"):
        compute_plan(_cfg({"web": 1.0}, allow_empty_sources=True), _profile({"web": 0}))


def test_allowed_empty_source_leaves_the_mix_to_the_others() -> None:
    plan = compute_plan(_cfg({"web": 0.8, "junk": 0.2}, allow_empty_sources=True), _profile({"web": 1000}))
    assert plan.sources["web"].target == 1000
    assert plan.sources["junk"].target == 0


def test_a_scarce_source_that_samples_the_others_away_fails_naming_both() -> None:
    with pytest.raises(PlanError) as err:
        compute_plan(_cfg({"web": 0.5, "junk": 0.5}), _profile({"web": 1000, "junk": 2}))
    message = str(err.value)
    assert (
        "source 'web': planned 2 of 1000 available documents (0.20% < blend.min_source_fraction 5%)"
        in message
    )
    assert "because source 'junk' has only 2 documents for share 0.5" in message
    # Turned off, or with an explicit total, the user asked for it.
    assert compute_plan(
        _cfg({"web": 0.5, "junk": 0.5}, min_source_fraction=0.0), _profile({"web": 1000, "junk": 2})
    )


def test_run_with_an_all_garbage_source_exits_non_zero_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good, bad = tmp_path / "good.jsonl", tmp_path / "bad.jsonl"
    good.write_text("".join(json.dumps({"id": f"g{i}", "text": f"good page {i}"}) + "\n" for i in range(20)))
    bad.write_bytes(b"\x00\xff garbage\n{not json\n" * 5)
    config = {
        "sources": [
            {"name": "web", "inputs": [str(good)], "classify": False, "dedup": False},
            {"name": "junk", "inputs": [str(bad)], "classify": False, "dedup": False},
        ],
        "classifier": {"model": str(REPO / "models" / "tropes-v1.ftz")},
        "blend": {"sources": {"web": {"share": 0.5}, "junk": {"share": 0.5}}, "num_shards": 1},
        "output": {"path": str(tmp_path / "out")},
    }
    path = tmp_path / "mix.yaml"
    path.write_text(yaml.safe_dump(config))
    assert cli_main(["run", str(path), "--", f"--runner={FN_API_RUNNER}"]) == 3
    err = capsys.readouterr().err
    # One line (besides the log lines), naming the source.
    assert [line for line in err.splitlines() if " stage=" not in line] == [
        "blend plan cannot be met: source 'junk' yields 0 documents after read, policy and dedup; "
        "check its inputs and dead letters, or pass --allow-empty-source"
    ]
    assert not (tmp_path / "out").exists()
