"""Shared fixtures: paths, the in-process runner, and the shipped model."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"
MODEL = REPO / "models" / "tropes-v1.ftz"
DEMO_CONFIG = REPO / "examples" / "demo.yaml"
FN_API_RUNNER = "apache_beam.runners.portability.fn_api_runner.FnApiRunner"


def write_demo_config(directory: Path, out: Path, data: dict[str, Any] | None = None) -> Path:
    """Writes ``data`` (default: the demo config) into ``directory`` with absolute paths and ``out`` as output.

    The demo config's relative paths are relative to examples/, so a copy elsewhere
    needs them made absolute.
    """
    data = copy.deepcopy(data if data is not None else yaml.safe_load(DEMO_CONFIG.read_text()))
    base = DEMO_CONFIG.parent
    for s in data["sources"]:
        s["inputs"] = [str(base / p) for p in s["inputs"]]
    data["classifier"]["model"] = str(base / data["classifier"]["model"])
    data["output"]["path"] = str(out)
    path = directory / "demo.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def make_pipeline(*extra: str) -> TestPipeline:
    """A TestPipeline on the in-process runner (the DirectRunner would try to fetch Prism)."""
    options = PipelineOptions([f"--runner={FN_API_RUNNER}", *extra])
    return TestPipeline(runner=FN_API_RUNNER, options=options, blocking=True)


@pytest.fixture
def pipeline() -> TestPipeline:
    return make_pipeline()


@pytest.fixture(scope="session")
def model_path() -> str:
    assert MODEL.exists(), "models/tropes-v1.ftz is missing; rebuild it with `make model`"
    return str(MODEL)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.exists():
        pytest.skip(f"{SHARED_DATA} is not present")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def _no_ambient_gcs(monkeypatch: pytest.MonkeyPatch) -> None:
    # Tests never talk to real Google Cloud; only the emulator fixture sets this.
    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
    os.environ.setdefault("GOOGLE_CLOUD_PROJECT", "tropemix-test")


@pytest.fixture(scope="session")
def bpe_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A small byte-level BPE ``tokenizer.json`` trained here on the demo stories and constitution.

    Nothing can be downloaded, so tests train their own real BPE (deterministic, ~1 s).
    """
    import json

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    demo = REPO / "examples" / "demo"
    texts = [p.read_text(encoding="utf-8") for p in sorted((demo / "constitution").glob("*.md"))]
    texts += [
        json.loads(line)["text"] for line in (demo / "stories" / "stories.jsonl").read_text().splitlines()
    ]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=2000, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tok.train_from_iterator(texts, trainer)
    path = tmp_path_factory.mktemp("tokenizer") / "tokenizer.json"
    tok.save(str(path))
    return str(path)
