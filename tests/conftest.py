"""Shared fixtures: paths, the in-process runner, and the shipped model."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"
MODEL = REPO / "models" / "tropes-v0.ftz"
DEMO_CONFIG = REPO / "examples" / "demo.yaml"
FN_API_RUNNER = "apache_beam.runners.portability.fn_api_runner.FnApiRunner"


def make_pipeline(*extra: str) -> TestPipeline:
    """A TestPipeline on the in-process runner (the DirectRunner would try to fetch Prism)."""
    options = PipelineOptions([f"--runner={FN_API_RUNNER}", *extra])
    return TestPipeline(runner=FN_API_RUNNER, options=options, blocking=True)


@pytest.fixture
def pipeline() -> TestPipeline:
    return make_pipeline()


@pytest.fixture(scope="session")
def model_path() -> str:
    assert MODEL.exists(), "models/tropes-v0.ftz is missing; rebuild it with `make model`"
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
