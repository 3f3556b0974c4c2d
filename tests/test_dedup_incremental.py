"""`tropemix dedup` end to end: ledger, worker-count independence, and incremental runs."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipelines.cli import main as cli_main
from pipelines.stages import run_dedup
from schemas.config import DedupConfig
from transforms.dedup.index import check_index

from .conftest import FN_API_RUNNER

WORDS = [f"w{i}" for i in range(3000)]


def _text(seed: int, n: int = 200) -> str:
    rng = random.Random(seed)
    return " ".join(rng.choice(WORDS) for _ in range(n))


def _edit(text: str, seed: int) -> str:
    words = text.split()
    words[random.Random(seed).randrange(len(words))] = "changed"
    return " ".join(words)


def _write(path: Path, docs: dict[str, str]) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"id": k, "text": v}) + "\n" for k, v in docs.items()))
    return str(path)


def _ledger(out: Path) -> dict[str, tuple[str, int, bool, str]]:
    rows = pq.read_table(out / "ledger" / "ledger-00000-of-00001.parquet").to_pylist()
    return {r["id"]: (r["cluster_id"], r["cluster_size"], r["kept"], r["reason"]) for r in rows}


FIRST = {
    **{f"u{i}": _text(i) for i in range(12)},
    "u0-copy": _text(0).upper(),
    "u1-near": _edit(_text(1), 1),
    "u1-near2": _edit(_text(1), 2),
}
SECOND = {
    "n-exact": _text(3) + " !",  # exact copy of an earlier survivor
    "n-near": _edit(_text(4), 9),  # near copy of an earlier survivor
    "n-of-dropped": _edit(_text(1), 7),  # near copy of an earlier run's dropped document
    "n-new": _text(100),
    "n-new-copy": _edit(_text(100), 3),
}


@pytest.fixture(scope="module")
def first_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("dedup")
    src = _write(tmp / "in" / "first.jsonl", FIRST)
    out = tmp / "first"
    assert cli_main(["dedup", "--input", src, "--output", str(out), f"--runner={FN_API_RUNNER}"]) == 0
    return out


def test_first_run_ledger_and_kept(first_run: Path) -> None:
    ledger = _ledger(first_run)
    assert len(ledger) == len(FIRST)  # one row per input document
    assert ledger["input/u0"] == ("input/u0", 2, True, "")
    assert ledger["input/u0-copy"] == ("input/u0", 2, False, "exact_duplicate")
    assert ledger["input/u1"] == ("input/u1", 3, True, "")
    assert ledger["input/u1-near"][2:] == (False, "near_duplicate")
    assert ledger["input/u1-near2"][0] == "input/u1"
    kept = pq.read_table(first_run / "kept" / "kept-00000-of-00001.parquet").column("id").to_pylist()
    assert sorted(kept) == sorted(f"input/u{i}" for i in range(12))
    index = pq.read_table(first_run / "dedup_index" / "index-00000-of-00001.parquet")
    assert set(index.column("id").to_pylist()) == set(kept)
    assert index.num_rows == 12 * 10  # exact hash + 9 bands per survivor


def test_ledger_independent_of_worker_count(first_run: Path, tmp_path: Path) -> None:
    src = _write(tmp_path / "in" / "first.jsonl", FIRST)
    run_dedup(
        src,
        str(tmp_path / "again"),
        DedupConfig(),
        1,
        [f"--runner={FN_API_RUNNER}", "--direct_num_workers=2", "--direct_running_mode=multi_threading"],
    )
    for part in ("ledger/ledger-00000-of-00001.parquet", "dedup_index/index-00000-of-00001.parquet"):
        assert (tmp_path / "again" / part).read_bytes() == (first_run / part).read_bytes(), part


def test_incremental_run_drops_collisions_with_earlier_survivors(first_run: Path, tmp_path: Path) -> None:
    src = _write(tmp_path / "in" / "second.jsonl", SECOND)
    previous = str(first_run / "dedup_index" / "*.parquet")
    out = tmp_path / "second"
    cfg = DedupConfig(previous_index=[previous])
    run_dedup(src, str(out), cfg, 1, [f"--runner={FN_API_RUNNER}"])
    ledger = _ledger(out)
    assert ledger["input/n-exact"] == ("input/u3", 2, False, "earlier_run_duplicate")
    assert ledger["input/n-near"] == ("input/u4", 2, False, "earlier_run_duplicate")
    assert ledger["input/n-of-dropped"] == ("input/u1", 2, False, "earlier_run_duplicate")
    assert ledger["input/n-new"] == ("input/n-new", 2, True, "")
    assert ledger["input/n-new-copy"] == ("input/n-new", 2, False, "near_duplicate")
    # The new index holds only this run's survivor; later runs pass both indexes.
    index = pq.read_table(out / "dedup_index" / "index-00000-of-00001.parquet")
    assert set(index.column("id").to_pylist()) == {"input/n-new"}


def test_index_from_other_parameters_is_rejected(first_run: Path) -> None:
    previous = str(first_run / "dedup_index" / "*.parquet")
    check_index([previous], DedupConfig())
    with pytest.raises(ValueError, match=r"dedup.previous_index: .*same ngram"):
        check_index([previous], DedupConfig(ngram=3))
    with pytest.raises(ValueError, match=r"matches no file"):
        check_index([str(first_run / "nothing" / "*.parquet")], DedupConfig())
