"""What only the runner knows, added to ``report.json`` after the job: Beam metrics and timing.

``report.json`` is written inside the pipeline (``transforms/report/records.py``) from
counts taken off the PCollections themselves; that check is the authority.  After
the job finishes the driver adds:

- ``metrics``: every ``tropemix.*`` counter and distribution from
  ``PipelineResult.metrics()`` (committed values, attempted where a runner has no
  committed ones), and a cross-check of those counters against the values the
  in-pipeline counts expect (``expected_counters``);
- ``timing``: the run's wall time and, per stage, the processing time Beam's own
  execution-time metric attributes to the stage's transforms, summed over workers
  (reported by the in-process runner; other runners leave it out).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from transforms.logs import stage_logger
from transforms.report.counts import CountKey

_LOG = stage_logger("report")

# Stage -> the paths of its composites in the job graph (pipelines/mix.py); ``{source}``
# stands for each source's name.  A step belongs to a stage when its path starts with one
# of these paths component by component, so ``BuildMix/WriteOutputs/WriteDedupIndex`` is not dedup.
STAGE_LABELS: dict[str, tuple[str, ...]] = {
    "read": ("BuildMix/ReadAndLabel/Read[{source}]",),
    "decontaminate": ("BuildMix/ReadAndLabel/Decontaminate[{source}]",),
    "classify": ("BuildMix/ReadAndLabel/Classify[{source}]",),
    "policy": ("BuildMix/ReadAndLabel/Policy[{source}]",),
    "dedup": ("BuildMix/Deduplicate/Dedup",),
    "blend": ("BuildMix/Blend",),
    "write": ("BuildMix/WriteOutputs/WriteShards",),
}
STAGES = tuple(STAGE_LABELS)
_EXECUTION_TIME = "metric:ptransform_execution_time:total_msecs:v1"


def step_stages(sources: Iterable[str]) -> dict[str, str]:
    """Composite path -> stage, for a run of ``sources``.

    Args:
      sources: the config's source names.
    """
    names = list(sources)
    out: dict[str, str] = {}
    for stage, labels in STAGE_LABELS.items():
        for label in labels:
            for name in names if "{source}" in label else [""]:
                out[label.format(source=name)] = stage
    return out


def _value(metric: Any) -> Any:
    return metric.committed if metric.committed is not None else metric.attempted


def _distributions(query: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """``tropemix.*`` distributions summed over steps, with their mean."""
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
    return dict(sorted(distributions.items()))


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
    return {
        "available": True,
        "counters": dict(sorted(counters.items())),
        "distributions": _distributions(query),
        "missing": list(getattr(result, "missing_metrics", ())),
    }


def stage_busy_seconds(result: Any, sources: Iterable[str]) -> dict[str, float]:
    """Processing seconds per stage from Beam's execution-time metric, summed over workers.

    Empty when the runner does not expose it (only the in-process runner's result
    has ``monitoring_metrics``).

    Args:
      result: a finished ``PipelineResult``.
      sources: the config's source names (they name the per-source composites).
    """
    monitoring = getattr(result, "monitoring_metrics", None)
    if monitoring is None:
        return {}
    try:
        counters = monitoring().query()["counters"]
    except Exception as err:  # advisory, as in collect_metrics
        _LOG.warning("execution times unavailable", error=type(err).__name__)
        return {}
    return busy_seconds(
        (
            (m.key.step or "", (_value(m) or 0) / 1000.0)
            for m in counters
            if m.key.metric.name == _EXECUTION_TIME
        ),
        step_stages(sources),
    )


def busy_seconds(steps: Iterable[tuple[str, float]], stages: Mapping[str, str]) -> dict[str, float]:
    """Seconds per stage of ``(step path, seconds)`` pairs, by the stage composite the step is in.

    Args:
      steps: each step's full label (``Deduplicate/Dedup/Keys/...``) and its processing seconds.
      stages: composite path -> stage (``step_stages``).
    """
    busy: dict[str, float] = {}
    for step, seconds in steps:
        parts = step.split("/")
        paths = ("/".join(parts[: i + 1]) for i in range(len(parts)))
        stage = next((stages[path] for path in paths if path in stages), None)
        if stage is not None:
            busy[stage] = busy.get(stage, 0.0) + seconds
    return busy


def stage_inputs(report: Mapping[str, Any]) -> dict[str, int]:
    """Documents entering each stage, from the in-pipeline counts."""
    conservation = report["conservation"]
    stages = conservation["stages"]
    sources = conservation["sources"].values()
    out = {"read": sum(s["records_in"] for s in sources)}
    for stage in STAGES[1:]:
        if stage in stages:
            out[stage] = stages[stage]["in"]
    if "write" not in out:
        out["write"] = sum(s["shard_rows"] for s in sources)
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
    for stage in STAGES:
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


def expected_counters(counts: Mapping[CountKey, int], shard_prefix: str) -> dict[str, int]:
    """The Beam counters that count what the in-pipeline counts count, with their values.

    Args:
      counts: count keys -> totals.
      shard_prefix: ``output.shard_prefix``, which names the shard writer's counters.
    """
    expected: dict[str, int] = {}

    def add(metric: str, n: int) -> None:
        expected[metric] = expected.get(metric, 0) + n

    rows = 0
    for key, n in sorted(counts.items()):
        if key[0] == "read_docs":
            add(f"tropemix.read/docs.{key[1]}", n)
        elif key[0] == "dead_letters":
            add(f"tropemix.read/dead_letters.{key[1]}", n)
        elif key[0] == "ledger" and key[2] == "dropped":
            _, source, _, stage, reason = key
            add(
                f"tropemix.blend/{reason}.{source}"
                if stage == "blend"
                else f"tropemix.{stage}/dropped.{reason}",
                n,
            )
        elif key[0] == "shard_rows":
            rows += n
    add(f"tropemix.write/rows.{shard_prefix}", rows)
    return expected


def metrics_check(counters: Mapping[str, int], expected: Mapping[str, int]) -> dict[str, Any]:
    """Compares Beam counters with the values the in-pipeline counts expect of them.

    Advisory: a runner may report partial or attempted metrics, so a difference is
    a warning, while the in-pipeline conservation check decides the run.

    Args:
      counters: ``ns/name`` -> value from ``collect_metrics``.
      expected: ``ns/name`` -> value, ``report.json``'s ``expected_counters``.
    """
    checks = []
    for metric, n in expected.items():
        value = counters.get(metric, 0)
        checks.append({"metric": metric, "metric_value": value, "counted": n, "ok": value == n})
    return {"ok": all(c["ok"] for c in checks), "checks": checks}


def augment_report(
    report: dict[str, Any], metrics: dict[str, Any], busy: Mapping[str, float], wall_seconds: float
) -> dict[str, Any]:
    """``report`` with ``metrics``, ``metrics_check`` and ``timing`` added."""
    out = dict(report)
    out["metrics"] = metrics
    if metrics["available"]:
        out["metrics_check"] = metrics_check(metrics["counters"], report["expected_counters"])
    out["timing"] = timing(report, busy, wall_seconds)
    return out
