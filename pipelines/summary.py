"""What ``tropemix plan`` and ``tropemix run`` print: the plan table and the run summary."""

from __future__ import annotations

from typing import Any

from schemas.config import MixConfig


def format_plan(plan: dict[str, Any]) -> list[str]:
    """The plan as printed by ``tropemix plan``: per source, then narrative balance and tropes."""
    unit = plan["unit"]
    lines = [
        f"plan: {plan['total']} {unit} in {plan['num_shards']} shards (seed {plan['seed']})"
        + (f", tokenizer {plan['tokenizer']}" if plan.get("tokenizer") else "")
    ]
    lines.append(
        f"  {'source':<16}{'role':<16}{'available':>14}{'target':>14}{'share':>9}{'epochs needed':>24}"
        "  strata (available -> target)"
    )
    for name, s in sorted(plan["sources"].items()):
        strata = ", ".join(f"{st} {v['available']} -> {v['target']}" for st, v in sorted(s["strata"].items()))
        lines.append(
            f"  {name:<16}{s.get('role') or '':<16}{s['available']:>14}{s['target']:>14}"
            f"{s['target_share']:>9.4f}{epochs_needed(s):>24}  {strata}"
        )
    balance = plan.get("narrative_balance")
    if balance:
        b, a = balance["before"], balance["planned"]
        lines.append(
            f"narrative balance (aligned / (aligned + misaligned) >= {balance['min_aligned_share']}, "
            f"strategy {balance['strategy']}):"
        )
        lines.append(
            f"  before: aligned {b['aligned']}, misaligned {b['misaligned']}, share {b['aligned_share']:.4f}"
        )
        lines.extend(f"  {action}" for action in balance["actions"])
        lines.append(
            f"  planned: aligned {a['aligned']}, misaligned {a['misaligned']}, share {a['aligned_share']:.4f}"
        )
    for trope, t in sorted(plan.get("trope_matching", {}).items()):
        lines.append(
            f"  trope {trope}: web misaligned {t['web_misaligned']} {unit} ({t['web_share']:.2%}) -> "
            f"counter-stories {t['counter_stories']} {unit} ({t['counter_share']:.2%})"
        )
    return lines


def epochs_needed(source: dict[str, Any]) -> str:
    """``2.35 of max 10 (budget)``: the passes over a source its target needs, against its cap."""
    how = "budget" if source.get("budget") is not None else "share"
    return f"{source['epochs']:.2f} of max {source['max_epochs']} ({how})"


def summary_lines(cfg: MixConfig, report: dict[str, Any]) -> list[str]:
    """The short summary every run ends with."""
    out = cfg.output.path.rstrip("/")
    lines = [
        f"shards:       {out}/shards/ ({sum(r['realized'] for r in report['realized'].values())} {cfg.blend.unit})",
        f"report:       {out}/report.html ({out}/report.json)",
        f"ledger:       {out}/ledger/",
        f"dead letters: {out}/dead_letter/",
    ]
    for name, r in sorted(report["realized"].items()):
        lines.append(
            f"  {name}: {r['realized']} {r['unit']}, share {r['realized_share']:.4f} (target {r['target_share']:.4f}, {r['target']} {r['unit']})"
        )
    timing_info = report.get("timing")
    if timing_info and timing_info["docs_per_second"]:
        lines.append(
            f"time:         {timing_info['wall_seconds']:.1f} s, {timing_info['docs_per_second']:,.0f} records/s"
        )
    for name, tokens in report["chat_tokens"].items():
        lines.append(
            f"  {name} (chat): {tokens.get('conversation', 0)} tokens rendered, "
            f"{tokens.get('assistant', 0)} in assistant turns"
        )
    lines.append(report["conservation"]["summary"])
    lines.extend("  " + line for line in report["conservation"]["lines"])
    check = report.get("metrics_check")
    if check is not None and not check["ok"]:
        for c in check["checks"]:
            if not c["ok"]:
                lines.append(
                    f"warning: Beam counter {c['metric']} = {c['metric_value']} but the ledger counts {c['counted']}"
                )
    return lines
