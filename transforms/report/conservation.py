"""The conservation check and the summaries ``report.json`` holds, from the run's counts.

Every function here is pure: it reads the summed counts (``transforms/report/counts.py``)
and the written shards' stats, so tests call it without a runner.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from transforms.report.counts import CountKey, count_key, display_key


class ConservationError(RuntimeError):
    """Documents were lost or invented between reading and writing."""


# The common ending of every JoinIntegrityError message.
JOIN_LOSS = "a shuffle lost records"


class JoinIntegrityError(ConservationError):
    """A join met one side of a document without the other: a shuffle lost records.

    Raised where the loss is seen, so the run stops at the stage instead of at the
    end-of-run check.
    """


def _stage_lines(counts: Mapping[CountKey, int]) -> tuple[bool, dict[str, Any], list[str]]:
    """Per stage: in = out + dropped; returns whether all balance, the stages and the mismatch lines."""
    stages: dict[str, Any] = {}
    for key, n in counts.items():
        if key[0] == "stage":
            _, stage, kind = key
            stages.setdefault(stage, {"in": 0, "out": 0, "dropped": 0})[kind] = n
    ok = True
    lines = []
    for stage, s in sorted(stages.items()):
        balanced = s["in"] == s["out"] + s["dropped"]
        ok &= balanced
        if not balanced:
            lines.append(
                f"MISMATCH stage {stage}: in {s['in']} != out {s['out']} + dropped {s['dropped']} "
                f"(difference {s['in'] - s['out'] - s['dropped']}: {stage} lost documents without "
                "a ledger row or a count)"
            )
    return ok, dict(sorted(stages.items())), lines


def _with_prefix(counts: Mapping[CountKey, int], *prefix: str) -> dict[CountKey, int]:
    """The counts whose key starts with the fields ``prefix``, keyed by the fields after it."""
    n = len(prefix)
    return {key[n:]: value for key, value in counts.items() if key[:n] == prefix and len(key) > n}


def _source_balance(counts: Mapping[CountKey, int], source: str) -> tuple[bool, dict[str, Any], list[str]]:
    """One source's balance: whether it holds, its ``report.json`` entry and its lines."""
    read = counts.get(count_key("read_docs", source), 0)
    dead = counts.get(count_key("dead_letters", source), 0)
    written = counts.get(count_key("shard_docs", source), 0)
    rows = counts.get(count_key("shard_rows", source), 0)
    ledger_written = counts.get(count_key("ledger", source, "written"), 0)
    ledger_copies = counts.get(count_key("ledger_copies", source), 0)
    drops = _with_prefix(counts, "ledger", source, "dropped")  # (stage, reason) -> documents
    dropped = sum(drops.values())
    # Readers count what they saw before parsing; without their counts (a bare test) there is nothing to compare.
    seen = counts.get(count_key("read_seen", source), read + dead)
    bad_files = {key[0]: n for key, n in _with_prefix(counts, "read_file_mismatch", source).items()}
    balanced = read == written + dropped and ledger_written == written and ledger_copies == rows
    read_balanced = seen == read + dead and not bad_files
    entry = {
        "records_seen": seen,
        "files_read": counts.get(count_key("read_files", source), 0),
        "records_in": read + dead,
        "documents_read": read,
        "dead_letters": dead,
        "documents_written": written,
        "shard_rows": rows,
        "epoch_copies": rows - written,
        "dropped": {display_key(key): n for key, n in sorted(drops.items())},
    }
    reasons = ", ".join(f"{stage}/{reason} {n}" for (stage, reason), n in sorted(drops.items()))
    line = (
        f"{'OK' if balanced else 'MISMATCH'} {source}: in {read + dead} = shard rows {rows} - epoch copies "
        f"{rows - written} + dropped {dropped}{f' ({reasons})' if reasons else ''} + dead letters {dead}"
    )
    if not balanced:
        line += (
            f" (difference {read - written - dropped}; ledger written rows {ledger_written}, "
            f"ledger copies {ledger_copies} vs shard rows {rows})"
        )
    lines = [line]
    if not read_balanced:
        lines.append(f"MISMATCH {source}: readers saw {seen} records, passed on {read} + dead letters {dead}")
    for path, diff in sorted(bad_files.items()):
        lines.append(
            f"MISMATCH {source}: file {path}: {diff} records seen but neither passed on nor dead-lettered"
        )
    return balanced and read_balanced, entry, lines


def check_conservation(counts: Mapping[CountKey, int], sources: Iterable[str]) -> dict[str, Any]:
    """Checks that every input record ended in exactly one place.

    Per source: records the readers saw = documents read + dead letters, for the
    source and for each of its files (``read_file_mismatch`` keys); records in =
    shard rows - epoch copies (repeats of a document) + ledger drops by stage and
    reason + dead letters; the ledger's ``written`` rows must equal the documents
    in shards and their copies the shard rows.  Per stage: in = out + dropped.

    Args:
      counts: count keys -> totals.
      sources: source names.

    Returns:
      ``ok``, ``summary`` (one line), ``lines`` (one or more per source, then the
      stages that do not balance), ``sources`` (source -> its balance) and ``stages``
      (stage -> ``in``/``out``/``dropped``).
    """
    lines: list[str] = []
    ok = True
    per_source: dict[str, Any] = {}
    for source in sorted(sources):
        source_ok, per_source[source], source_lines = _source_balance(counts, source)
        ok &= source_ok
        lines.extend(source_lines)
    stages_ok, stages, stage_lines = _stage_lines(counts)
    ok &= stages_ok
    lines.extend(stage_lines)
    total_in = sum(p["records_in"] for p in per_source.values())
    total_written = sum(p["documents_written"] for p in per_source.values())
    total_dropped = sum(sum(p["dropped"].values()) for p in per_source.values())
    total_dead = sum(p["dead_letters"] for p in per_source.values())
    summary = (
        f"conservation {'OK' if ok else 'FAILED'}: {total_in} records in = {total_written} written "
        f"+ {total_dropped} dropped + {total_dead} dead letters"
    )
    return {"ok": ok, "summary": summary, "lines": lines, "sources": per_source, "stages": stages}


def realized_shares(plan: Mapping[str, Any], shards: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Target versus realized units (the plan's documents, bytes or tokens) per source, globally and per shard."""
    ordered = sorted(shards, key=lambda s: s["shard"])
    units = [s["units_by_source"] for s in ordered]
    totals: dict[str, int] = {}
    for u in units:
        for source, n in u.items():
            totals[source] = totals.get(source, 0) + n
    grand = sum(totals.values()) or 1
    out: dict[str, Any] = {}
    for name, p in plan["sources"].items():
        realized = totals.get(name, 0)
        out[name] = {
            "unit": plan["unit"],
            "target": p["target"],
            "realized": realized,
            "target_share": p["target_share"],
            "realized_share": realized / grand,
            "per_shard_target": p["shard_targets"],
            "per_shard": [u.get(name, 0) for u in units],
            "per_shard_documents": [s["by_source"].get(name, 0) for s in ordered],
        }
    return out


def _sum_maps(maps: Iterable[Mapping[str, int]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for m in maps:
        for k, n in m.items():
            out[k] = out.get(k, 0) + n
    return dict(sorted(out.items()))


def _sorted_nested(groups: Mapping[str, Mapping[str, int]]) -> dict[str, dict[str, int]]:
    return {k: dict(sorted(v.items())) for k, v in sorted(groups.items())}


def mix_summary(counts: Mapping[CountKey, int], shards: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """What the report plots: the corpus before the mix against the mix itself.

    Args:
      counts: count keys -> totals.
      shards: stats of the written shards.

    Returns:
      ``narratives_before`` (documents by narrative after classification, before
      policy, dedup and blend), ``narratives_by_length`` and ``narratives_by_language``
      (the same for classified sources, per length bucket and per lid.176 language), ``narratives_after`` (shard rows by narrative),
      ``labels_before``/``labels_after`` (fired trope labels), ``drops`` (stage ->
      reason -> documents) and ``cluster_sizes`` (cluster size -> clusters, over
      the sources that take part in dedup).
    """
    before: dict[str, int] = {}
    by_length: dict[str, dict[str, int]] = {}
    by_lang: dict[str, dict[str, int]] = {}
    labels_before: dict[str, int] = {}
    drops: dict[str, dict[str, int]] = {}
    cluster_sizes: dict[int, int] = {}
    for key, n in counts.items():
        if key[0] == "narrative_in":
            _, _, narrative = key
            before[narrative] = before.get(narrative, 0) + n
        elif key[0] == "narrative_len":
            by_length.setdefault(key[1], {})[key[2]] = n
        elif key[0] == "narrative_lang":
            by_lang.setdefault(key[1], {})[key[2]] = n
        elif key[0] == "label_in":
            labels_before[key[1]] = n
        elif key[0] == "ledger" and key[2] == "dropped":
            _, _, _, stage, reason = key
            by_reason = drops.setdefault(stage, {})
            by_reason[reason] = by_reason.get(reason, 0) + n
        elif key[0] == "dead_reason":
            drops.setdefault(key[1], {})[key[2]] = n
        elif key[0] == "cluster_docs":
            size = int(key[1])
            cluster_sizes[size] = n // size if size else n
    return {
        "narratives_before": dict(sorted(before.items())),
        "narratives_by_length": _sorted_nested(by_length),
        "narratives_by_language": _sorted_nested(by_lang),
        "narratives_after": _sum_maps(s.get("by_narrative", {}) for s in shards),
        "labels_before": dict(sorted(labels_before.items())),
        "labels_after": _sum_maps(s.get("by_trope", {}) for s in shards),
        "drops": _sorted_nested(drops),
        "cluster_sizes": {str(k): v for k, v in sorted(cluster_sizes.items())},
    }


def realized_narratives(shards: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Units per narrative in the written shards, and the aligned share among aligned + misaligned."""
    totals: dict[str, int] = {}
    for s in shards:
        for narrative, n in s["units_by_narrative"].items():
            totals[narrative] = totals.get(narrative, 0) + n
    aligned, misaligned = totals.get("aligned", 0), totals.get("misaligned", 0)
    return {
        "units": dict(sorted(totals.items())),
        "aligned_share": aligned / (aligned + misaligned) if aligned + misaligned else None,
    }
