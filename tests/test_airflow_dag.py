"""The Airflow DAGs load in a real Airflow DagBag with zero import errors.

Airflow lives in its own virtualenv (its pins are not tropemix's), created on first
use under ~/.cache/tropemix with the committed constraints and then reused.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import REPO

AIRFLOW_DIR = REPO / "deploy" / "schedulers" / "airflow"
VENV = Path(os.environ.get("TROPEMIX_AIRFLOW_VENV", Path.home() / ".cache" / "tropemix" / "airflow-3.3.2"))
LOAD = """
import json, sys
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=sys.argv[1])
print(json.dumps({
    "errors": {k: str(v) for k, v in bag.import_errors.items()},
    "dags": {d: sorted(t.task_id for t in bag.dags[d].tasks) for d in bag.dag_ids},
    "operators": {d: sorted(type(t).__name__ for t in bag.dags[d].tasks) for d in bag.dag_ids},
}))
"""


@pytest.fixture(scope="module")
def airflow_python() -> Path:
    python = VENV / "bin" / "python"
    VENV.parent.mkdir(parents=True, exist_ok=True)
    # Concurrent test runs on one machine share the venv: check and build it under an
    # exclusive lock, and judge it by importing what the DAGs need, not by a marker that
    # an interrupted install could leave behind.
    with open(f"{VENV}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not _usable(python):
            _build_venv(python)
    return python


def _usable(python: Path) -> bool:
    probe = "import airflow.providers.apache.beam, airflow.providers.google, airflow.dag_processing.dagbag"
    return python.exists() and subprocess.run([str(python), "-c", probe], capture_output=True).returncode == 0


def _build_venv(python: Path) -> None:
    """A fresh virtualenv with Airflow and the two providers, resolved from the constraints."""
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True)
    subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "-q",
            "-r",
            str(AIRFLOW_DIR / "requirements.txt"),
            "-c",
            str(AIRFLOW_DIR / "constraints.txt"),
        ],
        check=True,
        timeout=40 * 60,
    )


def test_dags_load_without_import_errors(airflow_python: Path, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(tmp_path),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "True",
    }
    done = subprocess.run(
        [str(airflow_python), "-c", LOAD, str(AIRFLOW_DIR)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["errors"] == {}
    assert result["dags"] == {"tropemix_dataflow": ["build_mix"], "tropemix_flink": ["build_mix"]}
    assert result["operators"] == {
        "tropemix_dataflow": ["DataflowStartFlexTemplateOperator"],
        "tropemix_flink": ["BeamRunPythonPipelineOperator"],
    }
