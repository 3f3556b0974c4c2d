"""The plots of ``report.html``: matplotlib figures returned as base64 PNG, one function each.

Each takes a part of ``report.json`` and draws a placeholder message when that part
is empty, so the page always shows every plot.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence
from typing import Any

from transforms.report.metrics import STAGES

NARRATIVE_ORDER = ("misaligned", "mixed", "aligned", "ai_nonnarrative", "none")


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


def ordered(keys: Sequence[str], order: Sequence[str]) -> list[str]:
    """``keys`` named in ``order`` first, in that order, then the rest sorted."""
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
    names = ordered(list({*before, *after}), NARRATIVE_ORDER)
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
    stages = [(s, by_stage[s]) for s in STAGES if by_stage.get(s, {}).get("docs_per_second")]
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
