"""Every CLI failure is a line or two naming what to fix, never a traceback, and nothing hangs."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from pipelines.cli import main as cli_main
from pipelines.cli import validate_inputs
from schemas.config import BlendConfig, BlendSource, ConfigError
from schemas.loading import load_config, parse_config
from transforms.blend.plan import compute_plan
from transforms.blend.plan_model import PlanError
from transforms.io.storage import EMULATOR_ENV, reset_credentials, use_emulator_credentials

from .conftest import FN_API_RUNNER, REPO

MODEL = str(REPO / "models" / "tropes-v1.ftz")


def _message(capsys: pytest.CaptureFixture[str]) -> list[str]:
    """stderr without the structured log lines."""
    return [line for line in capsys.readouterr().err.splitlines() if " stage=" not in line]


def _config(tmp_path: Path, **changes: object) -> dict[str, object]:
    src = tmp_path / "in" / "a.jsonl"
    src.parent.mkdir(exist_ok=True)
    src.write_text(json.dumps({"id": "a", "text": "a page"}) + "\n")
    config: dict[str, object] = {
        "sources": [{"name": "web", "inputs": [str(src)]}],
        "classifier": {"model": MODEL},
        "blend": {"sources": {"web": {"share": 1.0}}, "num_shards": 1},
        "output": {"path": str(tmp_path / "out")},
    }
    config.update(changes)
    return config


def _write(tmp_path: Path, config: dict[str, object]) -> str:
    path = tmp_path / "mix.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def test_non_utf8_config_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "latin1.yaml"
    text = yaml.safe_dump(_config(tmp_path, run_name="caf\xe9"), allow_unicode=True)
    path.write_bytes(text.encode("latin-1"))
    assert cli_main(["validate", str(path)]) == 2
    (line,) = _message(capsys)
    assert "is not UTF-8 text (byte 0xe9" in line and "save it as UTF-8" in line


def test_duplicate_yaml_keys_are_rejected(tmp_path: Path) -> None:
    path = tmp_path / "dupes.yaml"
    path.write_text(yaml.safe_dump(_config(tmp_path)) + "run_name: a\nrun_name: b\n")
    with pytest.raises(ConfigError, match=r"key 'run_name' appears twice .*keep one"):
        load_config(str(path))


def test_boolean_is_not_a_shard_count(tmp_path: Path) -> None:
    config = _config(tmp_path)
    config["blend"] = {"sources": {"web": {"share": 1.0}}, "num_shards": True}
    with pytest.raises(ConfigError, match=r"blend.num_shards: Value error, true is a boolean; give a number"):
        parse_config(config)


def test_more_shards_than_documents_fails_the_plan() -> None:
    cfg = BlendConfig(sources={"web": BlendSource(share=1.0)}, num_shards=100_000)
    with pytest.raises(PlanError, match=r"100000 shards for at most 147 documents .* at most 147"):
        compute_plan(cfg, [("web", "none", "", 147, 147)])


def test_directory_as_input_fails_validate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = _config(tmp_path)
    config["sources"] = [{"name": "web", "inputs": [str(tmp_path / "in")]}]
    assert cli_main(["validate", _write(tmp_path, config)]) == 2
    assert f"matches the directory '{tmp_path / 'in'}'; name its files" in capsys.readouterr().err


def test_classify_rejects_missing_model_and_empty_glob(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _config(tmp_path)
    base = ["classify", "--output", str(tmp_path / "cls")]
    assert cli_main([*base, "--input", str(tmp_path / "in" / "*.jsonl"), "--model", "nope.ftz"]) == 2
    assert _message(capsys) == [
        "--model: 'nope.ftz' is not a file; " + "train one with `tropemix "
        "train-classifier` or use the shipped models/tropes-v1.ftz"
    ]
    assert cli_main([*base, "--input", str(tmp_path / "none*.jsonl"), "--model", MODEL]) == 2
    assert _message(capsys) == [f"--input: '{tmp_path}/none*.jsonl' matches no file; fix the path or glob"]


def test_dedup_rejects_a_bad_previous_index_glob(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _config(tmp_path)
    args = ["dedup", "--input", str(tmp_path / "in" / "*.jsonl"), "--output", str(tmp_path / "dd")]
    assert cli_main([*args, "--previous-index", str(tmp_path / "old" / "*.parquet")]) == 2
    assert _message(capsys) == [
        f"--previous-index: '{tmp_path}/old/*.parquet' matches no file; fix the path or glob"
    ]


def test_typod_beam_flag_is_rejected_up_front(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = _write(tmp_path, _config(tmp_path))
    assert cli_main(["run", config, "--", f"--runner={FN_API_RUNNER}", "--direct_num_worker=2"]) == 2
    assert _message(capsys) == [
        "unknown Beam option --direct_num_worker=2 (did you mean --direct_num_workers?); "
        "fix the spelling (Beam options go after `--`)"
    ]
    assert not (tmp_path / "out").exists()


@pytest.fixture
def silent_gcs(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A Cloud Storage endpoint that accepts connections and never answers."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(16)
        monkeypatch.setenv(EMULATOR_ENV, f"http://127.0.0.1:{server.getsockname()[1]}")
        use_emulator_credentials()
        try:
            yield
        finally:
            reset_credentials()


def test_validate_gives_up_on_an_unreachable_store(tmp_path: Path, silent_gcs: None) -> None:
    config = _config(tmp_path)
    config["sources"] = [{"name": "web", "inputs": ["gs://bucket/in/*.jsonl"], "classify": False}]
    problems = validate_inputs(parse_config(config), timeout=0.5)
    assert problems == [
        "sources.0.inputs.0 (source 'web'): listing 'gs://bucket/in/*.jsonl': no answer within 0.5 s; "
        "check the network and credentials (e.g. `gcloud auth application-default login`)"
    ]
