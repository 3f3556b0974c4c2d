"""Blending: an exact plan of units per source, then exact, hash-ranked sampling and sharding.

The plan is a pure function of the available counts and the config
(``compute_plan``).  Execution never flips coins: every document gets a rank from a
hash of its stable id and the seed (``ExactRank``), the first ``remainder`` ranks of
a source get one more epoch than the rest, and copies are dealt to shards round
robin by a second rank, so every shard holds each source's share within one
document.  None of it depends on worker count, bundle boundaries or input order.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import apache_beam as beam
from apache_beam.metrics import Metrics

from schemas.config import BlendConfig
from schemas.records import Document, LedgerRow
from transforms.text import stable_hash

NAMESPACE = "tropemix.blend"
_RANK_BUCKET_BITS = 16


class PlanError(ValueError):
    """A blend target that cannot be met; the message gives the numbers."""


def allocate(total: int, shares: Mapping[str, float]) -> dict[str, int]:
    """Splits ``total`` units over sources by share, summing exactly to ``total``.

    Largest-remainder rounding; ties go to the name that sorts first, so the result
    does not depend on dict order.

    Args:
      total: units to allocate.
      shares: source -> share, summing to 1.
    """
    names = sorted(shares)
    raw = {n: shares[n] * total for n in names}
    out = {n: math.floor(raw[n] + 1e-9) for n in names}
    left = total - sum(out.values())
    by_fraction = sorted(names, key=lambda n: (-(raw[n] - out[n]), n))
    for n in by_fraction[: max(left, 0)]:
        out[n] += 1
    return out


def compute_plan(cfg: BlendConfig, available: Mapping[str, int]) -> dict[str, Any]:
    """The blend plan: target units, full epochs and remainder per source.

    Args:
      cfg: blend config.
      available: source -> documents available after filtering and dedup.

    Raises:
      PlanError: a target needs more than ``max_epochs`` passes over a source.
    """
    shares = {name: s.share for name, s in cfg.sources.items()}
    avail = {name: int(available.get(name, 0)) for name in shares}
    if cfg.total is not None:
        total = cfg.total
    else:
        caps = [avail[n] * cfg.sources[n].max_epochs / shares[n] for n in shares if shares[n] > 0]
        total = math.floor(min(caps) + 1e-9) if caps else 0
    targets = allocate(total, shares)
    problems = []
    sources: dict[str, Any] = {}
    for name in sorted(shares):
        target, have, cap = targets[name], avail[name], cfg.sources[name].max_epochs
        if target > have * cap:
            need = "no documents" if have == 0 else f"{target / have:.2f} epochs"
            problems.append(
                f"source {name!r}: target {target} documents ({shares[name]:.4%} of {total}) but only "
                f"{have} available x max_epochs {cap} = {have * cap}; needs {need}"
            )
            continue
        full, remainder = divmod(target, have) if have else (0, 0)
        sources[name] = {
            "share": shares[name],
            "available": have,
            "target": target,
            "max_epochs": cap,
            "full_epochs": full,
            "remainder": remainder,
            "rate": target / have if have else 0.0,
        }
    if problems:
        raise PlanError("blend plan cannot be met:\n  " + "\n  ".join(problems))
    return {
        "unit": cfg.unit,
        "total": total,
        "seed": cfg.seed,
        "num_shards": cfg.num_shards,
        "sources": sources,
    }


def copies_of(rank: int, source_plan: Mapping[str, Any]) -> int:
    """How many copies of the document with ``rank`` the plan asks for."""
    return int(source_plan["full_epochs"]) + (1 if rank < int(source_plan["remainder"]) else 0)


def shard_of(rank: int, source: str, num_shards: int) -> int:
    """Round-robin shard of a copy; the start shard rotates per source to even out sizes."""
    return (rank + stable_hash("shard-offset", source)) % num_shards


def _offsets(histogram: Iterable[tuple[tuple[str, int], int]]) -> dict[tuple[str, int], int]:
    """Exclusive prefix sums of bucket counts per group."""
    out: dict[tuple[str, int], int] = {}
    running: dict[str, int] = {}
    for (group, bucket), n in sorted(histogram):
        out[(group, bucket)] = running.get(group, 0)
        running[group] = running.get(group, 0) + n
    return out


def _rank_bucket(
    item: tuple[tuple[str, int], Iterable[tuple[Any, Any]]], offsets: Mapping[tuple[str, int], int]
) -> Iterator[tuple[str, int, Any]]:
    (group, bucket), members = item
    base = offsets[(group, bucket)]
    for i, (_, value) in enumerate(sorted(members, key=lambda kv: kv[0])):
        yield group, base + i, value


class ExactRank(beam.PTransform):
    """Exact 0-based rank of each element within its group, by a sortable key.

    Input ``(group, key, value)`` where ``key`` is a tuple whose first item is a
    63-bit hash (``stable_hash``); keys are unique within a group.  A histogram of the top 16 bits
    gives each bucket's offset (a small side input); each bucket is then sorted on
    its own, so no worker ever holds a whole group.  Output ``(group, rank, value)``.
    """

    def expand(self, pcoll: beam.PCollection) -> beam.PCollection:
        shift = 63 - _RANK_BUCKET_BITS
        bucketed = pcoll | "Bucket" >> beam.Map(lambda t: ((t[0], t[1][0] >> shift), (t[1], t[2])))
        offsets = (
            bucketed
            | "One" >> beam.Map(lambda kv: (kv[0], 1))
            | "CountPerBucket" >> beam.CombinePerKey(sum)
            | "Offsets" >> beam.combiners.ToList()
            | "PrefixSums" >> beam.Map(_offsets)
        )
        return (
            bucketed
            | "GroupBucket" >> beam.GroupByKey()
            | "RankInBucket" >> beam.FlatMap(_rank_bucket, offsets=beam.pvalue.AsSingleton(offsets))
        )


def _expand_copies(item: tuple[str, int, Document], plan: Mapping[str, Any]) -> Iterator[Any]:
    source, rank, doc = item
    n = copies_of(rank, plan["sources"][source])
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
        detail="",
        narrative=doc.get("narrative", "none"),
        cluster_id=doc.get("cluster_id", doc["id"]),
        cluster_size=doc.get("cluster_size", 1),
        copies=copies,
    )


def order_key(doc: Mapping[str, Any], seed: int) -> tuple[int, str, int]:
    """Position of a copy inside its shard: a deterministic shuffle."""
    return (stable_hash("order", seed, doc["id"], doc["epoch"]), doc["id"], doc["epoch"])


class BlendSources(beam.PTransform):
    """Counts, plans and samples the sources, and assigns every copy to a shard.

    Returns a dict: ``assigned`` ``(shard, document copy)`` pairs, ``ledger`` rows
    (written or sampled out, one per input document), and ``plan`` (one dict).

    Args:
      cfg: blend config.
    """

    def __init__(self, cfg: BlendConfig) -> None:
        super().__init__()
        self._cfg = cfg

    def expand(self, docs: beam.PCollection) -> dict[str, beam.PCollection]:
        cfg = self._cfg
        seed = cfg.seed
        plan = (
            docs
            | "SourceOf" >> beam.Map(lambda d: d["source"])
            | "CountSources" >> beam.combiners.Count.PerElement()
            | "Available" >> beam.combiners.ToDict()
            | "Plan" >> beam.Map(lambda available: compute_plan(cfg, available))
        )
        plan_side = beam.pvalue.AsSingleton(plan)
        selected = (
            docs
            | "SelectionKey"
            >> beam.Map(lambda d: (d["source"], (stable_hash("select", seed, d["id"]), d["id"]), d))
            | "SelectionRank" >> ExactRank()
            | "Copies" >> beam.FlatMap(_expand_copies, plan=plan_side).with_outputs("ledger", main="copies")
        )
        n = cfg.num_shards
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
            | "ShardRank" >> ExactRank()
            | "AssignShard" >> beam.Map(lambda t: (shard_of(t[1], t[0], n), t[2]))
        )
        return {"assigned": assigned, "ledger": selected.ledger, "plan": plan}
