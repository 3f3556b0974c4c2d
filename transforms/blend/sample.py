"""Exact, hash-ranked sampling of the plan and dealing of the copies to shards.

Execution never flips coins: every document gets a rank from a hash of its stable id
and the seed (``ExactRank``), the first ``remainder`` units of a stratum in rank
order get one more epoch than the rest (``copies_of``), and copies are dealt to shards
round robin by a second rank, so every shard holds each source's share within one
document.  None of it depends on worker count, bundle boundaries or input order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, NamedTuple

import apache_beam as beam
from apache_beam.metrics import Metrics

from schemas.config import BlendConfig
from schemas.records import Document, LedgerRow
from transforms.blend.allocation import shard_offset
from transforms.blend.bodies import BODY_KEY, rejoin_bodies, split_body
from transforms.blend.plan import compute_plan
from transforms.blend.plan_model import ALL, BlendPlan, ProfileRow, StratumPlan, Tags, narrative_class
from transforms.blend.units import MeasureUnits
from transforms.report.counts import truncation_note
from transforms.text import stable_hash

NAMESPACE = "tropemix.blend"
_RANK_BUCKET_BITS = 16


def stratum_key(doc: Mapping[str, Any], plan: BlendPlan) -> str:
    """The stratum a document is sampled in (see ``compute_plan``)."""
    if plan.narrative_balance is None:
        return ALL
    c = narrative_class(doc.get("narrative", "none"))
    if c != "aligned":
        return c
    return plan.stratum_of.get((doc["source"], tuple(doc.get("tropes", []))), c)


def copies_of(before: int, units: int, stratum_plan: StratumPlan) -> int:
    """How many copies of a document the plan asks for.

    Every document gets ``full_epochs`` copies; the ones whose units, counted in rank
    order, end nearer to the remainder than they start get one more, so the stratum
    lands within half a document of its target.

    Args:
      before: units of the stratum's documents ranked before this one.
      units: this document's units.
      stratum_plan: the stratum's plan.
    """
    extra = 1 if 2 * before + units < 2 * stratum_plan.remainder else 0
    return stratum_plan.full_epochs + extra


def shard_of(rank: int, source: str, num_shards: int) -> int:
    """Round-robin shard of a copy; the start shard rotates per source to even out sizes."""
    return (rank + shard_offset(source, num_shards)) % num_shards


def shard_of_units(before: int, total: int, source: str, num_shards: int) -> int:
    """Shard of a copy by where its units start among the source's ``total``: equal unit ranges."""
    return (before * num_shards // max(total, 1) + shard_offset(source, num_shards)) % num_shards


def _sum_pairs(pairs: Iterable[tuple[int, int]]) -> tuple[int, int]:
    n = w = 0
    for a, b in pairs:
        n += a
        w += b
    return n, w


def _offsets(
    histogram: Iterable[tuple[tuple[Any, int], tuple[int, int]]],
) -> dict[tuple[Any, int], tuple[int, int]]:
    """Exclusive prefix sums of bucket counts and weights per group."""
    out: dict[tuple[Any, int], tuple[int, int]] = {}
    running: dict[Any, tuple[int, int]] = {}
    for (group, bucket), (n, w) in sorted(histogram):
        before = running.get(group, (0, 0))
        out[(group, bucket)] = before
        running[group] = (before[0] + n, before[1] + w)
    return out


def _rank_bucket(
    item: tuple[tuple[Any, int], Iterable[tuple[Any, Any]]],
    offsets: Mapping[tuple[Any, int], tuple[int, int]],
    weight: Callable[[Any], int] | None,
) -> Iterator[tuple[Any, ...]]:
    (group, bucket), members = item
    rank, before = offsets[(group, bucket)]
    for _, value in sorted(members, key=lambda kv: kv[0]):
        if weight is None:
            yield group, rank, value
        else:
            yield group, rank, value, before
            before += weight(value)
        rank += 1


class ExactRank(beam.PTransform):
    """Exact 0-based rank of each element within its group, by a sortable key.

    Input ``(group, key, value)`` where ``key`` is a tuple whose first item is a
    63-bit hash (``stable_hash``); keys are unique within a group.  A histogram of the
    top 16 bits gives each bucket's offset (a small side input); each bucket is then
    sorted on its own, so no worker ever holds a whole group.  Output
    ``(group, rank, value)``; with ``weight``, ``(group, rank, value, before)`` where
    ``before`` is the summed weight of the group's lower-ranked elements, from the
    same histogram.

    Args:
      weight: value -> non-negative integer weight, or None for ranks only.
    """

    def __init__(self, weight: Callable[[Any], int] | None = None) -> None:
        super().__init__()
        self._weight = weight

    def expand(self, pcoll: beam.PCollection) -> beam.PCollection:
        shift = 63 - _RANK_BUCKET_BITS
        weight = self._weight
        bucketed = pcoll | "Bucket" >> beam.Map(lambda t: ((t[0], t[1][0] >> shift), (t[1], t[2])))
        offsets = (
            bucketed
            | "One" >> beam.Map(lambda kv: (kv[0], (1, weight(kv[1][1]) if weight else 0)))
            | "CountPerBucket" >> beam.CombinePerKey(_sum_pairs)
            | "Offsets" >> beam.combiners.ToList()
            | "PrefixSums" >> beam.Map(_offsets)
        )
        return (
            bucketed
            | "GroupBucket" >> beam.GroupByKey()
            | "RankInBucket"
            >> beam.FlatMap(_rank_bucket, offsets=beam.pvalue.AsSingleton(offsets), weight=weight)
        )


def _units(doc: Mapping[str, Any]) -> int:
    return int(doc["units"])


def _expand_copies(item: tuple[tuple[str, str], int, Document, int], plan: BlendPlan) -> Iterator[Any]:
    (source, stratum), _, doc, before = item
    n = copies_of(before, _units(doc), plan.sources[source].strata[stratum])
    yield beam.pvalue.TaggedOutput("ledger", written_or_sampled_out(doc, n))
    if n == 0:
        Metrics.counter(NAMESPACE, f"sampled_out.{source}").inc()
    for epoch in range(n):
        # Copies by epoch: epoch_0 counts documents written, later epochs count repeats.
        Metrics.counter(NAMESPACE, f"epoch_{epoch}.{source}").inc()
        yield {**doc, "epoch": epoch}


def written_or_sampled_out(doc: Document, copies: int) -> LedgerRow:
    """The ledger row a document gets at blend: written with ``copies`` or sampled out."""
    return LedgerRow(
        id=doc["id"],
        source=doc["source"],
        fate="written" if copies else "dropped",
        stage="blend",
        reason="" if copies else "sampled_out",
        detail=truncation_note(doc),
        narrative=doc.get("narrative", "none"),
        cluster_id=doc.get("cluster_id", doc["id"]),
        cluster_size=doc.get("cluster_size", 1),
        copies=copies,
    )


def order_key(doc: Mapping[str, Any], seed: int) -> tuple[int, str, int]:
    """Position of a copy inside its shard: a deterministic shuffle."""
    return (stable_hash("order", seed, doc["id"], doc["epoch"]), doc["id"], doc["epoch"])


def _profile_rows(item: tuple[tuple[str, str, Tags], tuple[int, int]]) -> ProfileRow:
    (source, narrative, tags), (docs, units) = item
    return source, narrative, tags, docs, units


def _assign_shard(
    item: tuple[str, int, Document, int], unit: str, plan: BlendPlan, totals: Mapping[str, int]
) -> tuple[int, Document]:
    source, rank, doc, before = item
    num_shards = plan.num_shards
    if unit == "documents":
        return shard_of(rank, source, num_shards), doc
    return shard_of_units(before, totals[source], source, num_shards), doc


class PlannedBlend(NamedTuple):
    """What ``PlanBlend`` returns.

    Attributes:
      docs: the documents with ``units`` (and ``chat_tokens`` for chat documents).
      profile: ``ProfileRow`` counts per source, narrative and trope tags.
      plan: the one ``BlendPlan``.
    """

    docs: beam.PCollection
    profile: beam.PCollection
    plan: beam.PCollection


class BlendResult(NamedTuple):
    """What ``BlendSources`` returns.

    Attributes:
      plan: the one ``BlendPlan`` (``to_dict`` gives its JSON form).
      ledger: a written or sampled-out ``LedgerRow`` per input document.
      assigned: ``(shard, document copy)`` pairs, text and metadata still packed under
        ``BODY`` (``with_body`` opens them).
    """

    plan: beam.PCollection
    ledger: beam.PCollection
    assigned: beam.PCollection


class PlanBlend(beam.PTransform):
    """Measures units, profiles the sources and computes the plan: the counting pass.

    Returns a ``PlannedBlend``; its ``plan`` step raises ``PlanError`` when the targets
    cannot be met, before anything is written.

    Args:
      cfg: blend config.
      roles: source -> role, for narrative balance.
    """

    def __init__(self, cfg: BlendConfig, roles: Mapping[str, str] | None = None) -> None:
        super().__init__()
        self._cfg = cfg
        self._roles = dict(roles or {})

    def expand(self, docs: beam.PCollection) -> PlannedBlend:
        cfg, roles = self._cfg, self._roles
        assistant_only = frozenset(n for n, b in cfg.sources.items() if b.chat_tokens == "assistant")
        measured = docs | "Units" >> MeasureUnits(cfg.unit, cfg.tokenizer, assistant_only=assistant_only)
        profile = (
            measured
            | "ProfileKey"
            >> beam.Map(
                lambda d: (
                    (d["source"], d.get("narrative", "none"), tuple(d.get("tropes", []))),
                    (1, d["units"]),
                )
            )
            | "SumProfile" >> beam.CombinePerKey(_sum_pairs)
            | "ProfileRows" >> beam.Map(_profile_rows)
        )
        plan = (
            profile
            | "Profile" >> beam.combiners.ToList()
            | "Plan" >> beam.Map(lambda rows: compute_plan(cfg, rows, roles))
        )
        return PlannedBlend(docs=measured, profile=profile, plan=plan)


class BlendSources(beam.PTransform):
    """Counts, plans and samples the sources, and assigns every copy to a shard.

    Text and metadata leave the documents after the units are measured: both
    ranking shuffles move light records, and one join (``BodyJoin``) puts the
    bodies back on the written copies.

    Returns a ``BlendResult``.

    Args:
      cfg: blend config.
      roles: source -> role, for narrative balance.
    """

    def __init__(self, cfg: BlendConfig, roles: Mapping[str, str] | None = None) -> None:
        super().__init__()
        self._cfg = cfg
        self._roles = dict(roles or {})

    def expand(self, docs: beam.PCollection) -> BlendResult:
        cfg = self._cfg
        seed = cfg.seed
        planned = docs | "PlanBlend" >> PlanBlend(cfg, self._roles)
        # The side input is the typed plan, not its JSON dict: ``stratum_of`` keeps its
        # ``(source, tags)`` keys, and it pickles by reference like any module-level class.
        plan_side = beam.pvalue.AsSingleton(planned.plan)
        split = planned.docs | "SplitBodies" >> beam.Map(split_body)
        bodies = split | "BodyByKey" >> beam.Map(lambda lb: (lb[0][BODY_KEY], lb[1]))
        selected = (
            split
            | "SelectionKey"
            >> beam.Map(
                lambda lb, plan: (
                    (lb[0]["source"], stratum_key(lb[0], plan)),
                    (stable_hash("select", seed, lb[0]["id"]), lb[0]["id"]),
                    lb[0],
                ),
                plan=plan_side,
            )
            | "SelectionRank" >> ExactRank(weight=_units)
            | "Copies" >> beam.FlatMap(_expand_copies, plan=plan_side).with_outputs("ledger", main="copies")
        )
        totals = (
            selected.copies
            | "CopyUnits" >> beam.Map(lambda d: (d["source"], d["units"]))
            | "UnitsPerSource" >> beam.CombinePerKey(sum)
        )
        assigned = (
            selected.copies
            | "ShardKey"
            >> beam.Map(
                lambda d: (
                    d["source"],
                    (stable_hash("shard", seed, d["id"], d["epoch"]), d["id"], d["epoch"]),
                    d,
                )
            )
            | "ShardRank" >> ExactRank(weight=_units)
            | "AssignShard"
            >> beam.Map(
                _assign_shard,
                unit=cfg.unit,
                plan=plan_side,
                totals=beam.pvalue.AsDict(totals),
            )
        )
        written = (
            {
                "copies": assigned | "CopyByKey" >> beam.Map(lambda sd: (sd[1][BODY_KEY], sd)),
                "body": bodies,
            }
            | "BodyJoin" >> beam.CoGroupByKey()
            | "WithBodies" >> beam.FlatMap(rejoin_bodies)
        )
        return BlendResult(plan=planned.plan, ledger=selected.ledger, assigned=written)
