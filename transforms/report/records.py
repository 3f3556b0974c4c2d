"""The run's records: ``manifest.json`` and ``report.json``, written once every shard is.

``WriteRunRecords`` sums the run's counts (``transforms/report/counts.py``), checks
conservation, writes both files and then fails the job when documents went missing.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from transforms.blend.plan_model import BlendPlan
from transforms.io.chat import chat_token_summary
from transforms.io.write import write_atomically
from transforms.report.conservation import (
    ConservationError,
    check_conservation,
    mix_summary,
    realized_narratives,
    realized_shares,
)
from transforms.report.counts import CountKey, display_key
from transforms.report.metrics import expected_counters


def read_json(path: str) -> dict[str, Any]:
    """A JSON file from any ``FileSystems`` path."""
    with FileSystems.open(path) as f:
        data: dict[str, Any] = json.loads(f.read().decode("utf-8"))
        return data


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
        counts: dict[CountKey, int],
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
            "chat_tokens": chat_token_summary(counts),
            # What the driver checks Beam's counters against once the job has finished.
            "expected_counters": expected_counters(counts, self._config["output"]["shard_prefix"]),
            # For reading only: code reads the structured fields above, not these keys.
            "counts": {display_key(key): n for key, n in sorted(counts.items())},
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
      counts: ``(count key, n)`` pairs from every stage.
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
