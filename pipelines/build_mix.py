"""The main tropemix DAG: read, classify, apply policy, dedup, blend, write, account.

Run it on the in-process runner (the default; the plain DirectRunner would try to
download the Prism runner first)::

    python -m pipelines.build_mix --config examples/demo.yaml
    python -m pipelines.build_mix --config examples/demo.yaml --direct_num_workers=2 \
        --direct_running_mode=multi_processing

On Dataflow (paths in the config must be ``gs://``)::

    python -m pipelines.build_mix --config gs-config.yaml --runner=DataflowRunner \
        --project=PROJECT --region=REGION --temp_location=gs://BUCKET/tmp \
        --setup_file=./setup.py

On Flink, through the Beam Flink job server::

    python -m pipelines.build_mix --config examples/demo.yaml --runner=FlinkRunner \
        --flink_master=localhost:8081 --environment_type=LOOPBACK

Everything after ``--config FILE`` is a Beam pipeline option.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import (
    GoogleCloudOptions,
    PipelineOptions,
    StandardOptions,
    TestOptions,
)

from schemas.config import MixConfig, load_config
from schemas.records import LEDGER_SCHEMA
from transforms.accounting import CountBy, WriteRunRecords, count_key, shard_counts
from transforms.blend import BlendSources, order_key
from transforms.classify import ApplyPolicy, ClassifyDocuments
from transforms.dedup import DedupDocuments
from transforms.read import ReadSource
from transforms.text import stable_hash
from transforms.write import (
    WriteSortedFiles,
    describe_shard,
    encode_jsonl,
    ledger_row,
    parquet_encoder,
    shard_format,
)

DEFAULT_RUNNER = "apache_beam.runners.portability.fn_api_runner.FnApiRunner"


def pipeline_options(beam_args: Sequence[str]) -> PipelineOptions:
    """Beam options from the command line, defaulting to the in-process FnApiRunner."""
    options = PipelineOptions(list(beam_args))
    standard = options.view_as(StandardOptions)
    if not standard.runner:
        standard.runner = DEFAULT_RUNNER
    return options


def _unclassified(doc: dict[str, Any], narrative: str) -> dict[str, Any]:
    return {**doc, "narrative": narrative, "tropes": [], "trope_scores": {}}


def _flatten(p: beam.Pipeline, pcolls: list[beam.PCollection], label: str) -> beam.PCollection:
    """Flatten that also works for an empty list (a config may have no classified source)."""
    if not pcolls:
        return p | label >> beam.Create([])
    return pcolls | label >> beam.Flatten()


def _stage_counts(pcoll: beam.PCollection, stage: str, kind: str, label: str) -> beam.PCollection:
    return pcoll | label >> CountBy(lambda _: count_key("stage", stage, kind))


def build(p: beam.Pipeline, cfg: MixConfig) -> dict[str, beam.PCollection]:
    """Applies the whole mix DAG to ``p``.

    Args:
      p: the pipeline.
      cfg: a validated config.

    Returns:
      The main PCollections, for tests: ``docs_read``, ``dead_letters``, ``ledger``,
      ``shards`` (stats per written shard) and ``report``.
    """
    counts: list[beam.PCollection] = []
    read_docs: list[beam.PCollection] = []
    dead: list[beam.PCollection] = []
    to_classify: list[beam.PCollection] = []
    unclassified: list[beam.PCollection] = []
    for source in cfg.sources:
        result = p | f"Read[{source.name}]" >> ReadSource(source, cfg.read)
        read_docs.append(result.docs)
        dead.append(result.dead_letter)
        counts.append(result.counts)
        if source.classify:
            to_classify.append(result.docs)
        else:
            unclassified.append(
                result.docs | f"Narrative[{source.name}]" >> beam.Map(_unclassified, source.narrative)
            )

    docs_read = _flatten(p, read_docs, "AllRead")
    dead_letters = _flatten(p, dead, "AllDeadLetters")
    counts.append(docs_read | "CountRead" >> CountBy(lambda d: count_key("read_docs", d["source"])))
    counts.append(dead_letters | "CountDead" >> CountBy(lambda d: count_key("dead_letters", d["source"])))

    classified = _flatten(p, to_classify, "ToClassify") | "Classify" >> ClassifyDocuments(cfg.classifier)
    policy = classified | "Policy" >> ApplyPolicy(cfg.classifier)
    counts.append(_stage_counts(classified, "policy", "in", "CountPolicyIn"))
    counts.append(_stage_counts(policy.kept, "policy", "out", "CountPolicyOut"))
    counts.append(_stage_counts(policy.dropped, "policy", "dropped", "CountPolicyDropped"))

    labelled = [policy.kept, *unclassified] | "Labelled" >> beam.Flatten()
    dedup_sources = {s.name for s in cfg.sources if s.dedup}
    to_dedup = labelled | "ToDedup" >> beam.Filter(lambda d: d["source"] in dedup_sources)
    skip_dedup = labelled | "SkipDedup" >> beam.Filter(lambda d: d["source"] not in dedup_sources)
    priorities = {s.name: s.dedup_priority for s in cfg.sources}
    dedup = to_dedup | "Dedup" >> DedupDocuments(cfg.dedup, priorities)
    counts.append(_stage_counts(to_dedup, "dedup", "in", "CountDedupIn"))
    counts.append(_stage_counts(dedup["kept"], "dedup", "out", "CountDedupOut"))
    counts.append(_stage_counts(dedup["dropped"], "dedup", "dropped", "CountDedupDropped"))
    singletons = skip_dedup | "NoDedup" >> beam.Map(lambda d: {**d, "cluster_id": d["id"], "cluster_size": 1})

    survivors = [dedup["kept"], singletons] | "Survivors" >> beam.Flatten()
    blend = survivors | "Blend" >> BlendSources(cfg.blend)

    out = cfg.output
    seed = cfg.blend.seed
    suffix, encode, to_row = shard_format(out.format, out.row_group_size)
    shards = blend["assigned"] | "WriteShards" >> WriteSortedFiles(
        f"{out.path.rstrip('/')}/shards",
        out.shard_prefix,
        cfg.blend.num_shards,
        suffix,
        encode,
        sort_key=lambda d: order_key(d, seed),
        to_row=to_row,
        describe=describe_shard,
    )
    counts.append(shards | "ShardCounts" >> beam.FlatMap(shard_counts))

    ledger = [policy.dropped, dedup["dropped"], blend["ledger"]] | "Ledger" >> beam.Flatten()
    counts.append(
        ledger
        | "CountLedger"
        >> CountBy(
            lambda r: count_key(
                "ledger",
                r["source"],
                r["fate"],
                *([r["stage"], r["reason"]] if r["fate"] == "dropped" else []),
            )
        )
    )
    ledger_files = (
        ledger
        | "LedgerFile" >> beam.Map(lambda r: (stable_hash("ledger", r["id"]) % out.ledger_shards, r))
        | "WriteLedger"
        >> WriteSortedFiles(
            f"{out.path.rstrip('/')}/ledger",
            "ledger",
            out.ledger_shards,
            "parquet",
            parquet_encoder(LEDGER_SCHEMA, out.row_group_size),
            sort_key=lambda r: (r["id"], r["stage"]),
            to_row=ledger_row,
        )
    )
    dead_files = (
        dead_letters
        | "DeadLetterFile" >> beam.Map(lambda r: (0, r))
        | "WriteDeadLetters"
        >> WriteSortedFiles(
            f"{out.path.rstrip('/')}/dead_letter",
            "dead_letter",
            1,
            "jsonl",
            encode_jsonl,
            sort_key=lambda r: (r["source"], r["path"], r["offset"]),
        )
    )
    # The report waits for ledger and dead-letter files too, so a finished report means a finished run.
    written = [shards, ledger_files, dead_files] | "AllFiles" >> beam.Flatten()
    shard_stats = written | "OnlyShards" >> beam.Filter(lambda s: "by_source" in s)
    report = blend["plan"] | "Report" >> WriteRunRecords(
        out.path,
        cfg.run_name,
        cfg.model_dump(mode="json"),
        [s.name for s in cfg.sources],
        counts | "AllCounts" >> beam.Flatten(),
        shard_stats,
        dedup["unconverged"],
    )
    return {
        "docs_read": docs_read,
        "dead_letters": dead_letters,
        "ledger": ledger,
        "shards": shards,
        "report": report,
    }


def read_report(output: str) -> dict[str, Any]:
    """Reads ``report.json`` of a finished run."""
    with FileSystems.open(f"{output.rstrip('/')}/report.json") as f:
        result: dict[str, Any] = json.loads(f.read().decode("utf-8"))
        return result


def summary_lines(cfg: MixConfig, report: dict[str, Any]) -> list[str]:
    """The short summary every run ends with."""
    out = cfg.output.path.rstrip("/")
    lines = [
        f"shards:       {out}/shards/ ({len(report['realized']) and sum(r['realized'] for r in report['realized'].values())} rows)",
        f"report:       {out}/report.json",
        f"ledger:       {out}/ledger/",
        f"dead letters: {out}/dead_letter/",
    ]
    for name, r in sorted(report["realized"].items()):
        lines.append(
            f"  {name}: {r['realized']} rows, share {r['realized_share']:.4f} (target {r['target_share']:.4f}, {r['target']} rows)"
        )
    lines.append(report["conservation"]["summary"])
    lines.extend("  " + line for line in report["conservation"]["lines"])
    if report["dedup"]["unconverged_nodes"]:
        lines.append(
            f"warning: clustering did not converge for {report['dedup']['unconverged_nodes']} nodes; raise dedup.max_rounds"
        )
    return lines


def run(cfg: MixConfig, beam_args: Sequence[str] = ()) -> dict[str, Any] | None:
    """Runs the mix and returns its report, or None when only a graph or template was built.

    Args:
      cfg: a validated config.
      beam_args: Beam pipeline options.
    """
    options = pipeline_options(beam_args)
    p = beam.Pipeline(options=options)
    build(p, cfg)
    result = p.run()
    if not waits_for_result(options):
        return None
    result.wait_until_finish()
    return read_report(cfg.output.path)


class MixOptions(PipelineOptions):
    """The job's own options; they are real pipeline options so templates can expose them."""

    @classmethod
    def _add_argparse_args(cls, parser: Any) -> None:
        parser.add_argument("--config", default=None, help="YAML run config, local or gs://")
        parser.add_argument(
            "--run_id",
            default=None,
            help="name of a scheduled incremental run; letters, digits, '-' and '_'",
        )


def waits_for_result(options: PipelineOptions) -> bool:
    """False when the runner only builds a job graph or a template instead of running the job."""
    if options.view_as(TestOptions).dry_run:
        return False
    return not options.view_as(GoogleCloudOptions).template_location


def execute(cfg: MixConfig, beam_args: Sequence[str], run_id: str | None = None) -> int:
    """Runs a config (incrementally when ``output.incremental``), prints the summary, returns the exit code.

    Args:
      cfg: a validated config.
      beam_args: Beam pipeline options.
      run_id: name of an incremental run; defaults to the current UTC time.
    """
    plan = None
    if cfg.output.incremental:
        from pipelines.incremental import commit_run, plan_run

        plan = plan_run(cfg, run_id)
        if plan.fresh == 0:
            print(f"no new input files under {cfg.output.path} since the last completed run; nothing to do")
            return 0
        print(f"incremental run {plan.run_id}: {plan.fresh} new input files -> {plan.config.output.path}")
    run_cfg = plan.config if plan else cfg
    report = run(run_cfg, beam_args)
    if report is None:
        print("job graph built; nothing was run (dry run or template creation)")
        return 0
    print("\n".join(summary_lines(run_cfg, report)))
    if not report["conservation"]["ok"]:
        return 1
    if plan:
        commit_run(cfg.output.path, plan)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    mix = PipelineOptions(argv).view_as(MixOptions)
    if not mix.config:
        print("python -m pipelines.build_mix: --config is required", file=sys.stderr)
        return 2
    return execute(load_config(mix.config), argv, mix.run_id)


if __name__ == "__main__":
    sys.exit(main())
