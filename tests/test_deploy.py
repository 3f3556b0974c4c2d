"""Deployment material: Flex Template metadata, an offline Dataflow job graph, scheduler manifests."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from apache_beam.options.pipeline_options import PipelineOptions

from pipelines.run import main
from pipelines.runner import MixOptions

from .conftest import REPO

METADATA = REPO / "deploy" / "dataflow" / "metadata.json"
GS_CONFIG = {
    "run_name": "dry",
    "sources": [
        {"name": "web", "role": "web", "inputs": ["gs://in-bucket/web/*.jsonl.gz"]},
        {
            "name": "rules",
            "role": "constitution",
            "inputs": ["gs://in-bucket/rules/*.md"],
            "format": "text",
            "classify": False,
        },
    ],
    "classifier": {"model": "gs://model-bucket/tropes-v1.ftz"},
    "blend": {"sources": {"web": {"share": 0.95}, "rules": {"share": 0.05, "max_epochs": 10}}},
    "output": {"path": "gs://out-bucket/mix"},
}


def _metadata() -> dict[str, object]:
    data: dict[str, object] = json.loads(METADATA.read_text())
    return data


def test_every_template_parameter_is_a_pipeline_option() -> None:
    params = _metadata()["parameters"]
    assert isinstance(params, list) and params
    known = set(PipelineOptions([]).view_as(MixOptions).get_all_options(retain_unknown_options=False))
    for param in params:
        assert param["name"] in known, f"{param['name']} is not a pipeline option"
        assert param["helpText"] and param["label"]
        assert param["regexes"], param["name"]
        # The option round-trips through Beam's parser under the same name.
        value = "gs://b/c.yaml" if param["name"] == "config" else "nightly-01"
        parsed = PipelineOptions([f"--{param['name']}={value}"]).view_as(MixOptions)
        assert getattr(parsed, param["name"]) == value


@pytest.mark.parametrize(
    ("name", "good", "bad"),
    [
        (
            "config",
            ["gs://my-bucket/configs/mix.yaml", "gs://b-1.x/a/b.yml"],
            ["/local/mix.yaml", "gs://B/x.yaml", "gs://bucket/x.json"],
        ),
        ("run_id", ["2026-11-23T06-00", "nightly_1"], ["has space", "a/b", ""]),
    ],
)
def test_parameter_regexes(name: str, good: list[str], bad: list[str]) -> None:
    param = next(p for p in _metadata()["parameters"] if p["name"] == name)  # type: ignore[attr-defined]
    patterns = [re.compile(r) for r in param["regexes"]]
    for value in good:
        assert all(p.fullmatch(value) for p in patterns), value
    for value in bad:
        assert not all(p.fullmatch(value) for p in patterns), value


def test_dataflow_job_graph_builds_offline(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "gs-config.yaml"
    config.write_text(yaml.safe_dump(GS_CONFIG))
    code = main(
        [
            f"--config={config}",
            "--runner=DataflowRunner",
            "--dry_run=True",  # literally True: "--dry_run=False" would be a truthy string
            "--project=tropemix-test",
            "--region=us-central1",
            "--temp_location=gs://tmp-bucket/tmp",
            "--staging_location=gs://tmp-bucket/staging",
        ]
    )
    assert code == 0
    assert "job graph built" in capsys.readouterr().out


SCHEDULERS = REPO / "deploy" / "schedulers"
CRON = re.compile(r"^(\S+\s+){4}\S+$")


def test_kubernetes_cronjob_manifest() -> None:
    docs = list(yaml.safe_load_all((SCHEDULERS / "kubernetes" / "cronjob.yaml").read_text()))
    kinds = {d["kind"]: d for d in docs}
    assert set(kinds) == {"ConfigMap", "CronJob"}
    cron = kinds["CronJob"]
    assert cron["apiVersion"] == "batch/v1"
    spec = cron["spec"]
    assert CRON.match(spec["schedule"])
    assert spec["concurrencyPolicy"] == "Forbid"
    pod = spec["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["restartPolicy"] in {"Never", "OnFailure"}
    (container,) = pod["containers"]
    assert container["command"] == ["python", "-m", "pipelines.run"]
    args = dict(a.lstrip("-").split("=", 1) for a in container["args"])
    assert args["environment_type"] == "EXTERNAL"
    mount = container["volumeMounts"][0]["mountPath"]
    config_map = kinds["ConfigMap"]
    assert pod["volumes"][0]["configMap"]["name"] == config_map["metadata"]["name"]
    # The mounted config is a valid tropemix config and the container points at it.
    ((name, body),) = config_map["data"].items()
    assert args["config"] == f"{mount}/{name}"
    from schemas.loading import parse_config

    parse_config(yaml.safe_load(body))
    # Every flag is a pipeline option Beam knows (no typos reach the cluster).
    options = PipelineOptions(container["args"]).get_all_options(retain_unknown_options=False)
    assert all(k in options for k in args)


def test_cloud_scheduler_launch_body() -> None:
    body = json.loads((SCHEDULERS / "cloud-scheduler" / "launch-body.json").read_text())
    launch = body["launchParameter"]
    assert launch["containerSpecGcsPath"].startswith("gs://")
    params = {p["name"]: p for p in _metadata()["parameters"]}  # type: ignore[attr-defined]
    assert set(launch["parameters"]) <= set(params)
    for name, value in launch["parameters"].items():
        assert any(re.fullmatch(r, value) for r in params[name]["regexes"]), name
    assert not [p for p, spec in params.items() if not spec["isOptional"] and p not in launch["parameters"]]
