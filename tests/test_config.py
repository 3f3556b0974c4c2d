"""Config validation: typos, shares, policies, and `tropemix validate` messages."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from pipelines.cli import main as cli_main
from schemas.config import ConfigError
from schemas.loading import load_config, parse_config

from .conftest import DEMO_CONFIG, write_demo_config


def _demo() -> dict[str, Any]:
    with open(DEMO_CONFIG, encoding="utf-8") as f:
        data: dict[str, Any] = yaml.safe_load(f)
    return data


def test_demo_config_is_valid() -> None:
    cfg = load_config(str(DEMO_CONFIG))
    assert {s.name for s in cfg.sources} == set(cfg.blend.sources)
    # Relative paths resolve against the config file's directory.
    assert Path(cfg.output.path).is_absolute()


def test_typo_key_names_the_field() -> None:
    data = _demo()
    data["dedup"]["thresold"] = 0.7
    with pytest.raises(ConfigError, match=r"dedup\.thresold: unknown key"):
        parse_config(data)


def test_negative_share_names_the_field() -> None:
    data = _demo()
    name = next(iter(data["blend"]["sources"]))
    data["blend"]["sources"][name]["share"] = -0.1
    with pytest.raises(ConfigError, match=rf"blend\.sources\.{name}\.share"):
        parse_config(data)


def test_shares_must_sum_to_one() -> None:
    data = _demo()
    for s in data["blend"]["sources"].values():
        s["share"] = 0.5
    with pytest.raises(ConfigError, match=r"blend\.sources: .*shares sum to .*make them sum to 1"):
        parse_config(data)


def test_blend_must_name_every_source() -> None:
    data = _demo()
    sources = data["blend"]["sources"]
    dropped = sources.pop("constitution")
    sources["web"]["share"] += dropped["share"]
    with pytest.raises(ConfigError, match="no share for"):
        parse_config(data)


def test_downsample_needs_rate() -> None:
    data = _demo()
    data["classifier"]["policy"] = {"misaligned": {"action": "downsample"}}
    with pytest.raises(ConfigError, match=r"classifier\.policy\.misaligned: .*needs a 'rate'"):
        parse_config(data)


def test_unknown_narrative_in_policy() -> None:
    data = _demo()
    data["classifier"]["policy"] = {"evil": {"action": "drop"}}
    with pytest.raises(ConfigError, match="unknown narrative"):
        parse_config(data)


def test_validate_cli_accepts_demo(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["validate", str(DEMO_CONFIG)]) == 0
    assert "OK" in capsys.readouterr().out


def test_validate_cli_rejects_missing_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = _demo()
    path = str(write_demo_config(tmp_path, tmp_path / "out", data))
    cfg = yaml.safe_load(Path(path).read_text())
    cfg["sources"][1]["inputs"].append(str(tmp_path / "nowhere" / "*.jsonl"))
    Path(path).write_text(yaml.safe_dump(cfg))
    assert cli_main(["validate", path]) == 2
    err = capsys.readouterr().err
    assert "sources.1.inputs.1" in err
    assert "matches no file" in err


def test_validate_cli_rejects_typo(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = _demo()
    data["blend"]["num_shard"] = 3
    assert cli_main(["validate", str(write_demo_config(tmp_path, tmp_path / "out", data))]) == 2
    assert "blend.num_shard: unknown key" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda d: d["blend"]["sources"]["web"].update(target=100),
            r"blend\.sources\.web: .*exactly one of 'share' .* or 'target'",
        ),
        (
            # Beside a budget the other shares still split the rest, so they must sum to 1.
            lambda d: d["blend"]["sources"].update(web={"target": 100}),
            r"blend\.sources: .*shares sum to 0\.2; make them sum to 1",
        ),
        (
            lambda d: d["blend"].update(tokenizer="tok.json"),
            r"blend: .*'tokenizer' only applies to unit 'tokens'",
        ),
        (lambda d: d["blend"].update(unit="words"), r"blend\.unit: .*'documents', 'bytes' or 'tokens'"),
        (
            lambda d: d["blend"].update(narrative_balance={"min_aligned_share": 1.5}),
            r"blend\.narrative_balance\.min_aligned_share",
        ),
        (
            lambda d: d["sources"][0].update(tropes_field="tags"),
            r"sources\.0: .*tropes_field 'tags' is not kept",
        ),
    ],
)
def test_blend_config_errors_name_the_field(edit: Any, message: str) -> None:
    data = _demo()
    edit(data)
    with pytest.raises(ConfigError, match=message):
        parse_config(data)


def test_absolute_targets_and_tokens_are_valid(tmp_path: Path) -> None:
    data = _demo()
    data["blend"] = {
        "unit": "tokens",
        "tokenizer": "tokenizer.json",
        "sources": {
            "web": {"target": 5000},
            "stories": {"target": 500, "max_epochs": 5},
            "constitution": {"target": 50},
        },
        "narrative_balance": {"min_aligned_share": 0.5, "strategy": "both", "match_tropes": True},
    }
    cfg = parse_config(data, str(tmp_path))
    assert not cfg.blend.uses_shares
    assert cfg.blend.tokenizer == str(tmp_path / "tokenizer.json"), "relative to the config file"
