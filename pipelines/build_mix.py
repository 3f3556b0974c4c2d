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

On a Dask distributed cluster (see deploy/dask/README.md)::

    python -m pipelines.build_mix --config examples/demo.yaml --runner=dask \
        --dask_client_address=SCHEDULER_HOST:8786

On Flink, through the Beam Flink job server::

    python -m pipelines.build_mix --config examples/demo.yaml --runner=FlinkRunner \
        --flink_master=localhost:8081 --environment_type=LOOPBACK

Everything after ``--config FILE`` is a Beam pipeline option.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import (
    GoogleCloudOptions,
    PipelineOptions,
    StandardOptions,
    TestOptions,
)

from pipelines.checks import UsageError, check_beam_flags
from schemas.config import MixConfig, allowing_empty_sources, load_config
from schemas.records import LEDGER_SCHEMA, Document
from schemas.taxonomy import DEFAULT_TAXONOMY, narrative_of
from transforms.blend.sample import BlendSources, PlanBlend, PlanError, order_key, with_body
from transforms.blocks import ComponentsNotConverged
from transforms.classify.model import ApplyPolicy, ClassifyDocuments, SampleExcerpts, length_bucket
from transforms.decontaminate import Decontaminate
from transforms.dedup.deduplicate import DedupDocuments, WriteDedupIndex
from transforms.io.chat import chat_token_pairs
from transforms.io.ids import DuplicateIdError, UniqueIds
from transforms.io.publication import OutputError, Publish, prepare_output, replace_files, staging_dir
from transforms.io.read import ReadSource
from transforms.io.write import (
    WriteSortedFiles,
    describe_shard,
    encode_jsonl,
    ledger_row,
    parquet_encoder,
    shard_format,
    write_atomically,
)
from transforms.logs import configure_logging, stage_logger
from transforms.progress import ProgressPrinter, TickFn
from transforms.report.conservation import ConservationError, JoinIntegrityError
from transforms.report.counts import CountBy, CountKey, SumBy, count_key, ledger_counts, shard_counts
from transforms.report.html import render_html, write_report_html
from transforms.report.metrics import augment_report, collect_metrics, stage_busy_seconds
from transforms.report.records import WriteRunRecords, read_json
from transforms.text import stable_hash

DEFAULT_RUNNER = "apache_beam.runners.portability.fn_api_runner.FnApiRunner"
# ``--runner=dask``: Beam's DaskRunner with the fixes tropemix needs (pipelines/dask_runner.py).
DASK_RUNNER = "pipelines.dask_runner.TropemixDaskRunner"
_LOG = stage_logger("run")


def pipeline_options(beam_args: Sequence[str]) -> PipelineOptions:
    """Beam options from the command line, defaulting to the in-process FnApiRunner.

    Every tropemix pipeline takes its options from here, so a local runner is also
    prepared here: capped malloc arenas and no timed runner flushes (both below).

    Raises:
      UsageError: a flag no Beam options class defines (a typo Beam would only warn about).
    """
    check_beam_flags(beam_args)
    options = PipelineOptions(list(beam_args))
    standard = options.view_as(StandardOptions)
    if not standard.runner:
        standard.runner = DEFAULT_RUNNER
    elif standard.runner.lower() == "dask":
        standard.runner = DASK_RUNNER
    if _is_local(options):
        limit_malloc_arenas()
        untime_runner_flushes()
    return options


# glibc's mallopt parameter number for the arena cap.
_M_ARENA_MAX = -8


def limit_malloc_arenas(arenas: int = 2) -> None:
    """Caps glibc malloc arenas in this process and in the SDK worker processes it starts.

    glibc gives each new thread its own arena (up to eight per core), and the runner's
    gRPC threads keep the multi-megabyte element buffers they freed mapped in theirs, so
    resident memory grows with the data moved, not with the data held.  Measured on the
    10k benchmark corpus: total peak RSS 2.94 -> 2.50 GB, CPU per document unchanged
    (BENCHMARKS.md).  An explicit ``MALLOC_ARENA_MAX`` in the environment wins.

    Args:
      arenas: the cap when the environment sets none.
    """
    # Worker processes read it from the environment they inherit.
    value = int(os.environ.setdefault("MALLOC_ARENA_MAX", str(arenas)))
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(_M_ARENA_MAX, value)
    except (OSError, AttributeError):
        # Not glibc (macOS, musl): nothing to cap.
        return


def untime_runner_flushes() -> None:
    """Stops the in-process runner's timed flush of bundle inputs, which loses data in Beam 2.77.

    The FnApiRunner streams every bundle input to an SDK worker through a
    ``TimeBasedBufferingClosableOutputStream`` with a 1 s periodic flush
    (``worker_handlers.DATA_BUFFER_TIME_LIMIT_MS``).  The flush reads the buffer, sends it
    and clears it while the runner's thread keeps writing, so chunks written in between
    are dropped: whole ~10 MB runs of records, silently.  At 100k documents it lost up to
    82% of a run (BENCHMARKS.md; ``benchmarks/flush_race.py`` reproduces it with Beam's
    own classes).  A batch runner gains nothing from the timer: each input stream is
    closed, and so sent, as soon as it is written.
    """
    from apache_beam.runners.portability.fn_api_runner import worker_handlers

    worker_handlers.DATA_BUFFER_TIME_LIMIT_MS = 0


def _unclassified(doc: dict[str, Any], narrative: str, tropes_field: str | None) -> dict[str, Any]:
    """Labels a document that is not classified: the source's narrative, or its metadata trope tags."""
    if tropes_field is None:
        return {**doc, "narrative": narrative, "tropes": [], "trope_scores": {}}
    tags = doc.get("meta", {}).get(tropes_field) or []
    tags = [tags] if isinstance(tags, str) else tags
    tropes = sorted({str(t) for t in tags} & set(DEFAULT_TAXONOMY.trope_labels))
    return {**doc, "narrative": narrative_of(tropes), "tropes": tropes, "trope_scores": {}}


def _flatten(p: beam.Pipeline, pcolls: list[beam.PCollection], label: str) -> beam.PCollection:
    """Flatten that also works for an empty list (a config may have no classified source)."""
    if not pcolls:
        return p | label >> beam.Create([])
    return pcolls | label >> beam.Flatten()


def _narrative_key(doc: Document) -> CountKey:
    return count_key("narrative_in", doc["source"], doc["narrative"])


def _stage_counts(pcoll: beam.PCollection, stage: str, kind: str, label: str) -> beam.PCollection:
    return pcoll | label >> CountBy(lambda _: count_key("stage", stage, kind))


def _decontaminate(
    cfg: MixConfig,
    name: str,
    docs: beam.PCollection,
    counts: list[beam.PCollection],
    dropped: list[beam.PCollection],
) -> beam.PCollection:
    """``docs`` of source ``name`` without those overlapping the eval sets, when configured.

    Args:
      cfg: the run config.
      name: source name.
      docs: the source's documents as read.
      counts: receives the stage's in/out/dropped counts.
      dropped: receives the stage's ledger rows.
    """
    decon = cfg.decontaminate
    if decon is None or (decon.sources and name not in decon.sources):
        return docs
    # Before classification: a contaminated document is not worth scoring.
    result = docs | f"Decontaminate[{name}]" >> Decontaminate(decon)
    dropped.append(result.dropped)
    counts.append(_stage_counts(docs, "decontaminate", "in", f"CountDecontaminateIn[{name}]"))
    counts.append(_stage_counts(result.kept, "decontaminate", "out", f"CountDecontaminateOut[{name}]"))
    counts.append(
        _stage_counts(result.dropped, "decontaminate", "dropped", f"CountDecontaminateDropped[{name}]")
    )
    return result.kept


def survivors(p: beam.Pipeline, cfg: MixConfig, progress_dir: str | None = None) -> dict[str, Any]:
    """Applies read, classify, policy and dedup: everything the blend plan counts.

    Args:
      p: the pipeline.
      cfg: a validated config.
      progress_dir: local directory for the terminal progress line of local runs.

    Returns:
      ``dead_letters``, ``survivors`` (documents entering the blend),
      ``dropped`` (policy and dedup ledger rows), ``dedup_index`` (dedup) and
      ``counts`` (a list of ``(key, n)`` PCollections).
    """
    counts: list[beam.PCollection] = []
    dead: list[beam.PCollection] = []
    to_classify: list[tuple[str, beam.PCollection]] = []
    unclassified: list[beam.PCollection] = []
    # Documents are counted per source before any Flatten: the in-process runner
    # materializes every Flatten of several inputs (each element encoded, held by the
    # driver and decoded again), so a Flatten of whole documents just to count them
    # would move the corpus through the driver once more.
    id_dropped: list[beam.PCollection] = []
    classified_all: list[beam.PCollection] = []
    decontaminated: list[beam.PCollection] = []
    for source in cfg.sources:
        result = p | f"Read[{source.name}]" >> ReadSource(source, cfg.read, progress_dir)
        dead.append(result.dead_letter)
        counts.append(result.counts)
        counts.append(
            result.docs
            | f"CountRead[{source.name}]" >> CountBy(lambda d: count_key("read_docs", d["source"]))
        )
        ids = result.docs | f"Ids[{source.name}]" >> UniqueIds(source.name, source.duplicate_ids)
        id_dropped.append(ids["dropped"])
        counts.append(_stage_counts(result.docs, "ids", "in", f"CountIdsIn[{source.name}]"))
        counts.append(_stage_counts(ids["docs"], "ids", "out", f"CountIdsOut[{source.name}]"))
        counts.append(_stage_counts(ids["dropped"], "ids", "dropped", f"CountIdsDropped[{source.name}]"))
        docs = _decontaminate(cfg, source.name, ids["docs"], counts, decontaminated)
        if source.classify and source.tropes_field is None:
            to_classify.append((source.name, docs))
        else:
            narrated = docs | f"Narrative[{source.name}]" >> beam.Map(
                _unclassified, source.narrative, source.tropes_field
            )
            unclassified.append(narrated)
            counts.append(narrated | f"CountNarrativesIn[{source.name}]" >> CountBy(_narrative_key))

    dead_letters = _flatten(p, dead, "AllDeadLetters")
    counts.append(dead_letters | "CountDead" >> CountBy(lambda d: count_key("dead_letters", d["source"])))
    # Dead-letter errors start with their reason (``bad_json: ...``), see transforms/io/read.py.
    counts.append(
        dead_letters
        | "CountDeadReasons"
        >> CountBy(lambda d: count_key("dead_reason", d["stage"], d["error"].split(":", 1)[0]))
    )

    # Each classified source is classified and policed on its own, as the read step
    # left it: a Flatten of the sources first would move the whole corpus through the
    # in-process runner's driver once more (see above).  Scores and policy decisions
    # depend on the document alone, so the output is the same either way.
    kept: list[beam.PCollection] = []
    policy_dropped: list[beam.PCollection] = []
    for name, docs in to_classify:
        classified = docs | f"Classify[{name}]" >> ClassifyDocuments(
            cfg.classifier, progress_dir=progress_dir
        )
        policy = classified | f"Policy[{name}]" >> ApplyPolicy(cfg.classifier)
        kept.append(policy.kept)
        policy_dropped.append(policy.dropped)
        counts.append(_stage_counts(docs, "classify", "in", f"CountClassifyIn[{name}]"))
        counts.append(_stage_counts(classified, "classify", "out", f"CountClassifyOut[{name}]"))
        # The corpus before the mix: every document's narrative (unclassified sources'
        # above) and fired trope labels.
        counts.append(classified | f"CountNarrativesIn[{name}]" >> CountBy(_narrative_key))
        classified_all.append(classified)
        # So a user sees a skew by length or language at a glance (report.html).
        counts.append(
            classified
            | f"CountNarrativesByLength[{name}]"
            >> CountBy(lambda d: count_key("narrative_len", length_bucket(len(d["text"])), d["narrative"]))
        )
        counts.append(
            classified
            | f"CountNarrativesByLanguage[{name}]"
            >> CountBy(lambda d: count_key("narrative_lang", d["lang"], d["narrative"]))
        )
        counts.append(
            classified
            | f"LabelsIn[{name}]" >> beam.FlatMap(lambda d: d["tropes"])
            | f"CountLabelsIn[{name}]" >> CountBy(lambda label: count_key("label_in", label))
        )
        counts.append(_stage_counts(classified, "policy", "in", f"CountPolicyIn[{name}]"))
        counts.append(_stage_counts(policy.kept, "policy", "out", f"CountPolicyOut[{name}]"))
        counts.append(_stage_counts(policy.dropped, "policy", "dropped", f"CountPolicyDropped[{name}]"))

    labelled = [*kept, *unclassified] | "Labelled" >> beam.Flatten()
    dedup_sources = {s.name for s in cfg.sources if s.dedup}
    to_dedup = labelled | "ToDedup" >> beam.Filter(lambda d: d["source"] in dedup_sources)
    skip_dedup = labelled | "SkipDedup" >> beam.Filter(lambda d: d["source"] not in dedup_sources)
    priorities = {s.name: s.dedup_priority for s in cfg.sources}
    dedup = to_dedup | "Dedup" >> DedupDocuments(cfg.dedup, priorities, progress_dir)
    counts.append(_stage_counts(to_dedup, "dedup", "in", "CountDedupIn"))
    counts.append(_stage_counts(dedup["kept"], "dedup", "out", "CountDedupOut"))
    counts.append(_stage_counts(dedup["dropped"], "dedup", "dropped", "CountDedupDropped"))
    singletons = skip_dedup | "NoDedup" >> beam.Map(lambda d: {**d, "cluster_id": d["id"], "cluster_size": 1})
    # When every source is deduplicated, NoDedup is empty by construction; leaving it out
    # of the Flatten spares the in-process runner a pass of every survivor through its driver.
    survived = (
        dedup["kept"]
        if dedup_sources == {s.name for s in cfg.sources}
        else [dedup["kept"], singletons] | "Survivors" >> beam.Flatten()
    )

    return {
        "dead_letters": dead_letters,
        "survivors": survived,
        "dropped": [*id_dropped, *decontaminated, *policy_dropped, dedup["dropped"]],
        "dedup_index": dedup["index"],
        "counts": counts,
        "excerpts": (
            _flatten(p, classified_all, "AllClassified")
            | "SampleExcerpts" >> SampleExcerpts(cfg.output.report_excerpts)
            if cfg.output.report_excerpts
            else None
        ),
    }


def roles(cfg: MixConfig) -> dict[str, str]:
    """Source name -> role, which narrative balance uses to find stories and web text."""
    return {s.name: s.role.value for s in cfg.sources}


def build(
    p: beam.Pipeline, cfg: MixConfig, progress_dir: str | None = None, overwrite: bool = False
) -> dict[str, beam.PCollection]:
    """Applies the whole mix DAG to ``p``.

    Everything is written to the staging directory of ``output.path`` and published
    by the DAG's last step (pipelines/publication.py).

    Args:
      p: the pipeline.
      cfg: a validated config.
      progress_dir: local directory for the terminal progress line of local runs.
      overwrite: replace a non-empty ``output.path`` that is not a finished run.

    Returns:
      The main PCollections, for tests: ``dead_letters``, ``ledger``,
      ``shards`` (stats per written shard), ``plan`` and ``report``.
    """
    final = cfg.output.path.rstrip("/")
    staged = staging_dir(final)
    upstream = survivors(p, cfg, progress_dir)
    dead_letters, counts = upstream["dead_letters"], upstream["counts"]
    blend = upstream["survivors"] | "Blend" >> BlendSources(cfg.blend, roles(cfg))
    if cfg.dedup.write_index:
        # Written only once the plan exists, so a plan that cannot be met leaves no files.
        _ = (
            upstream["dedup_index"]
            | "IndexAfterPlan" >> beam.Map(lambda r, plan: r, plan=beam.pvalue.AsSingleton(blend["plan"]))
            | "DedupIndex" >> WriteDedupIndex(f"{staged}/dedup_index", cfg.dedup)
        )
    counts.append(_stage_counts(upstream["survivors"], "blend", "in", "CountBlendIn"))
    counts.append(
        blend["ledger"]
        | "CountBlendOut"
        >> CountBy(lambda r: count_key("stage", "blend", "out" if r["fate"] == "written" else "dropped"))
    )
    counts.append(_stage_counts(blend["assigned"], "write", "in", "CountWriteIn"))
    counts.append(blend["assigned"] | "CountChatTokens" >> SumBy(chat_token_pairs))
    dedup_sources = {s.name for s in cfg.sources if s.dedup}

    out = cfg.output
    seed = cfg.blend.seed
    suffix, encode, to_row = shard_format(out.format, out.row_group_size)
    shards = blend["assigned"] | "WriteShards" >> WriteSortedFiles(
        f"{staged}/shards",
        out.shard_prefix,
        blend["plan"] | "ShardCount" >> beam.Map(lambda plan: plan["num_shards"]),
        suffix,
        encode,
        sort_key=lambda d: order_key(d, seed),
        to_row=lambda d: to_row(with_body(d)),
        describe=describe_shard,
    )
    counts.append(shards | "ShardCounts" >> beam.FlatMap(shard_counts))
    if progress_dir:
        _ = blend["assigned"] | "ProgressBlend" >> beam.ParDo(TickFn(progress_dir, "blend"))
        _ = shards | "ProgressWrite" >> beam.ParDo(TickFn(progress_dir, "write", lambda s: int(s["rows"])))

    ledger = [*upstream["dropped"], blend["ledger"]] | "Ledger" >> beam.Flatten()
    counts.append(ledger | "CountLedger" >> SumBy(ledger_counts))
    # Every document that went through dedup has exactly one dedup or blend ledger row
    # carrying its cluster size: k such rows of size k are one cluster.
    counts.append(
        ledger
        | "DedupedRows"
        >> beam.Filter(lambda r: r["source"] in dedup_sources and r["stage"] in ("dedup", "blend"))
        | "CountClusterDocs" >> CountBy(lambda r: count_key("cluster_docs", str(r["cluster_size"])))
    )
    ledger_files = (
        ledger
        | "LedgerFile" >> beam.Map(lambda r: (stable_hash("ledger", r["id"]) % out.ledger_shards, r))
        | "WriteLedger"
        >> WriteSortedFiles(
            f"{staged}/ledger",
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
        # Waits for the plan, so a plan that cannot be met fails the run before any file is written.
        | "DeadLetterFile" >> beam.Map(lambda r, plan: (0, r), plan=beam.pvalue.AsSingleton(blend["plan"]))
        | "WriteDeadLetters"
        >> WriteSortedFiles(
            f"{staged}/dead_letter",
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
        staged,
        final,
        cfg.run_name,
        cfg.model_dump(mode="json"),
        [s.name for s in cfg.sources],
        counts | "AllCounts" >> beam.Flatten(),
        shard_stats,
        upstream["excerpts"],
    )
    published = report | "Publish" >> Publish(staged, final, overwrite, write_report_html)
    return {
        "dead_letters": dead_letters,
        "ledger": ledger,
        "shards": shards,
        "plan": blend["plan"],
        "report": published,
    }


def build_plan(p: beam.Pipeline, cfg: MixConfig) -> beam.PCollection:
    """The counting pass alone: read, classify, policy, dedup, units, plan -> ``plan.json``.

    Writes no shards, ledger or report; ``tropemix run`` computes the same plan inside
    the full DAG and stores it in ``manifest.json``.

    Args:
      p: the pipeline.
      cfg: a validated config.
    """
    plan = survivors(p, cfg)["survivors"] | "Blend" >> PlanBlend(cfg.blend, roles(cfg))
    path = f"{cfg.output.path.rstrip('/')}/plan.json"
    return plan["plan"] | "WritePlan" >> beam.Map(_write_plan, path)


def _write_plan(plan: dict[str, Any], path: str) -> dict[str, Any]:
    write_atomically(path, json.dumps(plan, indent=2, sort_keys=True).encode())
    return plan


def run_plan(cfg: MixConfig, beam_args: Sequence[str] = ()) -> dict[str, Any]:
    """Runs the counting pass and returns the plan (also left in ``output.path/plan.json``).

    Args:
      cfg: a validated config.
      beam_args: Beam pipeline options.

    Raises:
      PlanError: the targets cannot be met; the message gives the numbers.
    """
    try:
        with beam.Pipeline(options=pipeline_options(beam_args)) as p:
            build_plan(p, cfg)
    except Exception as err:
        raise_plan_error(err)
        raise_input_error(err)
        raise
    with FileSystems.open(f"{cfg.output.path.rstrip('/')}/plan.json") as f:
        plan: dict[str, Any] = json.loads(f.read().decode("utf-8"))
        return plan


def _reraise_unwrapped(err: BaseException, markers: Sequence[str], error: type[Exception]) -> None:
    """Re-raises the message a runner wrapped in ``err`` as ``error``, when one of ``markers`` starts it."""
    text = str(err)
    for marker in markers:
        if marker in text:
            message = text[text.index(marker) :]
            # Runners append their own traceback context after the message.
            raise error(message.split(" [while running")[0].strip()) from err


def raise_plan_error(err: BaseException) -> None:
    """Re-raises a runner's wrapped ``PlanError`` as a plain ``PlanError`` with its message."""
    _reraise_unwrapped(err, ("blend plan cannot be met", "narrative balance cannot be met"), PlanError)


def raise_input_error(err: BaseException) -> None:
    """Re-raises a runner's wrapped ``DuplicateIdError`` as a plain one with its message."""
    _reraise_unwrapped(err, ("duplicate id in source",), DuplicateIdError)


def raise_join_error(err: BaseException) -> None:
    """Re-raises a runner's wrapped ``JoinIntegrityError`` as a plain one with its message."""
    _reraise_unwrapped(err, ("DocJoin: ", "BodyJoin: "), JoinIntegrityError)


def raise_components_error(err: BaseException) -> None:
    """Re-raises a runner's wrapped ``ComponentsNotConverged`` as a plain one with its message."""
    _reraise_unwrapped(err, ("ConnectedComponents: ",), ComponentsNotConverged)


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


def read_report(output: str) -> dict[str, Any]:
    """Reads ``report.json`` of a finished run."""
    return read_json(f"{output.rstrip('/')}/report.json")


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


def _is_local(options: PipelineOptions) -> bool:
    """Whether workers run on this machine (the progress files need a shared disk)."""
    runner = str(options.view_as(StandardOptions).runner or "")
    return runner.endswith(
        ("FnApiRunner", "DirectRunner", "BundleBasedDirectRunner", "SwitchingDirectRunner")
    )


def run(cfg: MixConfig, beam_args: Sequence[str] = (), overwrite: bool = False) -> dict[str, Any] | None:
    """Runs the mix, adds the runner's metrics to its published report, rewrites ``report.html``.

    Returns the report, or None when only a graph or template was built.

    Args:
      cfg: a validated config.
      beam_args: Beam pipeline options.
      overwrite: replace a non-empty ``output.path`` that is not a finished run.

    Raises:
      OutputError: ``output.path`` holds files that are not a finished run.
      ConservationError: documents were lost; ``report.json`` and ``report.html``
        are written to the unpublished staging directory and the message names
        the stage, the difference and the report.
    """
    options = pipeline_options(beam_args)
    out = cfg.output.path.rstrip("/")
    runs = waits_for_result(options)
    staged = prepare_output(out, overwrite) if runs else staging_dir(out)
    with tempfile.TemporaryDirectory(prefix="tropemix-progress-") as progress_dir:
        printer = ProgressPrinter(progress_dir, sys.stdout, local=runs and _is_local(options))
        p = beam.Pipeline(options=options)
        build(p, cfg, progress_dir if printer.enabled else None, overwrite)
        _LOG.info("run started", run_name=cfg.run_name, output=out, sources=len(cfg.sources))
        start = time.monotonic()
        try:
            with printer:
                result = p.run()
                if not runs:
                    return None
                result.wait_until_finish()
        except Exception as err:
            raise_plan_error(err)
            raise_input_error(err)
            raise_join_error(err)
            raise_components_error(err)
            # A failed run is never published: its report stays in the staging directory.
            report_path = f"{staged}/report.json"
            if not FileSystems.exists(report_path) or read_report(staged)["conservation"]["ok"]:
                raise
            write_report_html(staged)
            failed = read_report(staged)["conservation"]
            _LOG.error("conservation failed", summary=failed["summary"])
            raise ConservationError(
                "\n".join(
                    [
                        failed["summary"],
                        *(line for line in failed["lines"] if "MISMATCH" in line),
                        f"report (not published): {staged}/report.html",
                    ]
                )
            ) from err
        wall = time.monotonic() - start
    busy = stage_busy_seconds(result, [s.name for s in cfg.sources])
    report = augment_report(read_report(out), collect_metrics(result), busy, wall)
    data = json.dumps(report, indent=2, sort_keys=True).encode()
    # Rendered from the JSON, as `tropemix report` does, so both give the same page.
    page = render_html(json.loads(data), read_json(f"{out}/manifest.json")).encode("utf-8")
    # Staged and renamed in: a kill here leaves the published report as it was, and no temp file.
    replace_files(out, {"report.json": data, "report.html": page})
    _LOG.info("run finished", run_name=cfg.run_name, wall_seconds=round(wall, 1), status=report["status"])
    return report


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
        parser.add_argument(
            "--overwrite",
            action="store_true",
            help="replace a non-empty output.path that holds no finished run",
        )
        parser.add_argument(
            "--allow_empty_source",
            action="store_true",
            help="let a source bring no documents (incremental runs); the others share the mix",
        )


def waits_for_result(options: PipelineOptions) -> bool:
    """False when the runner only builds a job graph or a template instead of running the job."""
    if options.view_as(TestOptions).dry_run:
        return False
    return not options.view_as(GoogleCloudOptions).template_location


def execute(
    cfg: MixConfig, beam_args: Sequence[str], run_id: str | None = None, overwrite: bool = False
) -> int:
    """Runs a config (incrementally when ``output.incremental``), prints the summary, returns the exit code.

    Args:
      cfg: a validated config.
      beam_args: Beam pipeline options.
      run_id: name of an incremental run; defaults to the current UTC time.
      overwrite: replace a non-empty output directory that holds no finished run.
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
    report = run(run_cfg, beam_args, overwrite)
    if report is None:
        print("job graph built; nothing was run (dry run or template creation)")
        return 0
    print("\n".join(summary_lines(run_cfg, report)))
    if not report["conservation"]["ok"]:
        return 1
    if plan:
        commit_run(cfg.output.path, plan)
    return 0


def exit_code(job: Callable[[], int]) -> int:
    """Runs ``job``; a failed conservation or clustering check (1) or an unusable output path (2)
    becomes an exit code.

    The message goes to stderr.
    """
    try:
        return job()
    except (ConservationError, ComponentsNotConverged) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except (OutputError, DuplicateIdError, UsageError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    mix = PipelineOptions(argv).view_as(MixOptions)
    if not mix.config:
        print("python -m pipelines.build_mix: --config is required", file=sys.stderr)
        return 2
    configure_logging()
    cfg = allowing_empty_sources(load_config(mix.config), mix.allow_empty_source)
    return exit_code(lambda: execute(cfg, argv, mix.run_id, mix.overwrite))


if __name__ == "__main__":
    sys.exit(main())
