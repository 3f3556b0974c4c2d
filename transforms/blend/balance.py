"""Plan phases (b) and (c): narrative balance over the source targets, then the trope strata.

With ``narrative_balance``, each source's target splits into its aligned, misaligned
and other units; aligned stories are added (``add_stories``) or misaligned web units
removed (``downsample_misaligned``) until the aligned share is reached.  With
``match_tropes``, aligned stories split further by the misaligned trope they counter,
each trope weighted by its web units.  Both are pure functions of ``Supply``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import NamedTuple

from schemas.config import BlendConfig, NarrativeBalance
from schemas.taxonomy import DEFAULT_COUNTERS
from transforms.blend.allocation import allocate, allocate_capped
from transforms.blend.plan_model import (
    ALL,
    NarrativeCounts,
    NarrativePlan,
    PlanError,
    ProfileRow,
    StratumPlan,
    Supply,
    Tags,
    TropeMatch,
    joined_tags,
    narrative_class,
)

ClassUnits = dict[str, dict[str, int]]
"""Source -> narrative class (or ``all``) -> units."""


@dataclass(frozen=True)
class Balanced:
    """Targets after narrative balance.

    Args:
      targets: source -> units.
      class_targets: source -> narrative class (``all`` without balance) -> units.
      narrative: what the balance did, or None without it.
    """

    targets: dict[str, int]
    class_targets: ClassUnits
    narrative: NarrativePlan | None


@dataclass(frozen=True)
class Strata:
    """The strata of every source.

    Args:
      stratum_of: ``(source, tags)`` of an aligned story -> the trope stratum it serves.
      trope_weights: misaligned trope -> its web units.
      strata: source -> stratum name -> its plan.
    """

    stratum_of: dict[tuple[str, Tags], str]
    trope_weights: dict[str, int]
    strata: dict[str, dict[str, StratumPlan]]


def _class_supply(supply: Supply, balanced: bool) -> ClassUnits:
    out: ClassUnits = {n: {} for n in supply.names}
    for source, narrative, _, _, units in supply.rows:
        c = narrative_class(narrative) if balanced else ALL
        out[source][c] = out[source].get(c, 0) + units
    return out


def _aligned_misaligned(cls_targets: ClassUnits) -> tuple[int, int]:
    aligned = sum(t.get("aligned", 0) for t in cls_targets.values())
    misaligned = sum(t.get("misaligned", 0) for t in cls_targets.values())
    return aligned, misaligned


class _Balancing(NamedTuple):
    """The targets narrative balance moves (``cls_targets`` and ``targets`` change in place)."""

    min_share: Fraction
    supply: Supply
    cls_avail: ClassUnits
    cls_targets: ClassUnits
    targets: dict[str, int]
    unit: str


def _add_stories(state: _Balancing) -> list[str]:
    """Raises aligned story targets (in place) up to the aligned share their epochs allow; the actions."""
    min_share, supply, cls_avail, cls_targets, targets, unit = state
    aligned, misaligned = _aligned_misaligned(cls_targets)
    needed = math.ceil(min_share * misaligned / (1 - min_share))
    if aligned >= needed:
        return []
    headroom = {
        n: cls_avail[n].get("aligned", 0) * supply.max_epochs[n] - cls_targets[n].get("aligned", 0)
        for n in supply.with_role("synthetic_story")
    }
    actions = []
    for n, k in sorted(allocate_capped(needed - aligned, headroom, headroom).items()):
        if k:
            cls_targets[n]["aligned"] = cls_targets[n].get("aligned", 0) + k
            targets[n] += k
            actions.append(
                f"added {k} {unit} of aligned stories from {n!r} "
                f"({targets[n] / supply.available[n]:.2f} of max {supply.max_epochs[n]} epochs)"
            )
    return actions


def _downsample_misaligned(state: _Balancing) -> list[str]:
    """Cuts misaligned web targets (in place) to the aligned share, refilled with other units; the actions."""
    min_share, supply, cls_avail, cls_targets, targets, unit = state
    aligned, misaligned = _aligned_misaligned(cls_targets)
    allowed = math.floor(aligned * (1 - min_share) / min_share)
    if misaligned <= allowed:
        return []
    mis_targets = {n: cls_targets[n].get("misaligned", 0) for n in supply.with_role("web")}
    actions = []
    for n, k in sorted(allocate_capped(misaligned - allowed, mis_targets, mis_targets).items()):
        if not k:
            continue
        cls_targets[n]["misaligned"] -= k
        spare = cls_avail[n].get("other", 0) * supply.max_epochs[n] - cls_targets[n].get("other", 0)
        refill = min(k, spare)
        if refill:
            cls_targets[n]["other"] = cls_targets[n].get("other", 0) + refill
        targets[n] -= k - refill
        actions.append(
            f"took {k} fewer misaligned {unit} from {n!r}"
            + (f", refilled with {refill} {unit} of its other documents" if refill else "")
            + (f", so its target shrinks by {k - refill}" if k > refill else "")
        )
    return actions


def _balance_error(
    balance: NarrativeBalance, unit: str, supply: Supply, cls_avail: ClassUnits, cls_targets: ClassUnits
) -> PlanError:
    min_share = Fraction(str(balance.min_aligned_share))
    aligned, misaligned = _aligned_misaligned(cls_targets)
    stories = supply.with_role("synthetic_story")
    story_cap = sum(cls_avail[n].get("aligned", 0) * supply.max_epochs[n] for n in stories)
    return PlanError(
        "narrative balance cannot be met: the plan has "
        f"{aligned} aligned and {misaligned} misaligned {unit} "
        f"(aligned share {aligned / (aligned + misaligned):.4f}, need {float(min_share):.4f}) "
        f"with strategy {balance.strategy!r}; aligned stories can give at most {story_cap} {unit} "
        f"({', '.join(stories) or 'no synthetic_story source'} x max_epochs), and "
        f"{sum(cls_targets[n].get('misaligned', 0) for n in supply.with_role('web'))} misaligned {unit} "
        "remain in web sources; raise max_epochs of the stories, add stories, or use strategy 'both'"
    )


def balance_narratives(cfg: BlendConfig, supply: Supply, targets: Mapping[str, int]) -> Balanced:
    """Phase (b): splits each source's target over its narrative classes and balances them.

    Args:
      cfg: blend config; without ``narrative_balance`` every source is one class, ``all``.
      supply: what the sources bring.
      targets: source -> units from phase (a).

    Raises:
      PlanError: the strategy cannot reach ``min_aligned_share``; the message gives the numbers.
    """
    balance = cfg.narrative_balance
    avail = supply.available
    cls_avail = _class_supply(supply, balance is not None)
    cls_targets = {
        n: allocate(targets[n], {c: u / avail[n] for c, u in cls_avail[n].items()}) if avail[n] else {}
        for n in supply.names
    }
    out = dict(targets)
    if balance is None:
        return Balanced(out, cls_targets, None)
    min_share = Fraction(str(balance.min_aligned_share))
    before = NarrativeCounts.of(*_aligned_misaligned(cls_targets))
    state = _Balancing(min_share, supply, cls_avail, cls_targets, out, cfg.unit)
    actions: list[str] = []
    if balance.strategy in ("add_stories", "both"):
        actions += _add_stories(state)
    if balance.strategy in ("downsample_misaligned", "both"):
        actions += _downsample_misaligned(state)
    aligned, misaligned = _aligned_misaligned(cls_targets)
    if aligned * (1 - min_share) < min_share * misaligned:
        raise _balance_error(balance, cfg.unit, supply, cls_avail, cls_targets)
    narrative = NarrativePlan(
        min_aligned_share=balance.min_aligned_share,
        strategy=balance.strategy,
        before=before,
        planned=NarrativeCounts.of(aligned, misaligned),
        actions=tuple(actions or ["none needed"]),
    )
    return Balanced(out, cls_targets, narrative)


def _counter_strata(
    rows: Sequence[ProfileRow],
    stories: Sequence[str],
    webs: Sequence[str],
    counters: Mapping[str, Sequence[str]],
) -> tuple[dict[str, int], dict[tuple[str, Tags], str]]:
    """Web misaligned units per trope, and the trope stratum each aligned story signature serves.

    A story signature (its set of tags) serves the misaligned trope it counters that is
    furthest behind its web weight, so stories that counter several tropes spread out.
    """
    weights: dict[str, int] = {}
    for source, narrative, tags, _, units in rows:
        if source in webs and narrative in ("misaligned", "mixed"):
            for tag in tags:
                if tag in counters:
                    weights[tag] = weights.get(tag, 0) + units
    pool: dict[str, int] = {t: 0 for t in weights}
    assigned: dict[tuple[str, Tags], str] = {}
    # Largest first; ties in the order of the tags' joined form, which the published plans used.
    story_rows = sorted(
        (r for r in rows if r[0] in stories and narrative_class(r[1]) == "aligned"),
        key=lambda r: (-r[4], r[0], r[1], joined_tags(r[2]), r[3]),
    )
    for source, _, tags, _, units in story_rows:
        if (source, tags) in assigned:
            continue
        tagset = set(tags)
        served = sorted(t for t in weights if t in tagset or tagset & set(counters[t]))
        if not served:
            assigned[(source, tags)] = "aligned:general"
            continue
        best = max(served, key=lambda t: (weights[t] / (pool[t] + units), -served.index(t)))
        pool[best] += units
        assigned[(source, tags)] = f"aligned:{best}"
    return weights, assigned


def _source_strata(
    name: str,
    supply: Supply,
    cls_targets: Mapping[str, int],
    stratum_of: Mapping[tuple[str, Tags], str],
    trope_weights: Mapping[str, int],
    balanced: bool,
) -> dict[str, StratumPlan]:
    """One source's strata: its class targets, aligned ones split over trope strata by web weight."""
    sub_avail: dict[str, list[int]] = {}
    for source, narrative, tags, d, units in supply.rows:
        if source != name:
            continue
        c = narrative_class(narrative) if balanced else ALL
        st = stratum_of.get((source, tags), c) if c == "aligned" else c
        got = sub_avail.setdefault(st, [0, 0])
        got[0] += d
        got[1] += units
    sub_targets: dict[str, int] = {}
    for c, t in cls_targets.items():
        parts = sorted(st for st in sub_avail if st == c or st.startswith(c + ":"))
        if parts == [c]:
            sub_targets[c] = t
            continue
        caps = {st: sub_avail[st][1] * supply.max_epochs[name] for st in parts}
        w = {st: float(trope_weights.get(st.split(":", 1)[1], 0)) for st in parts}
        sub_targets.update(allocate_capped(t, w, caps))
    strata = {}
    for st in sorted(sub_avail):
        d, units = sub_avail[st]
        t = sub_targets.get(st, 0)
        full, remainder = divmod(t, units) if units else (0, 0)
        strata[st] = StratumPlan(
            available_docs=d, available=units, target=t, full_epochs=full, remainder=remainder
        )
    return strata


def trope_strata(cfg: BlendConfig, supply: Supply, class_targets: ClassUnits) -> Strata:
    """Phase (c): the strata of every source, aligned stories split by the trope they counter.

    Args:
      cfg: blend config; ``narrative_balance.match_tropes`` turns the trope split on.
      supply: what the sources bring.
      class_targets: source -> narrative class -> units from phase (b).
    """
    balance = cfg.narrative_balance
    weights: dict[str, int] = {}
    stratum_of: dict[tuple[str, Tags], str] = {}
    if balance is not None and balance.match_tropes:
        weights, stratum_of = _counter_strata(
            supply.rows,
            supply.with_role("synthetic_story"),
            supply.with_role("web"),
            balance.counters or DEFAULT_COUNTERS,
        )
    strata = {
        n: _source_strata(n, supply, class_targets[n], stratum_of, weights, balance is not None)
        for n in supply.names
    }
    return Strata(stratum_of, weights, strata)


def trope_table(
    weights: Mapping[str, int], strata: Mapping[str, Mapping[str, StratumPlan]]
) -> dict[str, TropeMatch]:
    """Web misaligned units per trope next to the story units planned to counter it.

    Args:
      weights: misaligned trope -> its web units.
      strata: source -> stratum name -> its plan.
    """
    grand = sum(weights.values()) or 1
    counter: dict[str, int] = {}
    for source_strata in strata.values():
        for st, s in source_strata.items():
            if st.startswith("aligned:") and st != "aligned:general":
                trope = st.split(":", 1)[1]
                counter[trope] = counter.get(trope, 0) + s.target
    counter_total = sum(counter.values()) or 1
    return {
        t: TropeMatch(
            web_misaligned=weights[t],
            web_share=weights[t] / grand,
            counter_stories=counter.get(t, 0),
            counter_share=counter.get(t, 0) / counter_total,
        )
        for t in sorted(weights)
    }
