"""The tropemix DAG, as the job graph shows it::

    ReadAndLabel   per source: Read -> Ids -> Decontaminate -> Classify -> Policy (or Narrative)
    Deduplicate    exact + MinHash LSH clusters over the sources that dedup
    Blend          the plan, then exact sampling of copies into shards
    WriteOutputs   shards, ledger, dead letters and dedup index, in the staging directory
    Report         manifest.json, report.json and the conservation check
    Publish        the staging directory renamed into place, ``_COMPLETE`` last

Each stage composite returns its kept records, the ledger rows of what it removed and
its ``(count key, n)`` pairs.  ``pipelines/run.py`` runs ``BuildMix``; ``PlanMix`` is
the counting pass alone (``tropemix plan``).
"""

from __future__ import annotations

import json
from typing import Any, NamedTuple

import apache_beam as beam
from apache_beam.pvalue import AsSingleton, PBegin, PCollection

from schemas.config import MixConfig, SourceConfig
from schemas.records import LEDGER_SCHEMA, Document
from schemas.taxonomy import DEFAULT_TAXONOMY, narrative_of
from transforms.blend.bodies import with_body
from transforms.blend.plan_model import BlendPlan
from transforms.blend.sample import BlendResult, BlendSources, PlanBlend, order_key
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
from transforms.report.counts import CountBy, SumBy, count_key, ledger_counts, shard_counts
from transforms.report.html import write_report_html
from transforms.report.records import WriteRunRecords


class Watched(dict[str, list[PCollection]]):
    """Stage name -> the PCollections whose elements a progress line counts for it."""

    def add(self, stage: str, pcoll: PCollection) -> None:
        self.setdefault(stage, []).append(pcoll)


class Labelled(NamedTuple):
    """``ReadAndLabel``'s outputs: labelled documents, ledger rows, dead letters, counts."""

    kept: PCollection
    dropped: PCollection
    dead_letters: PCollection
    counts: PCollection
    classified: list[PCollection]
    watched: Watched


class Deduplicated(NamedTuple):
    """``Deduplicate``'s outputs: the survivors, ledger rows, index entries and counts."""

    kept: PCollection
    dropped: PCollection
    index_entries: PCollection
    counts: PCollection


class Written(NamedTuple):
    """``WriteOutputs``'s outputs: one stats dict per written shard, the ledger, its counts."""

    shards: PCollection
    ledger: PCollection
    counts: PCollection


class MixResult(NamedTuple):
    """The main PCollections of a mix, for tests and the progress taps."""

    dead_letters: PCollection
    ledger: PCollection
    shards: PCollection
    plan: PCollection
    report: PCollection
    watched: Watched


def _counted(
    counts: list[PCollection],
    stage: str,
    label: str,
    before: PCollection,
    kept: PCollection,
    dropped: PCollection | None = None,
) -> None:
    """Appends a stage's ``("stage", stage, in/out/dropped)`` counts, which conservation balances."""
    counts.append(before | f"Count{label}In" >> CountBy(lambda _: count_key("stage", stage, "in")))
    counts.append(kept | f"Count{label}Out" >> CountBy(lambda _: count_key("stage", stage, "out")))
    if dropped is not None:
        counts.append(
            dropped | f"Count{label}Dropped" >> CountBy(lambda _: count_key("stage", stage, "dropped"))
        )


def _flatten(p: PBegin | PCollection, pcolls: list[PCollection], label: str) -> PCollection:
    """Flatten that also works for an empty list (a config may have no classified source)."""
    if not pcolls:
        return p.pipeline | label >> beam.Create([])
    return pcolls | label >> beam.Flatten()


def _unclassified(doc: dict[str, Any], narrative: str, tropes_field: str | None) -> dict[str, Any]:
    """Labels a document that is not classified: the source's narrative, or its metadata trope tags."""
    if tropes_field is None:
        return {**doc, "narrative": narrative, "tropes": [], "trope_scores": {}}
    tags = doc.get("meta", {}).get(tropes_field) or []
    tags = [tags] if isinstance(tags, str) else tags
    tropes = sorted({str(t) for t in tags} & set(DEFAULT_TAXONOMY.trope_labels))
    return {**doc, "narrative": narrative_of(tropes), "tropes": tropes, "trope_scores": {}}


def _narrative_key(doc: Document) -> tuple[str, ...]:
    return count_key("narrative_in", doc["source"], doc["narrative"])


class _MixStage(beam.PTransform):
    """A composite of the mix, configured by the run config alone.

    Args:
      cfg: the run config.
    """

    def __init__(self, cfg: MixConfig) -> None:
        super().__init__()
        self._cfg = cfg


class _Sink:
    """What the per-source branches of ``ReadAndLabel`` hand to its Flattens."""

    def __init__(self) -> None:
        self.kept: list[PCollection] = []
        self.dropped: list[PCollection] = []
        self.dead: list[PCollection] = []
        self.counts: list[PCollection] = []
        self.classified: list[PCollection] = []
        self.watched = Watched()


class ReadAndLabel(_MixStage):
    """Every source read, its ids checked, decontaminated, and labelled with a narrative.

    Each source runs on its own up to the final Flatten: a Flatten of several inputs
    makes the in-process runner move every element through its driver, so whole
    documents are flattened once, after labelling.  Scores and decisions depend on the
    document alone, so the output is the same either way.

    Args:
      cfg: the run config.
    """

    def expand(self, p: PBegin) -> Labelled:
        sink = _Sink()
        for source in self._cfg.sources:
            self._source(p, source, sink)
        dead = _flatten(p, sink.dead, "AllDeadLetters")
        sink.counts.append(dead | "CountDead" >> CountBy(lambda d: count_key("dead_letters", d["source"])))
        # Dead-letter errors start with their reason (``bad_json: ...``), see transforms/io/documents.py.
        sink.counts.append(
            dead
            | "CountDeadReasons"
            >> CountBy(lambda d: count_key("dead_reason", d["stage"], d["error"].split(":", 1)[0]))
        )
        return Labelled(
            kept=sink.kept | "Labelled" >> beam.Flatten(),
            dropped=_flatten(p, sink.dropped, "Dropped"),
            dead_letters=dead,
            counts=sink.counts | "Counts" >> beam.Flatten(),
            classified=sink.classified,
            watched=sink.watched,
        )

    def _source(self, p: PBegin, source: SourceConfig, sink: _Sink) -> None:
        """One source's branch: Read -> Ids -> Decontaminate -> Classify -> Policy, or Narrative."""
        name, cfg = source.name, self._cfg
        read = p | f"Read[{name}]" >> ReadSource(source, cfg.read)
        sink.watched.add("read", read.kept)
        sink.dead.append(read.dead_letter)
        sink.counts.append(read.counts)
        sink.counts.append(
            read.kept | f"CountRead[{name}]" >> CountBy(lambda d: count_key("read_docs", d["source"]))
        )
        ids = read.kept | f"Ids[{name}]" >> UniqueIds(name, source.duplicate_ids)
        _counted(sink.counts, "ids", f"Ids[{name}]", read.kept, ids.kept, ids.dropped)
        sink.dropped.append(ids.dropped)
        docs = ids.kept
        decon = cfg.decontaminate
        if decon is not None and (not decon.sources or name in decon.sources):
            # Before classification: a contaminated document is not worth scoring.
            clean = docs | f"Decontaminate[{name}]" >> Decontaminate(decon)
            _counted(sink.counts, "decontaminate", f"Decontaminate[{name}]", docs, clean.kept, clean.dropped)
            sink.dropped.append(clean.dropped)
            docs = clean.kept
        if source.classify and source.tropes_field is None:
            self._classified(name, docs, sink)
            return
        narrated = docs | f"Narrative[{name}]" >> beam.Map(
            _unclassified, source.narrative, source.tropes_field
        )
        sink.counts.append(narrated | f"CountNarrativesIn[{name}]" >> CountBy(_narrative_key))
        sink.kept.append(narrated)

    def _classified(self, name: str, docs: PCollection, sink: _Sink) -> None:
        """Classify and Policy of one source, and the corpus profile report.html shows."""
        cfg = self._cfg.classifier
        classified = docs | f"Classify[{name}]" >> ClassifyDocuments(cfg)
        sink.watched.add("classify", classified)
        policy = classified | f"Policy[{name}]" >> ApplyPolicy(cfg)
        _counted(sink.counts, "classify", f"Classify[{name}]", docs, classified)
        _counted(sink.counts, "policy", f"Policy[{name}]", classified, policy.kept, policy.dropped)
        sink.kept.append(policy.kept)
        sink.dropped.append(policy.dropped)
        sink.classified.append(classified)
        # The corpus before the mix, by narrative, length, language and fired label.
        sink.counts.append(classified | f"CountNarrativesIn[{name}]" >> CountBy(_narrative_key))
        sink.counts.append(
            classified
            | f"CountNarrativesByLength[{name}]"
            >> CountBy(lambda d: count_key("narrative_len", length_bucket(len(d["text"])), d["narrative"]))
        )
        sink.counts.append(
            classified
            | f"CountNarrativesByLanguage[{name}]"
            >> CountBy(lambda d: count_key("narrative_lang", d["lang"], d["narrative"]))
        )
        sink.counts.append(
            classified
            | f"LabelsIn[{name}]" >> beam.FlatMap(lambda d: d["tropes"])
            | f"CountLabelsIn[{name}]" >> CountBy(lambda label: count_key("label_in", label))
        )


class Deduplicate(_MixStage):
    """Near and exact duplicates removed across the sources that dedup; the others pass as singletons.

    Args:
      cfg: the run config.
    """

    def expand(self, labelled: PCollection) -> Deduplicated:
        cfg = self._cfg
        dedup_sources = {s.name for s in cfg.sources if s.dedup}
        to_dedup = labelled | "ToDedup" >> beam.Filter(lambda d: d["source"] in dedup_sources)
        priorities = {s.name: s.dedup_priority for s in cfg.sources}
        dedup = to_dedup | "Dedup" >> DedupDocuments(cfg.dedup, priorities)
        counts: list[PCollection] = []
        _counted(counts, "dedup", "Dedup", to_dedup, dedup.kept, dedup.dropped)
        # When every source is deduplicated, NoDedup is empty by construction; leaving it out
        # of the Flatten spares the in-process runner a pass of every survivor through its driver.
        kept = dedup.kept
        if dedup_sources != {s.name for s in cfg.sources}:
            singletons = (
                labelled
                | "SkipDedup" >> beam.Filter(lambda d: d["source"] not in dedup_sources)
                | "NoDedup" >> beam.Map(lambda d: {**d, "cluster_id": d["id"], "cluster_size": 1})
            )
            kept = [dedup.kept, singletons] | "Survivors" >> beam.Flatten()
        return Deduplicated(kept, dedup.dropped, dedup.index_entries, counts | "Counts" >> beam.Flatten())


class RunOutputs(NamedTuple):
    """What a run keeps besides the shards, for ``WriteOutputs``.

    Attributes:
      plan: the blend plan (one element).
      ledger: ledger rows of every stage, the blend's included.
      dead_letters: every source's dead letters.
      index_entries: the dedup index rows of this run's survivors.
    """

    plan: PCollection
    ledger: list[PCollection]
    dead_letters: PCollection
    index_entries: PCollection


class WriteOutputs(_MixStage):
    """Shards, ledger, dead letters and dedup index, written to the staging directory.

    Nothing is written before the plan exists, so a plan that cannot be met leaves no files.

    Args:
      cfg: the run config.
      staged: the staging directory.
      kept: the plan, ledger rows, dead letters and index entries of the run.
    """

    def __init__(self, cfg: MixConfig, staged: str, kept: RunOutputs) -> None:
        super().__init__(cfg)
        self._staged = staged
        self._kept = kept

    def expand(self, assigned: PCollection) -> Written:
        """Writes ``assigned``, the blend's ``(shard, copy)`` pairs, and everything else the run keeps."""
        cfg, staged, out, plan = self._cfg, self._staged, self._cfg.output, self._kept.plan
        counts = [assigned | "CountWriteIn" >> CountBy(lambda _: count_key("stage", "write", "in"))]
        counts.append(assigned | "CountChatTokens" >> SumBy(chat_token_pairs))
        seed = cfg.blend.seed
        suffix, encode, to_row = shard_format(out.format, out.row_group_size)
        shards = assigned | "WriteShards" >> WriteSortedFiles(
            f"{staged}/shards",
            out.shard_prefix,
            plan | "ShardCount" >> beam.Map(lambda plan: plan.num_shards),
            suffix,
            encode,
            sort_key=lambda d: order_key(d, seed),
            to_row=lambda d: to_row(with_body(d)),
            describe=describe_shard,
        )
        counts.append(shards | "ShardCounts" >> beam.FlatMap(shard_counts))
        ledger = self._kept.ledger | "Ledger" >> beam.Flatten()
        counts.append(ledger | "CountLedger" >> SumBy(ledger_counts))
        counts.append(self._cluster_docs(ledger))
        ledger_files = ledger | "WriteLedger" >> WriteHashedFiles(
            f"{staged}/ledger",
            "ledger",
            out.ledger_shards,
            parquet_encoder(LEDGER_SCHEMA, out.row_group_size),
            sort_key=lambda r: (r["id"], r["stage"]),
            to_row=ledger_row,
        )
        dead_files = self._kept.dead_letters | "WriteDeadLetters" >> WriteDeadLetters(
            f"{staged}/dead_letter", wait_for=plan
        )
        if cfg.dedup.write_index:
            _ = (
                self._kept.index_entries
                | "IndexAfterPlan" >> beam.Map(lambda r, _: r, AsSingleton(plan))
                | "WriteDedupIndex" >> WriteDedupIndex(f"{staged}/dedup_index", cfg.dedup)
            )
        # The report waits for ledger and dead-letter files too, so a finished report means a finished run.
        written = [shards, ledger_files, dead_files] | "AllFiles" >> beam.Flatten()
        shard_stats = written | "OnlyShards" >> beam.Filter(lambda s: "by_source" in s)
        return Written(shard_stats, ledger, counts | "Counts" >> beam.Flatten())

    def _cluster_docs(self, ledger: PCollection) -> PCollection:
        """Cluster sizes: a deduplicated document has exactly one dedup or blend ledger row
        carrying its cluster size, so k such rows of size k are one cluster."""
        dedup_sources = {s.name for s in self._cfg.sources if s.dedup}
        return (
            ledger
            | "DedupedRows"
            >> beam.Filter(lambda r: r["source"] in dedup_sources and r["stage"] in ("dedup", "blend"))
            | "CountClusterDocs" >> CountBy(lambda r: count_key("cluster_docs", str(r["cluster_size"])))
        )


def roles(cfg: MixConfig) -> dict[str, str]:
    """Source name -> role, which narrative balance uses to find stories and web text."""
    return {s.name: s.role.value for s in cfg.sources}


def _blend_counts(survivors: PCollection, blend: BlendResult) -> PCollection:
    """The blend stage's in/out/dropped counts: a ledger row per survivor, written or sampled out."""
    return [
        survivors | "CountBlendIn" >> CountBy(lambda _: count_key("stage", "blend", "in")),
        blend.ledger
        | "CountBlendOut"
        >> CountBy(lambda r: count_key("stage", "blend", "out" if r["fate"] == "written" else "dropped")),
    ] | "BlendCounts" >> beam.Flatten()


class BuildMix(beam.PTransform):
    """The whole mix: everything is written to the staging directory of ``output.path``
    and published by the last step (transforms/io/publication.py).

    Args:
      cfg: a validated config.
      overwrite: replace a non-empty ``output.path`` that is not a finished run.
    """

    def __init__(self, cfg: MixConfig, overwrite: bool = False) -> None:
        super().__init__()
        self._cfg = cfg
        self._overwrite = overwrite

    def expand(self, p: PBegin) -> MixResult:
        cfg = self._cfg
        final = cfg.output.path.rstrip("/")
        staged = staging_dir(final)
        labelled = p | "ReadAndLabel" >> ReadAndLabel(cfg)
        survivors = labelled.kept | "Deduplicate" >> Deduplicate(cfg)
        blend = survivors.kept | "Blend" >> BlendSources(cfg.blend, roles(cfg))
        kept = RunOutputs(
            blend.plan,
            [labelled.dropped, survivors.dropped, blend.ledger],
            labelled.dead_letters,
            survivors.index_entries,
        )
        written = blend.assigned | "WriteOutputs" >> WriteOutputs(cfg, staged, kept)
        counts = [labelled.counts, survivors.counts, _blend_counts(survivors.kept, blend), written.counts]
        excerpts = None
        if cfg.output.report_excerpts:
            classified = _flatten(p, labelled.classified, "AllClassified")
            excerpts = classified | "SampleExcerpts" >> SampleExcerpts(cfg.output.report_excerpts)
        report = blend.plan | "Report" >> WriteRunRecords(
            staged,
            final,
            cfg.run_name,
            cfg.model_dump(mode="json"),
            [s.name for s in cfg.sources],
            counts | "AllCounts" >> beam.Flatten(),
            written.shards,
            excerpts,
        )
        published = report | "Publish" >> Publish(staged, final, self._overwrite, write_report_html)
        watched = labelled.watched
        watched.add("dedup", labelled.kept)
        watched.add("blend", blend.assigned)
        watched.add("write", written.shards)
        return MixResult(
            labelled.dead_letters, written.ledger, written.shards, blend.plan, published, watched
        )


class PlanMix(_MixStage):
    """The counting pass alone: read, label, dedup, units, plan -> ``plan.json``.

    Writes no shards, ledger or report; ``tropemix run`` computes the same plan inside
    the full DAG and stores it in ``manifest.json``.

    Args:
      cfg: a validated config.
    """

    def expand(self, p: PBegin) -> PCollection:
        cfg = self._cfg
        labelled = p | "ReadAndLabel" >> ReadAndLabel(cfg)
        survivors = labelled.kept | "Deduplicate" >> Deduplicate(cfg)
        planned = survivors.kept | "Blend" >> PlanBlend(cfg.blend, roles(cfg))
        path = f"{cfg.output.path.rstrip('/')}/plan.json"
        return planned.plan | "WritePlan" >> beam.Map(_write_plan, path)


def _write_plan(plan: BlendPlan, path: str) -> dict[str, Any]:
    as_json = plan.to_dict()
    write_atomically(path, json.dumps(as_json, indent=2, sort_keys=True).encode())
    return as_json
