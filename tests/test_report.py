"""The run report: Beam metrics in report.json, report.html in a real browser, failing conservation."""

from __future__ import annotations

import base64
import html
import io
import json
import logging
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import transforms.blend.sample
from pipelines.cli import main as cli_main
from transforms.io.publication import staging_dir
from transforms.logs import configure_logging
from transforms.report.conservation import mix_summary
from transforms.report.counts import count_key
from transforms.report.html import render_html
from transforms.report.metrics import (
    expected_counters,
    metrics_check,
    stage_busy_seconds,
    step_stages,
    timing,
)

from .conftest import REPO, write_demo_config

ARTIFACTS = REPO / "test-artifacts"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, Any], str]]:
    """One CLI run of the demo, with its report and every log line it wrote."""
    tmp = tmp_path_factory.mktemp("report")
    out = tmp / "out"
    logs = io.StringIO()
    handler = configure_logging(stream=logs)
    try:
        with pytest.MonkeyPatch.context() as mp:
            # cli_main configures logging itself; keep capturing into ``logs``.
            mp.setattr("pipelines.cli.configure_logging", lambda: handler)
            code = cli_main(["run", str(write_demo_config(tmp, out))])
    finally:
        logging.getLogger().removeHandler(handler)
    assert code == 0
    yield out, json.loads((out / "report.json").read_text()), logs.getvalue()


def test_report_json_holds_every_stage_metric(demo: tuple[Path, dict[str, Any], str]) -> None:
    _, report, _ = demo
    metrics = report["metrics"]
    assert metrics["available"]
    counters = metrics["counters"]
    expected = {
        "tropemix.read/format.jsonl": 189,
        "tropemix.read/format.text": 5,
        "tropemix.read/bad_input.bad_json": 1,
        "tropemix.read/bad_input.empty_text": 1,
        "tropemix.read/bad_input.wrong_type": 1,
        "tropemix.dedup/dropped.exact_duplicate": 7,
        "tropemix.dedup/dropped.near_duplicate": 15,
        "tropemix.policy/dropped.downsampled_mixed": 4,
        "tropemix.blend/sampled_out.stories": 17,
        "tropemix.blend/epoch_1.constitution": 3,
    }
    assert {k: counters.get(k) for k in expected} == expected
    narratives = {k: n for k, n in counters.items() if k.startswith("tropemix.classify/narrative.")}
    assert sum(narratives.values()) == counters["tropemix.classify/docs"] == 189
    assert any(k.startswith("tropemix.classify/label.") for k in counters)
    actions = {k: n for k, n in counters.items() if k.startswith("tropemix.policy/action.")}
    assert sum(actions.values()) == 189
    assert report["metrics_check"]["ok"], report["metrics_check"]
    lengths = metrics["distributions"]["tropemix.read/doc_chars"]
    assert lengths["count"] == 194 and 0 < lengths["min"] <= lengths["mean"] <= lengths["max"]
    clusters = metrics["distributions"]["tropemix.dedup/cluster_size"]
    # The demo corpus plants 8 exact and 14 near-duplicate pairs; the policy runs first
    # and downsamples one member of an exact pair; one more near pair forms among the
    # kept documents (7 + 15).
    assert clusters["count"] == 22 and clusters["min"] >= 2
    # The in-pipeline histogram agrees: 22 clusters of two documents.
    assert report["mix"]["cluster_sizes"]["2"] == 22


def test_report_json_holds_the_mix_and_timing(demo: tuple[Path, dict[str, Any], str]) -> None:
    _, report, _ = demo
    mix = report["mix"]
    shards = json.loads((demo[0] / "manifest.json").read_text())["shards"]
    assert sum(mix["narratives_after"].values()) == sum(s["rows"] for s in shards) == 153
    assert sum(mix["narratives_before"].values()) == 194
    # The policy downsampled mixed documents, so their share fell.
    before = mix["narratives_before"]["mixed"] / sum(mix["narratives_before"].values())
    after = mix["narratives_after"]["mixed"] / sum(mix["narratives_after"].values())
    assert after < before
    assert mix["drops"]["read"] == {"bad_json": 1, "empty_text": 1, "wrong_type": 1}
    assert set(report["conservation"]["stages"]) == {"ids", "classify", "policy", "dedup", "blend", "write"}
    stages = report["timing"]["stages"]
    assert report["timing"]["wall_seconds"] > 0
    assert stages["read"]["docs_in"] == 197 and stages["dedup"]["docs_in"] == 190
    assert any(s["busy_seconds"] for s in stages.values())


def test_report_html_is_self_contained(demo: tuple[Path, dict[str, Any], str]) -> None:
    out, report, _ = demo
    page = (out / "report.html").read_text()
    assert not re.search(r"""(src|href)\s*=\s*['"]?(https?:|//)""", page)
    assert "@import" not in page and "url(" not in page
    images = re.findall(r"<img [^>]*src='data:image/png;base64,([^']+)'", page)
    assert len(images) == 7 == page.count("<img ")
    for data in images:
        assert base64.b64decode(data).startswith(PNG_MAGIC)
    assert report["conservation"]["summary"] in page
    assert "downsampled_mixed" in page  # the config and the drop reasons are shown
    assert "Narrative rates of classified documents, by length and by language" in page


def test_tropemix_report_regenerates_the_page(demo: tuple[Path, dict[str, Any], str], tmp_path: Path) -> None:
    out, _, _ = demo
    copy = tmp_path / "run"
    copy.mkdir()
    for name in ("report.json", "manifest.json"):
        shutil.copy(out / name, copy / name)
    assert cli_main(["report", str(copy)]) == 0
    assert (copy / "report.html").read_text() == (out / "report.html").read_text()
    assert cli_main(["report", str(tmp_path / "missing")]) == 2


def test_every_log_line_names_its_stage_and_no_text(demo: tuple[Path, dict[str, Any], str]) -> None:
    _, _, logs = demo
    lines = logs.splitlines()
    assert any("stage=read" in line for line in lines) and any("stage=run" in line for line in lines)
    assert all(re.match(r"^\S+Z [A-Z]+ stage=\S+ event=", line) for line in lines), lines
    texts = []
    for path in (REPO / "examples" / "demo").rglob("*"):
        if path.suffix in {".jsonl", ".md"}:
            for line in path.read_text().splitlines():
                try:
                    texts.append(json.loads(line).get("text") or "")
                except (json.JSONDecodeError, AttributeError):
                    texts.append(line)
    snippets = {t.strip()[:40] for t in texts if isinstance(t, str) and len(t.strip()) >= 40}
    assert snippets
    leaked = [s for s in snippets if any(s in line for line in lines)]
    assert not leaked


@pytest.fixture(scope="session")
def chromium() -> str:
    """The chromium on PATH (``make chromium`` installs Debian's); the browser check skips without it."""
    found = shutil.which("chromium")
    if not found:
        pytest.skip("no chromium on PATH to render report.html in (`make chromium` installs it)")
    return found


def test_report_renders_in_a_real_browser(
    demo: tuple[Path, dict[str, Any], str], chromium: str, tmp_path: Path
) -> None:
    out, _, _ = demo
    url = (out / "report.html").as_uri()
    flags = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run(
        [*flags, "--virtual-time-budget=10000", "--dump-dom", url],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    body = re.search(r"<body([^>]*)>", dom)
    assert body, dom[:500]
    assert 'data-rendered="ok"' in body.group(1) and 'data-images="7/7"' in body.group(1), body.group(0)
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "report.png"
    shot.unlink(missing_ok=True)
    subprocess.run(
        [*flags, "--window-size=1200,3800", f"--screenshot={shot}", url],
        capture_output=True,
        timeout=120,
        check=True,
    )
    data = shot.read_bytes()
    assert data.startswith(PNG_MAGIC)
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (1200, 3800)
    assert len(data) > 100_000, "a page of plots compresses to far more than a blank screenshot"


def test_a_stage_that_loses_documents_exits_non_zero_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    original = transforms.blend.sample._expand_copies

    def leaky(item: tuple[str, int, Any], plan: Any) -> Iterator[Any]:
        # Loses every fourth ranked document after blending: no ledger row, no count.
        if item[1] % 4 == 3:
            return
        yield from original(item, plan)

    monkeypatch.setattr(transforms.blend.sample, "_expand_copies", leaky)
    out = tmp_path / "out"
    assert cli_main(["run", str(write_demo_config(tmp_path, out))]) == 1
    err = capsys.readouterr().err
    assert "conservation FAILED" in err
    stage_line = re.search(
        r"MISMATCH stage blend: in (\d+) != out (\d+) \+ dropped (\d+) \(difference (\d+)", err
    )
    assert stage_line, err
    n_in, n_out, n_dropped, diff = map(int, stage_line.groups())
    assert diff == n_in - n_out - n_dropped > 0
    assert re.search(r"MISMATCH web: .*\(difference \d+", err)
    # A failed run is not published; its report stays in the staging directory the message names.
    assert not out.exists()
    staged = Path(staging_dir(str(out)))
    assert f"report (not published): {staged}/report.html" in err
    report = json.loads((staged / "report.json").read_text())
    assert report["status"] == "conservation_failed"
    assert "conservation FAILED" in (staged / "report.html").read_text()


def test_mix_summary_from_counts() -> None:
    counts = {
        count_key("narrative_in", "web", "misaligned"): 4,
        count_key("narrative_in", "books", "misaligned"): 1,
        count_key("narrative_in", "web", "none"): 5,
        count_key("label_in", "deception"): 3,
        count_key("ledger", "web", "dropped", "dedup", "near_duplicate"): 2,
        count_key("dead_reason", "read", "bad_json"): 1,
        count_key("cluster_docs", "1"): 6,
        count_key("cluster_docs", "3"): 3,
    }
    shards = [{"by_narrative": {"none": 2}, "by_trope": {"deception": 1}}, {"by_narrative": {"none": 1}}]
    mix = mix_summary(counts, shards)
    assert mix["narratives_before"] == {"misaligned": 5, "none": 5}
    assert mix["narratives_after"] == {"none": 3}
    assert mix["labels_after"] == {"deception": 1}
    assert mix["drops"] == {"dedup": {"near_duplicate": 2}, "read": {"bad_json": 1}}
    assert mix["cluster_sizes"] == {"1": 6, "3": 1}


def test_metrics_check_flags_a_counter_that_disagrees() -> None:
    counts = {
        count_key("read_docs", "web"): 10,
        count_key("ledger", "web", "dropped", "dedup", "near_duplicate"): 2,
    }
    agree = {
        "tropemix.read/docs.web": 10,
        "tropemix.dedup/dropped.near_duplicate": 2,
        "tropemix.write/rows.mix": 0,
    }
    assert metrics_check(agree, expected_counters(counts, "mix"))["ok"]
    # Shard rows are checked under the configured prefix.
    with_rows = {**counts, count_key("shard_rows", "web"): 8}
    assert not metrics_check(agree, expected_counters(with_rows, "mix"))["ok"]
    assert metrics_check({**agree, "tropemix.write/rows.out": 8}, expected_counters(with_rows, "out"))["ok"]
    result = metrics_check(
        {**agree, "tropemix.dedup/dropped.near_duplicate": 1}, expected_counters(counts, "mix")
    )
    assert not result["ok"]
    assert [c["metric"] for c in result["checks"] if not c["ok"]] == ["tropemix.dedup/dropped.near_duplicate"]


def test_blend_drops_are_checked_per_source() -> None:
    counts = {
        count_key("ledger", "web", "dropped", "blend", "sampled_out"): 3,
        count_key("ledger", "books", "dropped", "blend", "sampled_out"): 1,
        count_key("ledger", "web", "written"): 5,
    }
    assert expected_counters(counts, "mix") == {
        "tropemix.blend/sampled_out.books": 1,
        "tropemix.blend/sampled_out.web": 3,
        "tropemix.write/rows.mix": 0,
    }


def _monitored(steps: dict[str, int]) -> Any:
    """A finished in-process result whose execution-time metric reports ``steps`` (step -> msecs)."""
    metric = "metric:ptransform_execution_time:total_msecs:v1"
    counters = [
        SimpleNamespace(key=SimpleNamespace(step=step, metric=SimpleNamespace(name=metric)), committed=ms)
        for step, ms in steps.items()
    ]
    query = SimpleNamespace(query=lambda: {"counters": counters})
    return SimpleNamespace(monitoring_metrics=lambda: query)


def test_stage_timing_matches_whole_composite_labels() -> None:
    steps = {
        "BuildMix/ReadAndLabel/Read[web]/Parse": 1000,
        "BuildMix/ReadAndLabel/Read[books]": 2000,
        "BuildMix/Deduplicate/Dedup/Keys/KeyDocs": 4000,
        # Steps that only start like a stage's label, or sit beside it, are not that stage.
        "BuildMix/WriteOutputs/WriteDedupIndex/Write": 8000,
        "BuildMix/WriteOutputs/DedupedRows": 16000,
        "BuildMix/ReadAndLabel/Read[webs]/Parse": 32000,
        "BuildMix/ReadAndLabel/ReadSomething/Parse": 64000,
        "BuildMix/BlendReport": 128000,
        "BuildMix/ReadAndLabel/CountClassify[web]In/Count": 256000,
        "BuildMix/Deduplicate/DedupIndex": 512000,
    }
    assert stage_busy_seconds(_monitored(steps), ["web", "books"]) == {"read": 3.0, "dedup": 4.0}
    assert step_stages(["web"]) == {
        "BuildMix/ReadAndLabel/Read[web]": "read",
        "BuildMix/ReadAndLabel/Decontaminate[web]": "decontaminate",
        "BuildMix/ReadAndLabel/Classify[web]": "classify",
        "BuildMix/ReadAndLabel/Policy[web]": "policy",
        "BuildMix/Deduplicate/Dedup": "dedup",
        "BuildMix/Blend": "blend",
        "BuildMix/WriteOutputs/WriteShards": "write",
    }


def test_timing_without_runner_timings_leaves_rates_out() -> None:
    report = {
        "conservation": {
            "sources": {"web": {"records_in": 10, "shard_rows": 6}},
            "stages": {"dedup": {"in": 8}},
        },
    }
    result = timing(report, {}, 2.0)
    assert result["docs_per_second"] == 5.0
    assert result["stages"]["dedup"] == {"docs_in": 8, "busy_seconds": None, "docs_per_second": None}
    assert result["stages"]["write"]["docs_in"] == 6
    assert timing(report, {"dedup": 0.5}, 2.0)["stages"]["dedup"]["docs_per_second"] == 16.0


def _bare_report(run_name: str, config_name: str) -> dict[str, Any]:
    """The keys ``render_html`` needs of a run that wrote nothing, as a report written before chat sources."""
    return {
        "run_name": run_name,
        "conservation": {"ok": True, "summary": "conservation OK", "lines": [], "sources": {}, "stages": {}},
        "mix": mix_summary({}, []),
        "realized": {},
        "config": {"run_name": config_name},
    }


def test_render_html_escapes_names() -> None:
    report = {**_bare_report("<script>x</script>", "<b>"), "chat_tokens": {}}
    page = render_html(report, {})
    assert "<script>x</script>" not in page and "&lt;script&gt;" in page
    assert page.count("<img ") == 7  # every plot still renders, saying what is missing


def test_render_html_reads_a_report_from_before_chat_sources() -> None:
    page = render_html(_bare_report("old", "old"), {})
    assert "conservation OK" in page and "Chat sources" not in page


def test_report_shows_sampled_excerpts_when_asked(demo: tuple[Path, dict[str, Any], str]) -> None:
    # examples/demo.yaml opts in with output.report_excerpts: 3.
    out, report, _ = demo
    excerpts = report["excerpts"]
    before = report["mix"]["narratives_before"]
    assert set(excerpts) <= set(before)
    for narrative, rows in excerpts.items():
        assert 1 <= len(rows) <= 3 and len(rows) == min(3, before[narrative] if narrative != "none" else 3)
        assert all(
            r["excerpt"] and r["source"] in {"web", "stories"} and len(r["excerpt"]) <= 400 for r in rows
        )
    page = (out / "report.html").read_text()
    assert "Sampled excerpts per narrative" in page
    assert html.escape(excerpts["ai_nonnarrative"][0]["excerpt"][:60], quote=True) in page
