"""A document cut at read.max_doc_bytes is counted and its ledger row names the original length."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import yaml

from pipelines.run import run
from schemas.loading import load_config

from .conftest import FN_API_RUNNER, REPO


def test_truncation_is_counted_and_in_the_ledger(tmp_path: Path) -> None:
    src = tmp_path / "pages.jsonl"
    rows = [{"id": f"p{i}", "text": f"short page {i}"} for i in range(4)]
    rows.append({"id": "big", "text": "long text " * 500})
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = {
        "sources": [{"name": "web", "inputs": [str(src)], "classify": False}],
        "read": {"max_doc_bytes": 1000, "oversize": "truncate"},
        "classifier": {"model": str(REPO / "models" / "tropes-v1.ftz")},
        "blend": {"sources": {"web": {"share": 1.0}}, "num_shards": 1},
        "output": {"path": str(tmp_path / "out")},
    }
    path = tmp_path / "mix.yaml"
    path.write_text(yaml.safe_dump(config))
    report = run(load_config(str(path)), [f"--runner={FN_API_RUNNER}"])
    assert report is not None
    assert report["metrics"]["counters"]["tropemix.read/truncated"] == 1
    assert report["metrics"]["counters"]["tropemix.read/truncated.web"] == 1
    ledger = pq.read_table(tmp_path / "out" / "ledger" / "ledger-00000-of-00001.parquet").to_pylist()
    details = {r["id"]: (r["fate"], r["detail"]) for r in ledger}
    assert details["web/big"] == ("written", "truncated_from=5000")
    assert {details[f"web/p{i}"] for i in range(4)} == {("written", "")}
    shard = pq.read_table(tmp_path / "out" / "shards" / "mix-00000-of-00001.parquet").to_pylist()
    assert [len(r["text"]) for r in shard if r["id"] == "web/big"] == [1000]
