"""``report.html``: one self-contained page of a run, from ``report.json`` and ``manifest.json``.

The page is ``templates/report.html`` filled in with ``string.Template``; each
section's tables come from one function here and the plots from
``transforms/report/plots.py`` (matplotlib, embedded as base64 PNG: no external
request).  ``tropemix report RUN_DIR`` regenerates it.
"""

from __future__ import annotations

import html
import string
from collections.abc import Mapping, Sequence
from importlib import resources
from typing import Any

import yaml
from apache_beam.io.filesystems import FileSystems

from transforms.classify.score import LENGTH_BUCKETS
from transforms.io.write import write_atomically
from transforms.logs import stage_logger
from transforms.report import plots
from transforms.report.metrics import STAGES
from transforms.report.plots import NARRATIVE_ORDER, ordered
from transforms.report.records import read_json

_LOG = stage_logger("report")

LENGTH_ORDER = tuple(name for _, name in LENGTH_BUCKETS)


def _template() -> string.Template:
    text = resources.files("transforms.report").joinpath("templates/report.html").read_text("utf-8")
    return string.Template(text)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.1f}" if abs(value) >= 100 else f"{value:.4f}"
    if isinstance(value, int):
        return f"{value:,}"
    return "" if value is None else str(value)


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_cell(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def narrative_rates(groups: Mapping[str, Mapping[str, int]], order: Sequence[str] = ()) -> list[list[Any]]:
    """Rows of ``group, documents, rate of each narrative`` (rates as percentages).

    Args:
      groups: group (length bucket or language) -> narrative -> documents.
      order: groups listed first, in this order; the rest by size.
    """
    keys = [k for k in order if k in groups] + sorted(
        (k for k in groups if k not in order), key=lambda k: (-sum(groups[k].values()), k)
    )
    rows = []
    for key in keys:
        total = sum(groups[key].values())
        rows.append([key, total, *(f"{100 * groups[key].get(n, 0) / total:.2f}%" for n in NARRATIVE_ORDER)])
    return rows


def narrative_rate_tables(mix: Mapping[str, Any]) -> list[str]:
    """The report's narrative rates by length bucket and by language, for classified sources."""
    header = ["group", "documents", *NARRATIVE_ORDER]
    by_length, by_lang = mix.get("narratives_by_length", {}), mix.get("narratives_by_language", {})
    if not by_length:
        return []
    return [
        "<h2>Narrative rates of classified documents, by length and by language</h2>",
        "<p>A narrative whose rate climbs with length, or shows in a language the model was not "
        "trained for, is a classifier skew, not a property of the corpus.</p>",
        _table(header, narrative_rates(by_length, LENGTH_ORDER)),
        _table(header, narrative_rates(by_lang)),
    ]


def excerpt_tables(excerpts: Mapping[str, Sequence[Mapping[str, str]]]) -> list[str]:
    """Sampled excerpts per narrative (``output.report_excerpts``), to check labels by reading."""
    if not excerpts:
        return []
    parts = ["<h2>Sampled excerpts per narrative</h2>"]
    for narrative in ordered(list(excerpts), NARRATIVE_ORDER):
        rows = [[e["source"], e["id"], e["excerpt"]] for e in excerpts[narrative]]
        parts += [f"<h3>{html.escape(narrative)}</h3>", _table(["source", "id", "excerpt"], rows)]
    return parts


def sources_table(conservation: Mapping[str, Any]) -> str:
    """Per source: records in, dead letters, documents, dropped, written, epoch copies, shard rows."""
    header = ["source", "records in", "dead letters", "documents", "dropped", "written", "epoch copies"]
    rows = [
        [
            name,
            s["records_in"],
            s["dead_letters"],
            s["documents_read"],
            sum(s["dropped"].values()),
            s["documents_written"],
            s["epoch_copies"],
            s["shard_rows"],
        ]
        for name, s in sorted(conservation["sources"].items())
    ]
    return _table([*header, "shard rows"], rows)


def stages_table(conservation: Mapping[str, Any]) -> str:
    """Per stage, in the run's order: documents in, out and dropped."""
    rank = {stage: i for i, stage in enumerate(STAGES)}
    rows = [
        [stage, s["in"], s["out"], s["dropped"]]
        for stage, s in sorted(
            conservation["stages"].items(), key=lambda kv: (rank.get(kv[0], len(rank)), kv[0])
        )
    ]
    return _table(["stage", "in", "out", "dropped"], rows)


def shares_table(realized: Mapping[str, Any]) -> str:
    """Target versus realized rows and shares per source, and the rows of each shard."""
    header = ["source", "target rows", "realized rows", "target share", "realized share", "rows per shard"]
    rows = [
        [
            n,
            r["target"],
            r["realized"],
            r["target_share"],
            r["realized_share"],
            " ".join(map(str, r["per_shard"])),
        ]
        for n, r in sorted(realized.items())
    ]
    return _table(header, rows)


def throughput_section(timing_info: Mapping[str, Any] | None) -> str:
    """Wall time and documents per busy second per stage; empty without timing."""
    if not timing_info:
        return ""
    intro = (
        f"<p>Wall time {timing_info['wall_seconds']:.1f} s, "
        f"{timing_info['docs_per_second'] or 0:,.1f} records/s end to end. Per stage: documents entering the "
        "stage divided by the processing time Beam attributes to its transforms, summed over workers "
        "(so it is per-worker throughput, not wall-clock).</p>"
    )
    rows = [
        [s, t["docs_in"], t["busy_seconds"], t["docs_per_second"]]
        for s in STAGES
        if (t := timing_info["stages"].get(s))
    ]
    header = ["stage", "documents in", "busy seconds", "documents / busy second"]
    return "\n".join(["<h2>Throughput</h2>", intro, _table(header, rows)])


def plan_section(plan: Mapping[str, Any]) -> str:
    """The blend plan: its totals, then per source its role, share, budget, targets and strata."""
    line = (
        f"<p>total {_cell(plan.get('total'))} {html.escape(str(plan.get('unit', '')))}, "
        f"{_cell(plan.get('num_shards'))} shards, seed {_cell(plan.get('seed'))}</p>"
    )
    header = ["source", "role", "share", "budget", "available", "target", "max epochs", "epochs"]
    rows = [
        [
            n,
            p.get("role"),
            p["share"],
            p.get("budget"),
            p["available"],
            p["target"],
            p["max_epochs"],
            round(p["epochs"], 4),
            ", ".join(f"{st}: {s['target']} / {s['available']}" for st, s in sorted(p["strata"].items())),
        ]
        for n, p in sorted(plan.get("sources", {}).items())
    ]
    return "\n".join([line, _table([*header, "strata (target / available)"], rows)])


def chat_tokens_section(chat: Mapping[str, Mapping[str, int]]) -> str:
    """Tokens of the written copies of chat sources; empty without chat sources."""
    if not chat:
        return ""
    rows = [[n, t.get("conversation", 0), t.get("assistant", 0)] for n, t in sorted(chat.items())]
    return "\n".join(
        [
            "<h3>Chat sources: tokens of the written copies</h3>",
            _table(["source", "rendered conversation", "assistant turns"], rows),
        ]
    )


def shards_table(shards: Sequence[Mapping[str, Any]]) -> str:
    """Per shard file: rows, bytes and the start of its sha256."""
    rows = [[s["path"].rsplit("/", 1)[-1], s["rows"], s["bytes"], s["sha256"][:16]] for s in shards]
    return _table(["shard", "rows", "bytes", "sha256"], rows)


def beam_metrics_section(metrics: Mapping[str, Any] | None) -> str:
    """Beam's counters and distributions, folded away; empty when the runner reported none."""
    if not metrics or not metrics.get("available"):
        return ""
    distributions = [
        [k, d["count"], d["min"], float(d["mean"]), d["max"]] for k, d in metrics["distributions"].items()
    ]
    return "\n".join(
        [
            "<h2>Beam metrics</h2><details><summary>counters and distributions</summary>",
            _table(["counter", "value"], sorted(metrics["counters"].items())),
            _table(["distribution", "count", "min", "mean", "max"], distributions),
            "</details>",
        ]
    )


def metrics_check_line(check: Mapping[str, Any] | None) -> str:
    """Whether Beam's counters agree with the ledger counts; empty when the runner reported none."""
    if check is None:
        return ""
    verdict = "agree with" if check["ok"] else "DIFFER from"
    return (
        f"<p class='{'ok' if check['ok'] else 'bad'}'>Beam metrics counters {verdict} the ledger counts.</p>"
    )


def plot_figures(report: Mapping[str, Any]) -> str:
    """Every plot as an ``<img>`` with its anchor and title."""
    mix, realized = report["mix"], report["realized"]
    figures = [
        ("narratives", "Narrative distribution before and after the mix", plots.plot_narratives(mix)),
        ("labels", "Trope label counts", plots.plot_labels(mix)),
        ("shares", "Target versus realized share per source", plots.plot_shares(realized)),
        ("shard-shares", "Share per source across shards", plots.plot_shard_shares(realized)),
        ("drops", "Documents dropped by stage and reason", plots.plot_drops(mix)),
        ("clusters", "Dedup cluster-size histogram", plots.plot_clusters(mix)),
        ("throughput", "Documents per second per stage", plots.plot_throughput(report.get("timing"))),
    ]
    return "\n".join(
        f"<figure id='{anchor}'><img alt='{html.escape(title)}' src='data:image/png;base64,{data}'></figure>"
        for anchor, title, data in figures
    )


def render_html(report: Mapping[str, Any], manifest: Mapping[str, Any]) -> str:
    """The self-contained ``report.html`` of a run.

    Args:
      report: ``report.json``.
      manifest: ``manifest.json``.
    """
    cons = report["conservation"]
    lines = "".join(f"<li><code>{html.escape(line)}</code></li>" for line in cons["lines"])
    return _template().substitute(
        run_name=html.escape(report["run_name"]),
        status_class="ok" if cons["ok"] else "bad",
        summary=html.escape(cons["summary"]),
        sources=sources_table(cons),
        conservation_lines=f"<ul>{lines}</ul>",
        stages=stages_table(cons),
        metrics_check=metrics_check_line(report.get("metrics_check")),
        plots=plot_figures(report),
        narrative_rates="\n".join(narrative_rate_tables(report["mix"])),
        excerpts="\n".join(excerpt_tables(report.get("excerpts", {}))),
        shares=shares_table(report["realized"]),
        throughput=throughput_section(report.get("timing")),
        plan=plan_section(manifest.get("plan") or report.get("plan") or {}),
        # Reports written before chat sources existed have no ``chat_tokens``.
        chat_tokens=chat_tokens_section(report.get("chat_tokens", {})),
        shards=shards_table(manifest.get("shards", [])),
        beam_metrics=beam_metrics_section(report.get("metrics")),
        config=html.escape(yaml.safe_dump(report["config"], sort_keys=False)),
    )


def write_report_html(run_dir: str) -> str:
    """Renders ``report.html`` next to ``report.json``; returns its path.

    Args:
      run_dir: the run's output directory (local or ``gs://``).
    """
    base = run_dir.rstrip("/")
    report = read_json(f"{base}/report.json")
    manifest_path = f"{base}/manifest.json"
    manifest = read_json(manifest_path) if FileSystems.exists(manifest_path) else {}
    path = f"{base}/report.html"
    write_atomically(path, render_html(report, manifest).encode("utf-8"))
    _LOG.info("report written", path=path)
    return path
