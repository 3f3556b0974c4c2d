"""The run report: Beam metrics read back after the run, and ``report.html``.

``report.json`` is written inside the pipeline (``transforms/report/accounting.py``) from
counts taken off the PCollections themselves; that check is the authority.  After
the job finishes the driver adds what only the runner knows:

- ``metrics``: every ``tropemix.*`` counter and distribution from
  ``PipelineResult.metrics()`` (committed values, attempted where a runner has no
  committed ones), and a cross-check of those counters against the ledger counts;
- ``timing``: the run's wall time and, per stage, the processing time Beam's own
  execution-time metric attributes to the stage's transforms, summed over workers
  (reported by the in-process runner; other runners leave it out).

``render_html`` turns ``report.json`` plus ``manifest.json`` into one
self-contained page: matplotlib plots embedded as base64 PNG, no external request.
``tropemix report RUN_DIR`` regenerates it.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Mapping, Sequence
from typing import Any

import yaml
from apache_beam.io.filesystems import FileSystems

from transforms.classify.score import LENGTH_BUCKETS
from transforms.io.chat import chat_token_summary
from transforms.io.write import write_atomically
from transforms.logs import stage_logger

_LOG = stage_logger("report")

# Top-level step label prefix -> stage, for the execution-time metric.
STAGE_STEPS = (
    ("Read[", "read"),
    ("Decontaminate", "decontaminate"),
    ("Classify", "classify"),
    ("Policy", "policy"),
    ("Dedup", "dedup"),
    ("Blend", "blend"),
    ("WriteShards", "write"),
)
_EXECUTION_TIME = "metric:ptransform_execution_time:total_msecs:v1"
NARRATIVE_ORDER = ("misaligned", "mixed", "aligned", "ai_nonnarrative", "none")


def _value(metric: Any) -> Any:
    return metric.committed if metric.committed is not None else metric.attempted


def collect_metrics(result: Any) -> dict[str, Any]:
    """``tropemix.*`` counters and distributions of a finished job, summed over steps.

    Args:
      result: a ``PipelineResult`` after ``wait_until_finish``.

    Returns:
      ``{"available": bool, "counters": {"ns/name": n}, "distributions": {"ns/name":
      {count, sum, min, max, mean}}, "missing": [...]}``; ``available`` is false when
      the runner does not report metrics, and ``missing`` names what a runner that does
      cannot carry (its result's ``missing_metrics``; the Dask runner's, for one).
    """
    try:
        query = result.metrics().query()
    except Exception as err:  # metrics are advisory: a runner's metrics API must not fail a finished run
        _LOG.warning("metrics unavailable", runner=type(result).__name__, error=type(err).__name__)
        return {"available": False, "counters": {}, "distributions": {}}
    counters: dict[str, int] = {}
    for m in query["counters"]:
        name = m.key.metric
        if name.namespace.startswith("tropemix."):
            key = f"{name.namespace}/{name.name}"
            counters[key] = counters.get(key, 0) + int(_value(m) or 0)
    distributions: dict[str, dict[str, float]] = {}
    for m in query["distributions"]:
        name = m.key.metric
        value = _value(m)
        if not name.namespace.startswith("tropemix.") or value is None or not value.count:
            continue
        key = f"{name.namespace}/{name.name}"
        d = distributions.get(key)
        if d is None:
            distributions[key] = {"count": value.count, "sum": value.sum, "min": value.min, "max": value.max}
        else:
            d.update(
                count=d["count"] + value.count,
                sum=d["sum"] + value.sum,
                min=min(d["min"], value.min),
                max=max(d["max"], value.max),
            )
    for d in distributions.values():
        d["mean"] = d["sum"] / d["count"]
    return {
        "available": True,
        "counters": dict(sorted(counters.items())),
        "distributions": dict(sorted(distributions.items())),
        "missing": list(getattr(result, "missing_metrics", ())),
    }


def stage_busy_seconds(result: Any) -> dict[str, float]:
    """Processing seconds per stage from Beam's execution-time metric, summed over workers.

    Empty when the runner does not expose it (only the in-process runner's result
    has ``monitoring_metrics``).

    Args:
      result: a finished ``PipelineResult``.
    """
    monitoring = getattr(result, "monitoring_metrics", None)
    if monitoring is None:
        return {}
    try:
        counters = monitoring().query()["counters"]
    except Exception as err:  # advisory, as in collect_metrics
        _LOG.warning("execution times unavailable", error=type(err).__name__)
        return {}
    busy: dict[str, float] = {}
    for m in counters:
        step = m.key.step or ""
        if m.key.metric.name != _EXECUTION_TIME:
            continue
        for prefix, stage in STAGE_STEPS:
            if step.startswith(prefix):
                busy[stage] = busy.get(stage, 0.0) + (_value(m) or 0) / 1000.0
                break
    return busy


def stage_inputs(report: Mapping[str, Any]) -> dict[str, int]:
    """Documents entering each stage, from the in-pipeline counts."""
    counts = report["counts"]
    stages = report["conservation"]["stages"]
    records_in = sum(s["records_in"] for s in report["conservation"]["sources"].values())
    out = {"read": records_in}
    for stage in ("classify", "policy", "dedup", "blend", "write"):
        if stage in stages:
            out[stage] = stages[stage]["in"]
    if "write" not in out:
        out["write"] = sum(n for k, n in counts.items() if k.startswith("shard_rows|"))
    return out


def timing(report: Mapping[str, Any], busy: Mapping[str, float], wall_seconds: float) -> dict[str, Any]:
    """Documents per second per stage and for the whole run.

    Args:
      report: the in-pipeline report.
      busy: stage -> processing seconds summed over workers (may be empty).
      wall_seconds: the driver's wall time of the job.
    """
    inputs = stage_inputs(report)
    stages = {}
    for _, stage in STAGE_STEPS:
        seconds = busy.get(stage)
        docs = inputs.get(stage, 0)
        stages[stage] = {
            "docs_in": docs,
            "busy_seconds": round(seconds, 3) if seconds is not None else None,
            "docs_per_second": round(docs / seconds, 1) if seconds else None,
        }
    return {
        "wall_seconds": round(wall_seconds, 3),
        "docs_per_second": round(inputs["read"] / wall_seconds, 1) if wall_seconds > 0 else None,
        "busy_source": "beam ptransform_execution_time (summed over workers)" if busy else None,
        "stages": stages,
    }


def metrics_check(
    counters: Mapping[str, int], counts: Mapping[str, int], shard_prefix: str = "mix"
) -> dict[str, Any]:
    """Compares Beam counters with the ledger and PCollection counts of the same things.

    Advisory: a runner may report partial or attempted metrics, so a difference is
    a warning, while the in-pipeline conservation check decides the run.

    Args:
      counters: ``ns/name`` -> value from ``collect_metrics``.
      counts: the in-pipeline counts of ``report.json``.
      shard_prefix: ``output.shard_prefix``, which names the shard writer's counters.
    """

    def counted(prefix: str) -> dict[str, int]:
        return {k[len(prefix) :]: n for k, n in counts.items() if k.startswith(prefix)}

    pairs: list[tuple[str, int]] = []
    for source, n in counted("read_docs|").items():
        pairs.append((f"tropemix.read/docs.{source}", n))
    for source, n in counted("dead_letters|").items():
        pairs.append((f"tropemix.read/dead_letters.{source}", n))
    drops: dict[str, int] = {}
    for key, n in counts.items():
        parts = key.split("|")
        if parts[0] == "ledger" and parts[2] == "dropped":
            stage, reason = parts[3], parts[4]
            if stage == "blend":
                metric = f"tropemix.blend/{reason}.{parts[1]}"
            else:
                metric = f"tropemix.{stage}/dropped.{reason}"
            drops[metric] = drops.get(metric, 0) + n
    pairs.extend(sorted(drops.items()))
    pairs.append((f"tropemix.write/rows.{shard_prefix}", sum(counted("shard_rows|").values())))
    checks = []
    for metric, expected in pairs:
        value = counters.get(metric, 0)
        checks.append({"metric": metric, "metric_value": value, "counted": expected, "ok": value == expected})
    return {"ok": all(c["ok"] for c in checks), "checks": checks}


def augment_report(
    report: dict[str, Any], metrics: dict[str, Any], busy: Mapping[str, float], wall_seconds: float
) -> dict[str, Any]:
    """``report`` with ``metrics``, ``metrics_check`` and ``timing`` added."""
    out = dict(report)
    out["metrics"] = metrics
    if metrics["available"]:
        out["metrics_check"] = metrics_check(
            metrics["counters"], report["counts"], report["config"]["output"]["shard_prefix"]
        )
    out["timing"] = timing(report, busy, wall_seconds)
    return out


def read_json(path: str) -> dict[str, Any]:
    """A JSON file from any ``FileSystems`` path."""
    with FileSystems.open(path) as f:
        data: dict[str, Any] = json.loads(f.read().decode("utf-8"))
        return data


# --- report.html -------------------------------------------------------------------------------------


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    import matplotlib.pyplot as plt

    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _figure(width: float = 7.0, height: float = 3.4) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg")  # no display; must precede pyplot's first use
    import matplotlib.pyplot as plt

    # Constrained layout fits labels in one draw; bbox_inches="tight" would draw every figure twice.
    return plt.subplots(figsize=(width, height), layout="constrained")


def _empty(ax: Any, message: str) -> None:
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, color="#666")
    ax.set_xticks([])
    ax.set_yticks([])


def _ordered(keys: Sequence[str], order: Sequence[str]) -> list[str]:
    return [k for k in order if k in keys] + sorted(k for k in keys if k not in order)


def _grouped_bars(
    ax: Any, categories: list[str], series: Mapping[str, Sequence[float]], percent: bool = False
) -> None:
    import numpy as np

    x = np.arange(len(categories))
    width = 0.8 / max(len(series), 1)
    for i, (name, values) in enumerate(series.items()):
        bars = ax.bar(x + (i - (len(series) - 1) / 2) * width, values, width, label=name)
        labels = [f"{v:.1%}" if percent else f"{v:,.0f}" for v in values]
        ax.bar_label(bars, labels=labels, fontsize=7, padding=1)
    ax.set_xticks(
        x,
        categories,
        rotation=20 if len(categories) > 4 else 0,
        ha="right" if len(categories) > 4 else "center",
    )
    ax.legend(fontsize=8)
    ax.spines[["top", "right"]].set_visible(False)


def plot_narratives(mix: Mapping[str, Any]) -> str:
    """Narrative shares of the corpus before the mix and of the mix."""
    fig, ax = _figure()
    before, after = mix["narratives_before"], mix["narratives_after"]
    names = _ordered(list({*before, *after}), NARRATIVE_ORDER)
    if not names:
        _empty(ax, "no documents")
    else:
        nb, na = sum(before.values()) or 1, sum(after.values()) or 1
        _grouped_bars(
            ax,
            names,
            {
                f"corpus before the mix ({sum(before.values()):,} docs)": [
                    before.get(n, 0) / nb for n in names
                ],
                f"mix ({sum(after.values()):,} rows)": [after.get(n, 0) / na for n in names],
            },
            percent=True,
        )
        ax.set_ylabel("share of documents")
    ax.set_title("Narrative distribution before and after the mix")
    return _png(fig)


def plot_labels(mix: Mapping[str, Any]) -> str:
    """Fired trope labels in the classified corpus and in the mix."""
    fig, ax = _figure()
    before, after = mix["labels_before"], mix["labels_after"]
    names = sorted({*before, *after})
    if not names:
        _empty(ax, "no trope label fired")
    else:
        _grouped_bars(
            ax,
            names,
            {
                "classified corpus": [before.get(n, 0) for n in names],
                "mix (rows)": [after.get(n, 0) for n in names],
            },
        )
        ax.set_ylabel("documents")
    ax.set_title("Trope label counts")
    return _png(fig)


def plot_shares(realized: Mapping[str, Any]) -> str:
    """Target versus realized share per source, over the whole mix."""
    fig, ax = _figure()
    names = sorted(realized)
    if not names:
        _empty(ax, "no sources")
    else:
        _grouped_bars(
            ax,
            names,
            {
                "target": [realized[n]["target_share"] for n in names],
                "realized": [realized[n]["realized_share"] for n in names],
            },
            percent=True,
        )
        ax.set_ylabel("share of rows")
    ax.set_title("Target versus realized share per source")
    return _png(fig)


def plot_shard_shares(realized: Mapping[str, Any]) -> str:
    """Realized share per source in every shard, against the target (dashed)."""
    fig, ax = _figure()
    names = sorted(realized)
    shards = len(realized[names[0]]["per_shard"]) if names else 0
    totals = [sum(realized[n]["per_shard"][i] for n in names) for i in range(shards)]
    if not shards or not any(totals):
        _empty(ax, "no shard rows")
    else:
        xs = list(range(shards))
        for i, n in enumerate(names):
            color = f"C{i % 10}"
            shares = [realized[n]["per_shard"][s] / totals[s] if totals[s] else 0.0 for s in xs]
            ax.plot(xs, shares, marker="o", color=color, label=f"{n} realized")
            ax.axhline(realized[n]["target_share"], color=color, linestyle="--", linewidth=1)
        ax.set_xlabel("shard")
        ax.set_ylabel("share of the shard's rows")
        ax.set_xticks(xs)
        ax.legend(fontsize=8)
        ax.spines[["top", "right"]].set_visible(False)
    ax.set_title("Share per source across shards (dashed: target)")
    return _png(fig)


def plot_drops(mix: Mapping[str, Any]) -> str:
    """Documents dropped by stage and reason, dead letters included."""
    items = [
        (f"{stage} / {reason}", n) for stage, reasons in mix["drops"].items() for reason, n in reasons.items()
    ]
    fig, ax = _figure(7.0, max(2.2, 0.45 * len(items) + 1.0))
    if not items:
        _empty(ax, "nothing dropped")
    else:
        labels, values = zip(*items, strict=True)
        bars = ax.barh(labels, values, color="C3")
        ax.bar_label(bars, labels=[f"{v:,}" for v in values], fontsize=8, padding=2)
        ax.invert_yaxis()
        ax.set_xlabel("documents")
        ax.spines[["top", "right"]].set_visible(False)
    ax.set_title("Documents dropped by stage and reason")
    return _png(fig)


def plot_clusters(mix: Mapping[str, Any]) -> str:
    """Dedup clusters by size (a cluster of size 1 is a document without duplicates)."""
    fig, ax = _figure()
    sizes = {int(k): v for k, v in mix["cluster_sizes"].items()}
    if not sizes:
        _empty(ax, "no source takes part in dedup")
    else:
        xs = sorted(sizes)
        bars = ax.bar([str(x) for x in xs], [sizes[x] for x in xs], color="C2")
        ax.bar_label(bars, labels=[f"{sizes[x]:,}" for x in xs], fontsize=7, padding=1)
        ax.set_yscale("log")
        ax.set_ylim(bottom=0.5)  # bars start below 1, so a single cluster still shows
        ax.set_xlabel("cluster size (documents)")
        ax.set_ylabel("clusters (log scale)")
        ax.spines[["top", "right"]].set_visible(False)
    ax.set_title("Dedup cluster-size histogram")
    return _png(fig)


def plot_throughput(timing_info: Mapping[str, Any] | None) -> str:
    """Documents per second of processing time, per stage."""
    fig, ax = _figure()
    by_stage = (timing_info or {}).get("stages", {})
    stages = [(s, by_stage[s]) for _, s in STAGE_STEPS if by_stage.get(s, {}).get("docs_per_second")]
    if not stages:
        _empty(ax, "this runner reported no per-stage processing time")
    else:
        names = [s for s, _ in stages]
        values = [t["docs_per_second"] for _, t in stages]
        bars = ax.bar(names, values, color="C4")
        ax.bar_label(bars, labels=[f"{v:,.0f}" for v in values], fontsize=8, padding=1)
        ax.set_yscale("log")
        ax.set_ylim(bottom=min(values) / 2)
        ax.set_ylabel("documents / busy second (log scale)")
        ax.spines[["top", "right"]].set_visible(False)
    ax.set_title("Documents per second per stage")
    return _png(fig)


def _rank(order: Sequence[str], name: str) -> int:
    return order.index(name) if name in order else len(order)


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_cell(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.1f}" if abs(value) >= 100 else f"{value:.4f}"
    if isinstance(value, int):
        return f"{value:,}"
    return "" if value is None else str(value)


_STYLE = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1100px;color:#222;padding:0 16px}
h1{font-size:22px;margin-bottom:4px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ddd;padding-bottom:4px}
.ok{color:#17692f}.bad{color:#b00020}.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(480px,1fr));gap:12px}
figure{margin:0}img{max-width:100%;height:auto;border:1px solid #eee}
table{border-collapse:collapse;margin:8px 0;font-size:13px}td,th{border:1px solid #ddd;padding:3px 8px;text-align:right}
th:first-child,td:first-child{text-align:left}pre{background:#f6f6f6;padding:10px;overflow:auto;font-size:12px}
.muted{color:#666;font-size:12px}
"""

# Marks the page once every image has decoded, for headless checks (``--dump-dom``).
_SCRIPT = """
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var good = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  document.body.setAttribute('data-images', good + '/' + imgs.length);
  document.body.setAttribute('data-rendered', good === imgs.length ? 'ok' : 'broken');
});
"""


LENGTH_ORDER = tuple(name for _, name in LENGTH_BUCKETS)


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
    for narrative in _ordered(list(excerpts), NARRATIVE_ORDER):
        rows = [[e["source"], e["id"], e["excerpt"]] for e in excerpts[narrative]]
        parts += [f"<h3>{html.escape(narrative)}</h3>", _table(["source", "id", "excerpt"], rows)]
    return parts


def render_html(report: Mapping[str, Any], manifest: Mapping[str, Any]) -> str:
    """The self-contained ``report.html`` of a run.

    Args:
      report: ``report.json``.
      manifest: ``manifest.json``.
    """
    cons = report["conservation"]
    mix = report["mix"]
    realized = report["realized"]
    timing_info = report.get("timing")
    plots = [
        ("narratives", "Narrative distribution before and after the mix", plot_narratives(mix)),
        ("labels", "Trope label counts", plot_labels(mix)),
        ("shares", "Target versus realized share per source", plot_shares(realized)),
        ("shard-shares", "Share per source across shards", plot_shard_shares(realized)),
        ("drops", "Documents dropped by stage and reason", plot_drops(mix)),
        ("clusters", "Dedup cluster-size histogram", plot_clusters(mix)),
        ("throughput", "Documents per second per stage", plot_throughput(timing_info)),
    ]
    status_class = "ok" if cons["ok"] else "bad"
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<title>tropemix report: {html.escape(report['run_name'])}</title>",
        f"<style>{_STYLE}</style><script>{_SCRIPT}</script></head><body>",
        f"<h1>tropemix run <code>{html.escape(report['run_name'])}</code></h1>",
        f"<p class='{status_class}'><strong>{html.escape(cons['summary'])}</strong></p>",
    ]
    parts.append("<h2>What went in and where it ended</h2>")
    rows = [
        [
            name,
            s["records_in"],
            s["dead_letters"],
            s["documents_read"],
            sum(s["dropped"].values()),
            s["documents_written"],
            s.get("epoch_copies", s["shard_rows"] - s["documents_written"]),
            s["shard_rows"],
        ]
        for name, s in sorted(cons["sources"].items())
    ]
    parts.append(
        _table(
            [
                "source",
                "records in",
                "dead letters",
                "documents",
                "dropped",
                "written",
                "epoch copies",
                "shard rows",
            ],
            rows,
        )
    )
    parts.append(
        "<ul>" + "".join(f"<li><code>{html.escape(line)}</code></li>" for line in cons["lines"]) + "</ul>"
    )
    order = [stage for _, stage in STAGE_STEPS]
    stage_rows = [
        [stage, s["in"], s["out"], s["dropped"]]
        for stage, s in sorted(cons["stages"].items(), key=lambda kv: (_rank(order, kv[0]), kv[0]))
    ]
    parts.append(_table(["stage", "in", "out", "dropped"], stage_rows))
    check = report.get("metrics_check")
    if check is not None:
        verdict = "agree with" if check["ok"] else "DIFFER from"
        parts.append(
            f"<p class='{'ok' if check['ok'] else 'bad'}'>Beam metrics counters {verdict} the ledger counts.</p>"
        )
    parts.append("<h2>Plots</h2><div class='grid'>")
    for anchor, title, data in plots:
        parts.append(
            f"<figure id='{anchor}'><img alt='{html.escape(title)}' src='data:image/png;base64,{data}'></figure>"
        )
    parts.append("</div>")
    parts.extend(narrative_rate_tables(mix))
    parts.extend(excerpt_tables(report.get("excerpts", {})))
    parts.append("<h2>Shares</h2>")
    parts.append(
        _table(
            ["source", "target rows", "realized rows", "target share", "realized share", "rows per shard"],
            [
                [
                    n,
                    r["target"],
                    r["realized"],
                    r["target_share"],
                    r["realized_share"],
                    " ".join(map(str, r["per_shard"])),
                ]
                for n, r in sorted(realized.items())
            ],
        )
    )
    if timing_info:
        parts.append("<h2>Throughput</h2>")
        parts.append(
            f"<p>Wall time {timing_info['wall_seconds']:.1f} s, "
            f"{timing_info['docs_per_second'] or 0:,.1f} records/s end to end. Per stage: documents entering the "
            "stage divided by the processing time Beam attributes to its transforms, summed over workers "
            "(so it is per-worker throughput, not wall-clock).</p>"
        )
        parts.append(
            _table(
                ["stage", "documents in", "busy seconds", "documents / busy second"],
                [
                    [s, t["docs_in"], t["busy_seconds"], t["docs_per_second"]]
                    for _, s in STAGE_STEPS
                    if (t := timing_info["stages"].get(s))
                ],
            )
        )
    parts.append("<h2>Plan</h2>")
    plan = manifest.get("plan") or report.get("plan") or {}
    parts.append(
        f"<p>total {_cell(plan.get('total'))} {html.escape(str(plan.get('unit', '')))}, "
        f"{_cell(plan.get('num_shards'))} shards, seed {_cell(plan.get('seed'))}</p>"
    )
    parts.append(
        _table(
            [
                "source",
                "role",
                "share",
                "budget",
                "available",
                "target",
                "max epochs",
                "epochs",
                "strata (target / available)",
            ],
            [
                [
                    n,
                    p.get("role"),
                    p["share"],
                    p.get("budget"),
                    p["available"],
                    p["target"],
                    p["max_epochs"],
                    round(p["epochs"], 4),
                    ", ".join(
                        f"{st}: {s['target']} / {s['available']}" for st, s in sorted(p["strata"].items())
                    ),
                ]
                for n, p in sorted(plan.get("sources", {}).items())
            ],
        )
    )
    chat = chat_token_summary(report.get("counts", {}))
    if chat:
        parts.append("<h3>Chat sources: tokens of the written copies</h3>")
        parts.append(
            _table(
                ["source", "rendered conversation", "assistant turns"],
                [[n, t.get("conversation", 0), t.get("assistant", 0)] for n, t in chat.items()],
            )
        )
    shards = manifest.get("shards", [])
    parts.append(
        _table(
            ["shard", "rows", "bytes", "sha256"],
            [[s["path"].rsplit("/", 1)[-1], s["rows"], s["bytes"], s["sha256"][:16]] for s in shards],
        )
    )
    metrics = report.get("metrics")
    if metrics and metrics.get("available"):
        parts.append("<h2>Beam metrics</h2><details><summary>counters and distributions</summary>")
        parts.append(_table(["counter", "value"], sorted(metrics["counters"].items())))
        parts.append(
            _table(
                ["distribution", "count", "min", "mean", "max"],
                [
                    [k, d["count"], d["min"], float(d["mean"]), d["max"]]
                    for k, d in metrics["distributions"].items()
                ],
            )
        )
        parts.append("</details>")
    parts.append("<h2>Config</h2>")
    parts.append(f"<pre>{html.escape(yaml.safe_dump(report['config'], sort_keys=False))}</pre>")
    parts.append(
        "<p class='muted'>Generated by tropemix from report.json and manifest.json; "
        "regenerate with <code>tropemix report RUN_DIR</code>.</p></body></html>"
    )
    return "\n".join(parts)


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
