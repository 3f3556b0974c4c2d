"""Accounting: the conservation check passes on balanced counts and names the gap otherwise."""

from __future__ import annotations

from transforms.report.conservation import check_conservation
from transforms.report.counts import count_key


def _balanced() -> dict[str, int]:
    return {
        count_key("read_docs", "web"): 10,
        count_key("dead_letters", "web"): 2,
        count_key("shard_docs", "web"): 6,
        count_key("ledger", "web", "written"): 6,
        count_key("ledger", "web", "dropped", "dedup", "near_duplicate"): 3,
        count_key("ledger", "web", "dropped", "blend", "sampled_out"): 1,
        count_key("stage", "dedup", "in"): 10,
        count_key("stage", "dedup", "out"): 7,
        count_key("stage", "dedup", "dropped"): 3,
    }


def test_balanced_counts_pass() -> None:
    result = check_conservation(_balanced(), ["web"])
    assert result["ok"]
    assert result["summary"] == "conservation OK: 12 records in = 6 written + 4 dropped + 2 dead letters"
    assert result["sources"]["web"]["dropped"] == {"blend|sampled_out": 1, "dedup|near_duplicate": 3}


def test_lost_documents_fail_with_source_and_difference() -> None:
    counts = _balanced()
    counts[count_key("shard_docs", "web")] = 5
    result = check_conservation(counts, ["web"])
    assert not result["ok"]
    assert any("MISMATCH web" in line and "difference 1" in line for line in result["lines"])


def test_unbalanced_stage_is_named() -> None:
    counts = _balanced()
    counts[count_key("stage", "dedup", "out")] = 6
    result = check_conservation(counts, ["web"])
    assert not result["ok"]
    assert any("MISMATCH stage dedup" in line and "difference 1" in line for line in result["lines"])


def test_reader_counts_must_balance_per_source_and_per_file() -> None:
    counts = {**_balanced(), count_key("read_seen", "web"): 12, count_key("read_files", "web"): 3}
    result = check_conservation(counts, ["web"])
    assert result["ok"] and result["sources"]["web"]["records_seen"] == 12
    lost = {**counts, count_key("read_seen", "web"): 13}
    result = check_conservation(lost, ["web"])
    assert not result["ok"]
    assert "MISMATCH web: readers saw 13 records, passed on 10 + dead letters 2" in result["lines"]
    bad_file = {**counts, count_key("read_file_mismatch", "web", "gs://b/x|y.jsonl"): 1}
    result = check_conservation(bad_file, ["web"])
    assert not result["ok"]
    assert any("file gs://b/x|y.jsonl: 1 records seen" in line for line in result["lines"])
