"""The tropemix DAG: read, classify, apply policy, dedup, blend, write, account.

``build`` applies the whole mix to a pipeline, ``build_plan`` the counting pass
alone; ``pipelines/run.py`` runs them.
"""

from __future__ import annotations

import json
from typing import Any

import apache_beam as beam

from schemas.config import MixConfig
from schemas.records import LEDGER_SCHEMA, Document
from schemas.taxonomy import DEFAULT_TAXONOMY, narrative_of
from transforms.blend.bodies import with_body
from transforms.blend.plan_model import BlendPlan
from transforms.blend.sample import BlendSources, PlanBlend, order_key
from transforms.classify.documents import ClassifyDocuments
from transforms.classify.excerpts import SampleExcerpts
from transforms.classify.policy import ApplyPolicy
from transforms.classify.score import length_bucket
from transforms.decontaminate import Decontaminate
from transforms.dedup.deduplicate import DedupDocuments
from transforms.dedup.index import WriteDedupIndex
from transforms.io.chat import chat_token_pairs
from transforms.io.ids import UniqueIds
from transforms.io.publication import Publish, staging_dir
from transforms.io.source import ReadSource
from transforms.io.write import (
    WriteDeadLetters,
    WriteHashedFiles,
    WriteSortedFiles,
    describe_shard,
    ledger_row,
    parquet_encoder,
    shard_format,
    write_atomically,
)
from transforms.progress import TickFn
from transforms.report.accounting import (
    CountBy,
    SumBy,
    WriteRunRecords,
    count_key,
    ledger_counts,
    shard_counts,
)
from transforms.report.html import (
    write_report_html,
)


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


def _narrative_key(doc: Document) -> str:
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
        result = p | f"Read[{source.name}]" >> ReadSource(source, cfg.read)
        if progress_dir:
            _ = result.kept | f"ProgressRead[{source.name}]" >> beam.ParDo(TickFn(progress_dir, "read"))
        dead.append(result.dead_letter)
        counts.append(result.counts)
        counts.append(
            result.kept
            | f"CountRead[{source.name}]" >> CountBy(lambda d: count_key("read_docs", d["source"]))
        )
        ids = result.kept | f"Ids[{source.name}]" >> UniqueIds(source.name, source.duplicate_ids)
        id_dropped.append(ids.dropped)
        counts.append(_stage_counts(result.kept, "ids", "in", f"CountIdsIn[{source.name}]"))
        counts.append(_stage_counts(ids.kept, "ids", "out", f"CountIdsOut[{source.name}]"))
        counts.append(_stage_counts(ids.dropped, "ids", "dropped", f"CountIdsDropped[{source.name}]"))
        docs = _decontaminate(cfg, source.name, ids.kept, counts, decontaminated)
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
    # Dead-letter errors start with their reason (``bad_json: ...``), see transforms/io/documents.py.
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
        classified = docs | f"Classify[{name}]" >> ClassifyDocuments(cfg.classifier)
        if progress_dir:
            _ = classified | f"ProgressClassify[{name}]" >> beam.ParDo(TickFn(progress_dir, "classify"))
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
    dedup = to_dedup | "Dedup" >> DedupDocuments(cfg.dedup, priorities)
    if progress_dir:
        _ = to_dedup | "ProgressDedup" >> beam.ParDo(TickFn(progress_dir, "dedup"))
    counts.append(_stage_counts(to_dedup, "dedup", "in", "CountDedupIn"))
    counts.append(_stage_counts(dedup.kept, "dedup", "out", "CountDedupOut"))
    counts.append(_stage_counts(dedup.dropped, "dedup", "dropped", "CountDedupDropped"))
    singletons = skip_dedup | "NoDedup" >> beam.Map(lambda d: {**d, "cluster_id": d["id"], "cluster_size": 1})
    # When every source is deduplicated, NoDedup is empty by construction; leaving it out
    # of the Flatten spares the in-process runner a pass of every survivor through its driver.
    survived = (
        dedup.kept
        if dedup_sources == {s.name for s in cfg.sources}
        else [dedup.kept, singletons] | "Survivors" >> beam.Flatten()
    )

    return {
        "dead_letters": dead_letters,
        "survivors": survived,
        "dropped": [*id_dropped, *decontaminated, *policy_dropped, dedup.dropped],
        "dedup_index": dedup.index_entries,
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
            | "IndexAfterPlan" >> beam.Map(lambda r, plan: r, plan=beam.pvalue.AsSingleton(blend.plan))
            | "DedupIndex" >> WriteDedupIndex(f"{staged}/dedup_index", cfg.dedup)
        )
    counts.append(_stage_counts(upstream["survivors"], "blend", "in", "CountBlendIn"))
    counts.append(
        blend.ledger
        | "CountBlendOut"
        >> CountBy(lambda r: count_key("stage", "blend", "out" if r["fate"] == "written" else "dropped"))
    )
    counts.append(_stage_counts(blend.assigned, "write", "in", "CountWriteIn"))
    counts.append(blend.assigned | "CountChatTokens" >> SumBy(chat_token_pairs))
    dedup_sources = {s.name for s in cfg.sources if s.dedup}

    out = cfg.output
    seed = cfg.blend.seed
    suffix, encode, to_row = shard_format(out.format, out.row_group_size)
    shards = blend.assigned | "WriteShards" >> WriteSortedFiles(
        f"{staged}/shards",
        out.shard_prefix,
        blend.plan | "ShardCount" >> beam.Map(lambda plan: plan.num_shards),
        suffix,
        encode,
        sort_key=lambda d: order_key(d, seed),
        to_row=lambda d: to_row(with_body(d)),
        describe=describe_shard,
    )
    counts.append(shards | "ShardCounts" >> beam.FlatMap(shard_counts))
    if progress_dir:
        _ = blend.assigned | "ProgressBlend" >> beam.ParDo(TickFn(progress_dir, "blend"))
        _ = shards | "ProgressWrite" >> beam.ParDo(TickFn(progress_dir, "write", lambda s: int(s["rows"])))

    ledger = [*upstream["dropped"], blend.ledger] | "Ledger" >> beam.Flatten()
    counts.append(ledger | "CountLedger" >> SumBy(ledger_counts))
    # Every document that went through dedup has exactly one dedup or blend ledger row
    # carrying its cluster size: k such rows of size k are one cluster.
    counts.append(
        ledger
        | "DedupedRows"
        >> beam.Filter(lambda r: r["source"] in dedup_sources and r["stage"] in ("dedup", "blend"))
        | "CountClusterDocs" >> CountBy(lambda r: count_key("cluster_docs", str(r["cluster_size"])))
    )
    ledger_files = ledger | "WriteLedger" >> WriteHashedFiles(
        f"{staged}/ledger",
        "ledger",
        out.ledger_shards,
        parquet_encoder(LEDGER_SCHEMA, out.row_group_size),
        sort_key=lambda r: (r["id"], r["stage"]),
        to_row=ledger_row,
    )
    # Waits for the plan, so a plan that cannot be met fails the run before any file is written.
    dead_files = dead_letters | "WriteDeadLetters" >> WriteDeadLetters(
        f"{staged}/dead_letter", wait_for=blend.plan
    )
    # The report waits for ledger and dead-letter files too, so a finished report means a finished run.
    written = [shards, ledger_files, dead_files] | "AllFiles" >> beam.Flatten()
    shard_stats = written | "OnlyShards" >> beam.Filter(lambda s: "by_source" in s)
    report = blend.plan | "Report" >> WriteRunRecords(
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
        "plan": blend.plan,
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
    return plan.plan | "WritePlan" >> beam.Map(_write_plan, path)


def _write_plan(plan: BlendPlan, path: str) -> dict[str, Any]:
    as_json = plan.to_dict()
    write_atomically(path, json.dumps(as_json, indent=2, sort_keys=True).encode())
    return as_json
