"""Scheduled incremental runs: only new files are read, a rerun with nothing new is a no-op,
and a run that failed halfway can be started again safely."""

from __future__ import annotations

import glob
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

import transforms.dedup.deduplicate
from pipelines.incremental import InputFile, new_files, read_state, record_run
from pipelines.run import execute
from schemas.loading import parse_config

from .conftest import FN_API_RUNNER, MODEL, REPO

DEMO = REPO / "examples" / "demo"


def _config(inbox: Path, out: Path) -> Any:
    return parse_config(
        {
            "run_name": "nightly",
            "sources": [
                {
                    "name": "web",
                    "role": "web",
                    "inputs": [f"{inbox}/*.jsonl"],
                    "fields": {"metadata": ["url"]},
                },
                {
                    "name": "constitution",
                    "role": "constitution",
                    "inputs": [f"{DEMO}/constitution/*.md"],
                    "format": "text",
                    "classify": False,
                    "incremental": False,
                },
            ],
            "classifier": {"model": str(MODEL)},
            "blend": {
                "sources": {"web": {"share": 0.9}, "constitution": {"share": 0.1, "max_epochs": 10}},
                "num_shards": 2,
            },
            "output": {"path": str(out), "incremental": True},
        }
    )


def _split_demo(inbox: Path) -> list[Path]:
    lines = [ln for ln in (DEMO / "web" / "pages-000.jsonl").read_text().splitlines() if ln.strip()]
    # The last file repeats a page of the first under a new id: a later run must
    # recognise it against the first run's dedup index.
    repeat = json.dumps({"id": "late-repeat", "text": REPEATED, "url": "https://example.org/mirror"})
    first = json.dumps({"id": "early-original", "text": REPEATED, "url": "https://example.org/original"})
    parts = [[first, *lines[:29]], lines[29:59], [*lines[59:], repeat]]
    inbox.mkdir()
    paths = []
    for i, part in enumerate(parts):
        path = inbox / f"crawl-{i}.jsonl"
        path.write_text("\n".join(part) + "\n")
        paths.append(path)
    return paths


REPEATED = " ".join(
    f"The harbour market opens at dawn on day {i}, when fishing boats bring mackerel and crabs to the stalls."
    for i in range(12)
)


def _read_web(out: Path, run_id: str) -> int:
    report = json.loads((out / "runs" / run_id / "report.json").read_text())
    return int(report["conservation"]["sources"]["web"]["records_in"])


def test_new_files_by_size_and_mtime() -> None:
    state = record_run({}, "r1", [InputFile("a", 10, 1.0), InputFile("b", 5, 2.0)])
    listed = [InputFile("a", 10, 1.0), InputFile("b", 6, 2.0), InputFile("c", 1, 3.0)]
    assert [f.path for f in new_files(listed, state)] == ["b", "c"]
    assert state["runs"] == [{"run_id": "r1", "files": 2}]


def test_second_run_reads_only_new_files_and_third_is_a_no_op(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    paths = _split_demo(tmp_path / "inbox")
    parked = tmp_path / "parked.jsonl"
    shutil.move(paths[2], parked)
    out = tmp_path / "root"
    cfg = _config(tmp_path / "inbox", out)
    args = [f"--runner={FN_API_RUNNER}"]

    assert execute(cfg, args, "r1") == 0
    first = _read_web(out, "r1")
    assert first == 60

    shutil.move(parked, paths[2])  # a new file lands in the inbox
    assert execute(cfg, args, "r2") == 0
    third_file = len([ln for ln in paths[2].read_text().splitlines() if ln.strip()])
    assert _read_web(out, "r2") == third_file
    state = read_state(str(out))
    assert {v["run_id"] for k, v in state["files"].items() if "crawl-2" in k} == {"r2"}
    # The curated source is read whole by every run.
    r2 = json.loads((out / "runs" / "r2" / "report.json").read_text())
    assert r2["conservation"]["sources"]["constitution"]["records_in"] == 5
    # The repeated page is dropped against the first run's survivor, and the ledger names it.
    ledger = pq.read_table(sorted(glob.glob(f"{out}/runs/r2/ledger/*.parquet"))).to_pylist()
    (repeat,) = [r for r in ledger if r["id"] == "web/late-repeat"]
    assert (repeat["fate"], repeat["stage"], repeat["reason"]) == (
        "dropped",
        "dedup",
        "earlier_run_duplicate",
    )
    assert "web/early-original" in repeat["detail"]

    capsys.readouterr()
    assert execute(cfg, args, "r3") == 0
    assert "nothing to do" in capsys.readouterr().out
    assert not (out / "runs" / "r3").exists()
    assert [r["run_id"] for r in read_state(str(out))["runs"]] == ["r1", "r2"]


def test_a_failed_run_can_be_rerun(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _split_demo(tmp_path / "inbox")
    out = tmp_path / "root"
    cfg = _config(tmp_path / "inbox", out)
    args = [f"--runner={FN_API_RUNNER}"]
    original = transforms.dedup.deduplicate._apply

    def leaky(item: tuple[str, dict[str, Any]]) -> Iterator[Any]:
        if item[0][-1].endswith("3"):  # the key is the winner node; its last element is the id
            return
        yield from original(item)

    monkeypatch.setattr(transforms.dedup.deduplicate, "_apply", leaky)
    with pytest.raises(Exception, match="conservation FAILED"):
        execute(cfg, args, "r1")
    assert read_state(str(out))["runs"] == []  # nothing recorded

    monkeypatch.setattr(transforms.dedup.deduplicate, "_apply", original)
    assert execute(cfg, args, "r1") == 0
    run_dir = out / "runs" / "r1"
    assert sorted(p.name for p in (run_dir / "shards").iterdir()) == [
        "mix-00000-of-00002.parquet",
        "mix-00001-of-00002.parquet",
    ]
    assert not list(run_dir.rglob(".tmp-*"))
    assert _read_web(out, "r1") == len(
        [ln for p in (tmp_path / "inbox").iterdir() for ln in p.read_text().splitlines() if ln.strip()]
    )
