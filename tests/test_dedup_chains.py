"""A 300-document near-duplicate chain through ``tropemix dedup`` and ``tropemix run``.

Each 1,000-word document is the previous one with 3 words replaced: neighbours share most
shingles, the two ends little, and the chain is one component whose every
document must name the same survivor and the same size.  Min-label propagation
over 8 rounds split such chains into up to 30 cluster ids and kept 2 survivors (issue 22).
"""

from __future__ import annotations

import glob
import hashlib
import json
import random
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from pipelines.cli import main as cli_main

from .conftest import FN_API_RUNNER, MODEL

LENGTH = 300
WORDS = [f"word{i}" for i in range(5000)]


def _chain_texts(seed: int) -> list[str]:
    rng = random.Random(seed)
    words = [rng.choice(WORDS) for _ in range(1000)]
    texts = []
    for _ in range(LENGTH):
        texts.append(" ".join(words))
        for _ in range(3):
            words[rng.randrange(len(words))] = f"edit{rng.randrange(10**6)}"
    return texts


def _ids(ordered: bool) -> list[str]:
    if ordered:
        return [f"c{i:03d}" for i in range(LENGTH)]
    return [hashlib.blake2b(str(i).encode(), digest_size=6).hexdigest() for i in range(LENGTH)]


def _write_chain(path: Path, ordered: bool, best: int | None = None) -> list[str]:
    """Writes the chain as JSONL; document ``best`` alone gets a ``quality`` score."""
    ids = _ids(ordered)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [
        json.dumps({"id": i, "text": t, **({"quality": 0.9} if n == best else {})})
        for n, (i, t) in enumerate(zip(ids, _chain_texts(5), strict=True))
    ]
    path.write_text("\n".join(rows) + "\n")
    return ids


def _rows(pattern: str) -> list[dict[str, object]]:
    return [row for path in sorted(glob.glob(pattern)) for row in pq.read_table(path).to_pylist()]


@pytest.mark.parametrize("ordered", [True, False], ids=["sorted-ids", "hashed-ids"])
def test_tropemix_dedup_keeps_one_survivor_of_a_chain(tmp_path: Path, ordered: bool) -> None:
    ids = _write_chain(tmp_path / "chain.jsonl", ordered)
    out = tmp_path / "out"
    argv = [
        "dedup",
        "--input",
        str(tmp_path / "chain.jsonl"),
        "--output",
        str(out),
        f"--runner={FN_API_RUNNER}",
    ]
    assert cli_main(argv) == 0
    ledger = _rows(f"{out}/ledger/*.parquet")
    survivor = f"input/{min(ids)}"  # equal priority and score: the smallest id wins
    assert len(ledger) == LENGTH
    assert [r["id"] for r in ledger if r["kept"]] == [survivor]
    assert {(r["cluster_id"], r["cluster_size"]) for r in ledger} == {(survivor, LENGTH)}
    assert [r["id"] for r in _rows(f"{out}/kept/*.parquet")] == [survivor]


def test_tropemix_dedup_fails_naming_the_setting_when_rounds_are_too_few(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _write_chain(tmp_path / "chain.jsonl", ordered=True)
    out = tmp_path / "out"
    argv = ["dedup", "--input", str(tmp_path / "chain.jsonl"), "--output", str(out), "--max-rounds", "2"]
    assert cli_main([*argv, f"--runner={FN_API_RUNNER}"]) == 1
    error = capsys.readouterr().err
    assert "nodes were still unsettled after 2 large-star/small-star rounds" in error
    assert "raise dedup.max_rounds" in error
    assert not glob.glob(f"{out}/ledger/*.parquet")  # no contradictory lineage is published


def test_tropemix_run_gives_a_chain_one_cluster(tmp_path: Path) -> None:
    """The survivor is the one the survivor order picks: the best score, mid-chain."""
    ids = _write_chain(tmp_path / "web" / "chain.jsonl", ordered=False, best=150)
    source = {
        "name": "web",
        "inputs": [str(tmp_path / "web" / "*.jsonl")],
        "fields": {"metadata": ["quality"]},
        "classify": False,
        "dedup": True,
    }
    config = {
        "run_name": "chain",
        "sources": [source],
        "classifier": {"model": str(MODEL)},
        "blend": {"unit": "documents", "sources": {"web": {"share": 1.0}}, "num_shards": 1},
        "output": {"path": str(tmp_path / "out")},
    }
    path = tmp_path / "chain.yaml"
    path.write_text(yaml.safe_dump(config))
    assert cli_main(["run", str(path), "--", f"--runner={FN_API_RUNNER}"]) == 0
    survivor = f"web/{ids[150]}"
    ledger = _rows(f"{tmp_path}/out/ledger/*.parquet")
    assert len(ledger) == LENGTH
    assert {(r["cluster_id"], r["cluster_size"]) for r in ledger} == {(survivor, LENGTH)}
    assert [r["id"] for r in ledger if r["stage"] != "dedup"] == [survivor]
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["mix"]["cluster_sizes"] == {str(LENGTH): 1}
