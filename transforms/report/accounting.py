"""Accounting: ledger rows, count collection, the conservation check, manifest and report.

Counts are gathered inside the pipeline as ``(key, n)`` pairs from the PCollections
themselves (documents read, dead letters, ledger rows, rows actually written to
shards), so the check works on every runner, including those whose metrics are
partial.  ``WriteRunRecords`` writes ``manifest.json`` and ``report.json`` and
then fails the job when documents went missing.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import apache_beam as beam
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import MIN_TIMESTAMP
from apache_beam.utils.windowed_value import WindowedValue

from schemas.records import Document, LedgerRow
from transforms.blend.plan_model import BlendPlan
from transforms.io.write import write_atomically


class ConservationError(RuntimeError):
    """Documents were lost or invented between reading and writing."""


# The common ending of every JoinIntegrityError message.
JOIN_LOSS = "a shuffle lost records"


class JoinIntegrityError(ConservationError):
    """A join met one side of a document without the other: a shuffle lost records.

    Raised where the loss is seen, so the run stops at the stage instead of at the
    end-of-run check.
    """


def truncation_note(doc: Mapping[str, Any], detail: str = "") -> str:
    """``detail`` plus ``truncated_from=<bytes>`` when the reader cut the document's text.

    Args:
      doc: a document or a dedup stub.
      detail: the row's own detail.
    """
    if "truncated_from" not in doc:
        return detail
    note = f"truncated_from={doc['truncated_from']}"
    return f"{detail}; {note}" if detail else note


def ledger_drop(doc: Document, stage: str, reason: str, detail: str = "") -> LedgerRow:
    """The ledger row of a document dropped at ``stage`` for ``reason``.

    Args:
      doc: the document.
      stage: ``policy``, ``dedup`` or ``blend``.
      reason: short reason, also a counter name.
      detail: free text such as ``duplicate_of=<id>``.
    """
    return LedgerRow(
        id=doc["id"],
        source=doc["source"],
        fate="dropped",
        stage=stage,
        reason=reason,
        detail=truncation_note(doc, detail),
        narrative=doc.get("narrative", "none"),
        cluster_id=doc.get("cluster_id", ""),
        cluster_size=doc.get("cluster_size", 0),
        copies=0,
    )


def count_key(*parts: str) -> str:
    """Flat counter key such as ``ledger|web|dropped|dedup|near_duplicate``."""
    return "|".join(parts)


class _SumInBundleFn(beam.DoFn):
    """Sums an element's ``(key, n)`` pairs per bundle and emits the partial sums when the bundle ends."""

    def __init__(self, pairs: Callable[[Any], Iterable[tuple[str, int]]]) -> None:
        self._pairs = pairs
        self._counts: dict[str, int] = {}

    def start_bundle(self) -> None:
        self._counts = {}

    def process(self, element: Any) -> None:
        for key, n in self._pairs(element):
            self._counts[key] = self._counts.get(key, 0) + n

    def finish_bundle(self) -> Iterator[WindowedValue]:
        for key, n in sorted(self._counts.items()):
            yield WindowedValue((key, n), MIN_TIMESTAMP, (GlobalWindow(),))


class SumBy(beam.PTransform):
    """Sums the ``(key, n)`` pairs of each element: partial sums per bundle, summed by ``WriteRunRecords``.

    The partial sums are per bundle, so a key may appear several times.  The run
    counts from about twenty PCollections, and a ``CombinePerKey`` each would add
    twenty shuffles (a fused stage each on the in-process runner, ~80 ms of CPU
    apiece) for sums that the report's single ``CombinePerKey`` computes anyway; and
    a pair per element would move as many elements as the counted PCollection.
    Counting needs the global window, which every PCollection of the mix uses.

    Args:
      pairs: element -> ``(counter key, n)`` pairs.
    """

    def __init__(self, pairs: Callable[[Any], Iterable[tuple[str, int]]]) -> None:
        super().__init__()
        self._pairs = pairs

    def expand(self, pcoll: beam.PCollection) -> beam.PCollection:
        return pcoll | "Sum" >> beam.ParDo(_SumInBundleFn(self._pairs))


class CountBy(beam.PTransform):
    """Counts elements by a key function (``SumBy`` with one ``(key, 1)`` pair per element).

    Args:
      key: element -> counter key string.
    """

    def __init__(self, key: Callable[[Any], str]) -> None:
        super().__init__()
        self._key = key

    def expand(self, pcoll: beam.PCollection) -> beam.PCollection:
        key = self._key
        return pcoll | "Count" >> beam.ParDo(_SumInBundleFn(lambda element: ((key(element), 1),)))


def shard_counts(stats: Mapping[str, Any]) -> Iterator[tuple[str, int]]:
    """Counter pairs from one shard's stats: rows and first copies per source, rows written."""
    for source, n in stats["by_source"].items():
        yield count_key("shard_rows", source), n
    for source, n in stats["first_copies_by_source"].items():
        yield count_key("shard_docs", source), n
    yield count_key("stage", "write", "out"), stats["rows"]


def ledger_counts(row: Mapping[str, Any]) -> Iterator[tuple[str, int]]:
    """Counter pairs from one ledger row: its fate (and stage and reason), and copies written."""
    source = row["source"]
    if row["fate"] == "written":
        yield count_key("ledger", source, "written"), 1
        yield count_key("ledger_copies", source), int(row["copies"])
    else:
        yield count_key("ledger", source, "dropped", row["stage"], row["reason"]), 1


def _stage_lines(counts: Mapping[str, int]) -> tuple[bool, dict[str, Any], list[str]]:
    stages: dict[str, Any] = {}
    for key, n in counts.items():
        if key.startswith("stage|"):
            _, stage, kind = key.split("|")
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


def check_conservation(counts: Mapping[str, int], sources: Iterable[str]) -> dict[str, Any]:
    """Checks that every input record ended in exactly one place.

    Per source: records the readers saw = documents read + dead letters, for the
    source and for each of its files (``read_file_mismatch`` keys); records in =
    shard rows - epoch copies (repeats of a document) + ledger drops by stage and
    reason + dead letters; the ledger's ``written`` rows must equal the documents
    in shards and their copies the shard rows.  Per stage: in = out + dropped.

    Args:
      counts: flat counter keys -> totals.
      sources: source names.
    """
    lines: list[str] = []
    ok = True
    per_source: dict[str, Any] = {}
    for source in sorted(sources):
        read = counts.get(count_key("read_docs", source), 0)
        dead = counts.get(count_key("dead_letters", source), 0)
        written = counts.get(count_key("shard_docs", source), 0)
        rows = counts.get(count_key("shard_rows", source), 0)
        ledger_written = counts.get(count_key("ledger", source, "written"), 0)
        ledger_copies = counts.get(count_key("ledger_copies", source), 0)
        drops = {
            key.split("|", 3)[3]: n
            for key, n in counts.items()
            if key.startswith(count_key("ledger", source, "dropped") + "|")
        }
        dropped = sum(drops.values())
        # Readers count what they saw before parsing; without their counts (a bare test) there is nothing to compare.
        seen = counts.get(count_key("read_seen", source), read + dead)
        bad_files = {
            key.split("|", 2)[2]: n
            for key, n in counts.items()
            if key.startswith(count_key("read_file_mismatch", source) + "|")
        }
        balanced = read == written + dropped and ledger_written == written and ledger_copies == rows
        read_balanced = seen == read + dead and not bad_files
        ok &= balanced and read_balanced
        per_source[source] = {
            "records_seen": seen,
            "files_read": counts.get(count_key("read_files", source), 0),
            "records_in": read + dead,
            "documents_read": read,
            "dead_letters": dead,
            "documents_written": written,
            "shard_rows": rows,
            "epoch_copies": rows - written,
            "dropped": dict(sorted(drops.items())),
        }
        mark = "OK" if balanced else "MISMATCH"
        reasons = ", ".join(f"{k.replace('|', '/')} {n}" for k, n in sorted(drops.items()))
        line = (
            f"{mark} {source}: in {read + dead} = shard rows {rows} - epoch copies {rows - written} "
            f"+ dropped {dropped}{f' ({reasons})' if reasons else ''} + dead letters {dead}"
        )
        if not balanced:
            line += (
                f" (difference {read - written - dropped}; ledger written rows {ledger_written}, "
                f"ledger copies {ledger_copies} vs shard rows {rows})"
            )
        lines.append(line)
        if not read_balanced:
            lines.append(
                f"MISMATCH {source}: readers saw {seen} records, passed on {read} + dead letters {dead}"
            )
        for path, diff in sorted(bad_files.items()):
            lines.append(
                f"MISMATCH {source}: file {path}: {diff} records seen but neither passed on nor dead-lettered"
            )
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


def mix_summary(counts: Mapping[str, int], shards: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """What the report plots: the corpus before the mix against the mix itself.

    Args:
      counts: flat counter keys -> totals.
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
        parts = key.split("|")
        if parts[0] == "narrative_in":
            before[parts[2]] = before.get(parts[2], 0) + n
        elif parts[0] == "narrative_len":
            by_length.setdefault(parts[1], {})[parts[2]] = n
        elif parts[0] == "narrative_lang":
            by_lang.setdefault(parts[1], {})[parts[2]] = n
        elif parts[0] == "label_in":
            labels_before[parts[1]] = n
        elif parts[0] == "ledger" and parts[2] == "dropped":
            by_reason = drops.setdefault(parts[3], {})
            by_reason[parts[4]] = by_reason.get(parts[4], 0) + n
        elif parts[0] == "dead_reason":
            drops.setdefault(parts[1], {})[parts[2]] = n
        elif parts[0] == "cluster_docs":
            size = int(parts[1])
            cluster_sizes[size] = n // size if size else n
    return {
        "narratives_before": dict(sorted(before.items())),
        "narratives_by_length": {k: dict(sorted(v.items())) for k, v in sorted(by_length.items())},
        "narratives_by_language": {k: dict(sorted(v.items())) for k, v in sorted(by_lang.items())},
        "narratives_after": _sum_maps(s.get("by_narrative", {}) for s in shards),
        "labels_before": dict(sorted(labels_before.items())),
        "labels_after": _sum_maps(s.get("by_trope", {}) for s in shards),
        "drops": {stage: dict(sorted(r.items())) for stage, r in sorted(drops.items())},
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


class _WriteRecordsFn(beam.DoFn):
    def __init__(
        self, output: str, published: str, run_name: str, config: dict[str, Any], sources: list[str]
    ) -> None:
        self._output = output.rstrip("/")
        self._published = published.rstrip("/")
        self._run_name = run_name
        self._config = config
        self._sources = sources

    def process(
        self,
        plan: BlendPlan,
        counts: dict[str, int],
        shards: list[dict[str, Any]],
        excerpts: list[dict[str, Any]],
    ) -> Iterator[dict[str, Any]]:
        # Files are named where they will be read: under the published path, not the staging one.
        shards = [
            {**s, "path": self._published + s["path"][len(self._output) :]}
            for s in sorted(shards, key=lambda s: s["shard"])
        ]
        conservation = check_conservation(counts, self._sources)
        plan_json = plan.to_dict()
        manifest = {"run_name": self._run_name, "plan": plan_json, "shards": shards}
        report = {
            "run_name": self._run_name,
            "status": "ok" if conservation["ok"] else "conservation_failed",
            "conservation": conservation,
            "realized": realized_shares(plan_json, shards),
            "mix": mix_summary(counts, shards),
            "realized_narratives": realized_narratives(shards),
            "counts": dict(sorted(counts.items())),
            "plan": plan_json,
            "config": self._config,
        }
        if excerpts:
            report["excerpts"] = excerpts[0]
        write_atomically(
            f"{self._output}/manifest.json", json.dumps(manifest, indent=2, sort_keys=True).encode()
        )
        write_atomically(f"{self._output}/report.json", json.dumps(report, indent=2, sort_keys=True).encode())
        if not conservation["ok"]:
            raise ConservationError(
                conservation["summary"]
                + "\n"
                + "\n".join(line for line in conservation["lines"] if "MISMATCH" in line)
            )
        yield report


class WriteRunRecords(beam.PTransform):
    """Writes ``manifest.json`` and ``report.json`` once every shard is written.

    Applied to the one ``BlendPlan``; both files hold its ``to_dict()`` form.
    Fails the job with ``ConservationError`` after writing the report when the
    counts do not balance.

    Args:
      output: directory the run writes to (its staging directory).
      published: where the run is published; the manifest names files there.
      run_name: name recorded in both files.
      config: the run config as a JSON-able dict.
      sources: source names.
      counts: ``(key, n)`` pairs from every stage.
      shards: stats dicts of the written shards.
      excerpts: the one dict of ``SampleExcerpts`` (``output.report_excerpts``), or None.
    """

    def __init__(
        self,
        output: str,
        published: str,
        run_name: str,
        config: dict[str, Any],
        sources: list[str],
        counts: beam.PCollection,
        shards: beam.PCollection,
        excerpts: beam.PCollection | None = None,
    ) -> None:
        super().__init__()
        self._fn = _WriteRecordsFn(output, published, run_name, config, sources)
        self._counts = counts
        self._shards = shards
        self._excerpts = excerpts

    def expand(self, plan: beam.PCollection) -> beam.PCollection:
        counts = (
            self._counts | "SumCounts" >> beam.CombinePerKey(sum) | "CountsDict" >> beam.combiners.ToDict()
        )
        excerpts = (
            self._excerpts if self._excerpts is not None else plan.pipeline | "NoExcerpts" >> beam.Create([])
        )
        return plan | "WriteRecords" >> beam.ParDo(
            self._fn,
            counts=beam.pvalue.AsSingleton(counts),
            shards=beam.pvalue.AsList(self._shards),
            excerpts=beam.pvalue.AsList(excerpts),
        )
