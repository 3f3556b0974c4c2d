"""The blend plan: target units per source and per stratum, and the shard layout.

``compute_plan`` is a pure function of the profile (units per source, narrative and
trope tags after filtering and dedup) and the config, built in four phases:

(a) ``plan_targets``: units per source from shares or budgets, within ``max_epochs``,
    with the supply and starvation checks;
(b) ``balance_narratives`` (``balance.py``): the narrative balance;
(c) ``trope_strata`` (``balance.py``): the strata sampled on their own;
(d) ``shard_layout``: the shard count and each source's share of every shard.

Each phase raises ``PlanError`` with the numbers when its part cannot be met, before
anything is written.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from schemas.config import BlendConfig
from transforms.blend.allocation import allocate, shard_offset, shard_quotas
from transforms.blend.balance import Strata, balance_narratives, trope_strata, trope_table
from transforms.blend.plan_model import BlendPlan, PlanError, ProfileRow, SourcePlan, Supply


def _renormalized(shares: Mapping[str, float]) -> dict[str, float]:
    total = sum(shares.values())
    return {n: v / total if total else 0.0 for n, v in shares.items()}


def check_supply(cfg: BlendConfig, docs: Mapping[str, int]) -> None:
    """Fails when a source with a share or target brings no documents, or when no source brings any.

    Args:
      cfg: blend config; ``allow_empty_sources`` lets single empty sources through.
      docs: documents per source after read, policy and dedup.

    Raises:
      PlanError: naming each empty source; its dead letters and ledger say why.
    """
    wanted = [n for n, s in sorted(cfg.sources.items()) if (s.share or s.target or 0) > 0]
    empty = [n for n in wanted if not docs.get(n)]
    if wanted and len(empty) == len(wanted):
        raise PlanError(
            f"blend plan cannot be met: the mix would be empty; no source brings any {cfg.unit} "
            f"({', '.join(f'{n!r}: {docs.get(n, 0)} documents' for n in wanted)} after read, policy and dedup); "
            "check the inputs and the dead letters"
        )
    if empty and not cfg.allow_empty_sources:
        raise PlanError(
            "blend plan cannot be met: "
            + "; ".join(f"source {n!r} yields 0 documents" for n in empty)
            + " after read, policy and dedup; check its inputs and dead letters, or pass --allow-empty-source"
        )


def check_starved(cfg: BlendConfig, avail: Mapping[str, int], targets: Mapping[str, int]) -> None:
    """Fails when a scarce source limits a share-based total so far that another source is sampled away.

    Only with shares and no ``total``: then the total is what the scarcest source allows,
    and a broken source (a few surviving records) would shrink every other one.

    Args:
      cfg: blend config with ``min_source_fraction``.
      avail: units per source after read, policy and dedup.
      targets: planned units per source.

    Raises:
      PlanError: naming the starved sources, their numbers and the limiting source.
    """
    if not cfg.uses_shares or cfg.total is not None or not cfg.min_source_fraction:
        return
    shares = {n: float(s.share or 0.0) for n, s in cfg.sources.items() if avail.get(n) and s.share}
    if not shares:
        return
    limiting = min(shares, key=lambda n: (avail[n] * cfg.sources[n].max_epochs / shares[n], n))
    starved = [
        f"source {n!r}: planned {targets[n]} of {avail[n]} available {cfg.unit} "
        f"({targets[n] / avail[n]:.2%} < blend.min_source_fraction {cfg.min_source_fraction:.0%})"
        for n in sorted(shares)
        if n != limiting and targets[n] < cfg.min_source_fraction * avail[n]
    ]
    if starved:
        raise PlanError(
            "blend plan cannot be met: "
            + "; ".join(starved)
            + f", because source {limiting!r} has only {avail[limiting]} {cfg.unit} for share "
            f"{shares[limiting]:g}; fix that source's inputs, lower its share, set blend.total, "
            "or lower blend.min_source_fraction"
        )


def budget_targets(
    cfg: BlendConfig, avail: Mapping[str, int], epochs: Mapping[str, int]
) -> tuple[dict[str, int], dict[str, str]]:
    """Targets when some sources have an absolute budget: budgets as given, shares of the rest.

    The shares split what the budgets leave of ``total``; without ``total``, the largest
    rest that no share source's ``available * max_epochs`` limits.

    Args:
      cfg: blend config with at least one ``target``.
      avail: units per source.
      epochs: ``max_epochs`` per source.

    Returns:
      ``(targets, how each target was set)``.

    Raises:
      PlanError: the budgets alone exceed ``total``.
    """
    names = sorted(cfg.sources)
    targets = {n: int(cfg.sources[n].target or 0) for n in names if cfg.sources[n].target is not None}
    wanted = {n: "budget" for n in targets}
    shares = {n: float(cfg.sources[n].share or 0.0) for n in names if cfg.sources[n].share is not None}
    if not shares:
        return targets, wanted
    budgeted = sum(targets.values())
    if cfg.total is not None:
        rest = cfg.total - budgeted
        if rest < 0:
            raise PlanError(
                f"blend plan cannot be met: budgets sum to {budgeted} {cfg.unit}, more than blend.total "
                f"{cfg.total}; raise blend.total or lower the budgets"
            )
    else:
        caps = [avail[n] * epochs[n] / shares[n] for n in shares if shares[n] > 0]
        rest = math.floor(min(caps) + 1e-9) if caps else 0
    targets.update(allocate(rest, shares))
    wanted.update({n: f"{shares[n]:.4%} of the {rest} the budgets leave" for n in shares})
    return targets, wanted


def _check_epochs(
    cfg: BlendConfig, supply: Supply, targets: Mapping[str, int], wanted: Mapping[str, str]
) -> None:
    """Fails when a target needs more than ``max_epochs`` passes over its source."""
    problems = []
    for name in supply.names:
        target, have, cap = targets[name], supply.available[name], supply.max_epochs[name]
        if target > have * cap:
            need = f"no {cfg.unit}" if have == 0 else f"{target / have:.2f} epochs"
            problems.append(
                f"source {name!r}: target {target} {cfg.unit} ({wanted[name]}) but only "
                f"{have} available x max_epochs {cap} = {have * cap}; needs {need}"
                + (f"; raise max_epochs to {math.ceil(target / have)} or lower the budget" if have else "")
            )
    if problems:
        raise PlanError("blend plan cannot be met:\n  " + "\n  ".join(problems))


def share_targets(cfg: BlendConfig, supply: Supply) -> tuple[dict[str, int], dict[str, str]]:
    """Targets when every source has a share: of ``total``, or of the largest total the supply allows.

    Args:
      cfg: blend config with shares.
      supply: what the sources bring.

    Returns:
      ``(targets, how each target was set)``.
    """
    names, avail, epochs = supply.names, supply.available, supply.max_epochs
    shares = {n: float(cfg.sources[n].share or 0.0) for n in names}
    if cfg.allow_empty_sources:
        # An empty source (an incremental run without new files) leaves the mix to the others.
        shares = _renormalized({n: v if avail[n] else 0.0 for n, v in shares.items()})
    if cfg.total is not None:
        total = cfg.total
    else:
        caps = [avail[n] * epochs[n] / shares[n] for n in names if shares[n] > 0]
        total = math.floor(min(caps) + 1e-9) if caps else 0
    return allocate(total, shares), {n: f"{shares[n]:.4%} of {total}" for n in names}


def plan_targets(cfg: BlendConfig, supply: Supply) -> dict[str, int]:
    """Phase (a): units per source, from shares or budgets.

    Args:
      cfg: blend config.
      supply: what the sources bring.

    Raises:
      PlanError: a source with a share or budget is empty, a target needs more than
        ``max_epochs`` passes, or a scarce source starves the others.
    """
    check_supply(cfg, supply.docs)
    if cfg.uses_shares:
        targets, wanted = share_targets(cfg, supply)
    else:
        targets, wanted = budget_targets(cfg, supply.available, supply.max_epochs)
    _check_epochs(cfg, supply, targets, wanted)
    check_starved(cfg, supply.available, targets)
    return targets


@dataclass(frozen=True)
class ShardLayout:
    """How copies are dealt to shards.

    Args:
      num_shards: shard count.
      offsets: source -> start shard of its round-robin deal.
      quotas: source -> units (or copies) per shard.
    """

    num_shards: int
    offsets: dict[str, int]
    quotas: dict[str, tuple[int, ...]]


def shard_layout(cfg: BlendConfig, supply: Supply, targets: Mapping[str, int]) -> ShardLayout:
    """Phase (d): the shard count (``num_shards``, or from ``shard_size``) and each source's quotas.

    Args:
      cfg: blend config.
      supply: what the sources bring.
      targets: source -> units after narrative balance.

    Raises:
      PlanError: more shards than documents the plan can write (some would be empty).
    """
    total = sum(targets.values())
    num_shards = max(1, math.ceil(total / cfg.shard_size)) if cfg.shard_size else cfg.num_shards
    # Documents the plan can write at most: exactly the total for documents, else every copy allowed.
    most_docs = (
        total if cfg.unit == "documents" else sum(supply.docs[n] * supply.max_epochs[n] for n in supply.names)
    )
    if num_shards > max(1, most_docs):
        raise PlanError(
            f"blend plan cannot be met: {num_shards} shards for at most {most_docs} documents would write "
            f"empty shards; set blend.num_shards to at most {max(1, most_docs)} (or raise blend.shard_size)"
        )
    offsets = {n: shard_offset(n, num_shards) for n in supply.names}
    quotas = {n: tuple(shard_quotas(targets[n], num_shards, offsets[n])) for n in supply.names}
    return ShardLayout(num_shards, offsets, quotas)


def profile_supply(cfg: BlendConfig, profile: Iterable[Sequence[Any]], roles: Mapping[str, str]) -> Supply:
    """The profile's counts per configured source.

    Args:
      cfg: blend config.
      profile: ``ProfileRow`` counts in any order; rows of other sources are ignored.
      roles: source -> role.
    """
    rows: list[ProfileRow] = sorted(
        (str(s), str(n), tuple(t), int(d), int(u)) for s, n, t, d, u in profile if s in cfg.sources
    )
    names = sorted(cfg.sources)
    return Supply(
        rows=tuple(rows),
        available={n: sum(r[4] for r in rows if r[0] == n) for n in names},
        docs={n: sum(r[3] for r in rows if r[0] == n) for n in names},
        max_epochs={n: cfg.sources[n].max_epochs for n in names},
        roles=dict(roles),
    )


def _source_plan(
    cfg: BlendConfig, supply: Supply, name: str, target: int, total: int, layout: ShardLayout, strata: Strata
) -> SourcePlan:
    avail, epochs = supply.available[name], supply.max_epochs[name]
    return SourcePlan(
        role=supply.roles.get(name),
        share=cfg.sources[name].share,
        budget=cfg.sources[name].target,
        within_max_epochs=target <= avail * epochs,
        target_share=target / total if total else 0.0,
        available_docs=supply.docs[name],
        available=avail,
        target=target,
        max_epochs=epochs,
        epochs=target / avail if avail else 0.0,
        shard_offset=layout.offsets[name],
        shard_targets=layout.quotas[name],
        strata=strata.strata[name],
    )


def compute_plan(
    cfg: BlendConfig, profile: Iterable[Sequence[Any]], roles: Mapping[str, str] | None = None
) -> BlendPlan:
    """The blend plan: target units per source and per stratum, with epochs and remainders.

    A stratum is the part of a source that is sampled on its own: the whole source, or,
    with ``narrative_balance``, its aligned / misaligned / other documents (aligned
    stories split further by the misaligned trope they counter with ``match_tropes``).
    Each stratum's target is ``full_epochs`` passes over it plus ``remainder`` units taken
    in hash-rank order.

    Args:
      cfg: blend config.
      profile: ``ProfileRow`` counts after filtering and dedup, in any order.
      roles: source -> role (``web``, ``synthetic_story`` ...), for narrative balance.

    Raises:
      PlanError: a target needs more than ``max_epochs`` passes over a source, or the
        narrative balance cannot be met; the message gives the numbers.
    """
    supply = profile_supply(cfg, profile, roles or {})
    balanced = balance_narratives(cfg, supply, plan_targets(cfg, supply))
    layout = shard_layout(cfg, supply, balanced.targets)
    strata = trope_strata(cfg, supply, balanced.class_targets)
    total = sum(balanced.targets.values())
    return BlendPlan(
        unit=cfg.unit,
        tokenizer=cfg.tokenizer if cfg.unit == "tokens" else None,
        total=total,
        seed=cfg.seed,
        num_shards=layout.num_shards,
        sources={
            n: _source_plan(cfg, supply, n, t, total, layout, strata)
            for n, t in sorted(balanced.targets.items())
        },
        stratum_of=strata.stratum_of,
        narrative_balance=balanced.narrative,
        trope_matching=trope_table(strata.trope_weights, strata.strata) if strata.trope_weights else {},
    )
