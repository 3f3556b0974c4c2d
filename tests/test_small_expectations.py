"""--version, Beam flags in run --help, and progress through blend and write."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipelines.cli import main as cli_main
from pipelines.mix import BuildMix
from schemas.loading import load_config
from transforms.progress import format_progress, read_progress, tap_progress

from .conftest import make_pipeline
from .test_publication import tiny_config


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        cli_main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.startswith("tropemix ")


def test_run_help_shows_beam_flags_after_double_dash(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli_main(["run", "--help"])
    out = capsys.readouterr().out
    assert "Beam pipeline options go after `--`" in out
    assert "tropemix run mix.yaml -- --direct_num_workers=2" in out


def test_progress_counts_blend_and_write(tmp_path: Path) -> None:
    progress = tmp_path / "progress"
    progress.mkdir()
    cfg = load_config(str(tiny_config(tmp_path, tmp_path / "out", num_shards=2, records=30)))
    with make_pipeline() as p:
        tap_progress((p | BuildMix(cfg)).watched, str(progress))
    counts = read_progress(str(progress))
    assert counts["read"] == 30 and counts["dedup"] == 30
    # Near-duplicate pages leave fewer copies for blend and write, counted to the last one.
    rows = json.loads((tmp_path / "out" / "manifest.json").read_text())["shards"]
    written = sum(s["rows"] for s in rows)
    assert 0 < written == counts["blend"] == counts["write"]
    assert f"blend {written} | write {written}" in format_progress(counts, 1.0, "write", 1.0)
