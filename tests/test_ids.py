"""Duplicate ids within a source: error (one line), rekey, keep-first with a ledger row."""

from __future__ import annotations

import json
from pathlib import Path

import apache_beam as beam
import pyarrow.parquet as pq
import pytest
import yaml
from apache_beam.testing.util import assert_that, equal_to

from pipelines.cli import main as cli_main
from transforms.io.ids import UniqueIds

from .conftest import FN_API_RUNNER, REPO, make_pipeline


def _doc(doc_id: str, path: str, offset: int) -> dict[str, object]:
    return {"id": doc_id, "source": "web", "text": "t", "src_path": path, "src_offset": offset, "meta": {}}


DOCS = [_doc("web/a", "/in/b.jsonl", 0), _doc("web/a", "/in/a.jsonl", 40), _doc("web/b", "/in/a.jsonl", 0)]


def test_rekey_makes_repeated_ids_unique_by_position() -> None:
    with make_pipeline() as p:
        out = p | beam.Create(DOCS) | UniqueIds("web", "rekey")
        assert_that(
            out.kept | "Ids" >> beam.Map(lambda d: d["id"]),
            equal_to(["web/a@b.jsonl@0", "web/a@a.jsonl@40", "web/b"]),
            label="ids",
        )
        assert_that(out.dropped, equal_to([]), label="dropped")


def test_keep_first_sends_the_rest_to_the_ledger() -> None:
    with make_pipeline() as p:
        out = p | beam.Create(DOCS) | UniqueIds("web", "keep-first")
        assert_that(
            out.kept | "Kept" >> beam.Map(lambda d: (d["id"], d["src_path"])),
            equal_to([("web/a", "/in/a.jsonl"), ("web/b", "/in/a.jsonl")]),
            label="kept",
        )
        assert_that(
            out.dropped | "Rows" >> beam.Map(lambda r: (r["id"], r["stage"], r["reason"], r["detail"])),
            equal_to([("web/a", "read", "duplicate_id", "first_at=/in/a.jsonl@40")]),
            label="dropped",
        )


def _config(tmp_path: Path, policy: str | None) -> Path:
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text(
        "".join(json.dumps({"id": f"p{i}", "text": f"page {i} of the site"}) + "\n" for i in range(6))
    )
    b.write_text(json.dumps({"id": "p3", "text": "page 3 of the site"}) + "\n")
    source: dict[str, object] = {"name": "web", "inputs": [str(tmp_path / "*.jsonl")], "classify": False}
    if policy:
        source["duplicate_ids"] = policy
    config = {
        "sources": [source],
        "classifier": {"model": str(REPO / "models" / "tropes-v1.ftz")},
        "blend": {"sources": {"web": {"share": 1.0}}, "num_shards": 1},
        "output": {"path": str(tmp_path / "out")},
    }
    path = tmp_path / "mix.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_duplicate_id_fails_the_run_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["run", str(_config(tmp_path, None)), "--", f"--runner={FN_API_RUNNER}"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if " stage=" not in line]
    assert err == [
        f"error: duplicate id in source 'web': 'web/p3' occurs 2 times, first at {tmp_path}/a.jsonl@"
        f"{len(''.join(json.dumps({'id': f'p{i}', 'text': f'page {i} of the site'}) + chr(10) for i in range(3)))}"
        f", {tmp_path}/b.jsonl@0; fix the input or set the source's duplicate_ids to 'rekey' or 'keep-first'"
    ]
    assert not (tmp_path / "out").exists()


def test_keep_first_run_balances_with_a_duplicate_id_ledger_row(tmp_path: Path) -> None:
    assert cli_main(["run", str(_config(tmp_path, "keep-first")), "--", f"--runner={FN_API_RUNNER}"]) == 0
    ledger = pq.read_table(tmp_path / "out" / "ledger" / "ledger-00000-of-00001.parquet").to_pylist()
    dropped = [(r["id"], r["reason"]) for r in ledger if r["fate"] == "dropped"]
    assert dropped == [("web/p3", "duplicate_id")]
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["conservation"]["ok"]
    assert report["conservation"]["stages"]["ids"] == {"in": 7, "out": 6, "dropped": 1}
