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
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from fractions import Fraction
from typing import Any, cast

import apache_beam as beam
from apache_beam.metrics import Metrics

from schemas.config import BlendConfig
from schemas.records import Document, LedgerRow
from schemas.taxonomy import DEFAULT_COUNTERS
from transforms.blend.units import MeasureUnits
from transforms.packing import pack, unpack
from transforms.report.conservation import JOIN_LOSS, JoinIntegrityError
from transforms.report.counts import truncation_note
from transforms.text import stable_hash

NAMESPACE = "tropemix.blend"
_RANK_BUCKET_BITS = 16
# The stratum of a source sampled as a whole (no narrative balance).
ALL = "all"


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


def allocate_capped(total: int, weights: Mapping[str, float], caps: Mapping[str, int]) -> dict[str, int]:
    """Splits ``total`` by ``weights`` without exceeding ``caps``; the rest goes by spare capacity.

    Names whose weighted part would pass their cap are filled to the cap and the rest
    is split again over the others; what no weighted name can take goes to every name
    in proportion to its spare capacity.  The result sums to ``min(total, sum(caps))``.

    Args:
      total: units to allocate.
      weights: name -> non-negative weight.
      caps: name -> most units the name may get.
    """
    out = {n: 0 for n in caps}
    left = min(total, sum(caps.values()))
    for weighted in (True, False):
        active = {n for n in caps if out[n] < caps[n] and (not weighted or weights.get(n, 0) > 0)}
        while left > 0 and active:
            w = {n: (weights[n] if weighted else caps[n] - out[n]) for n in active}
            norm = sum(w.values())
            add = allocate(left, {n: v / norm for n, v in w.items()})
            full = {n for n in active if out[n] + add[n] >= caps[n]}
            if not full:
                for n in active:
                    out[n] += add[n]
                left = 0
                break
            for n in full:
                left -= caps[n] - out[n]
                out[n] = caps[n]
            active -= full
    return out


def shard_quotas(total: int, num_shards: int, offset: int) -> list[int]:
    """Units (or copies) of one source per shard when ``total`` are dealt round robin from ``offset``.

    Args:
      total: the source's units in the mix.
      num_shards: shard count.
      offset: the source's start shard (``shard_offset``).
    """
    base, extra = divmod(total, num_shards)
    return [base + (1 if (k - offset) % num_shards < extra else 0) for k in range(num_shards)]


def shard_offset(source: str, num_shards: int) -> int:
    """Start shard of a source; it rotates per source to even out shard sizes."""
    return stable_hash("shard-offset", source) % num_shards


def narrative_class(narrative: str) -> str:
    """``aligned``, ``misaligned`` or ``other`` (mixed, ai_nonnarrative, none)."""
    return narrative if narrative in ("aligned", "misaligned") else "other"


ProfileRow = tuple[str, str, str, int, int]
"""One count of the profile: ``(source, narrative, tropes joined by "|", documents, units)``."""


def _aligned_share(cls_targets: Mapping[str, Mapping[str, int]]) -> tuple[int, int]:
    aligned = sum(t.get("aligned", 0) for t in cls_targets.values())
    misaligned = sum(t.get("misaligned", 0) for t in cls_targets.values())
    return aligned, misaligned


def _counter_strata(
    rows: Sequence[ProfileRow],
    stories: Sequence[str],
    webs: Sequence[str],
    counters: Mapping[str, Sequence[str]],
) -> tuple[dict[str, int], dict[tuple[str, str], str]]:
    """Web misaligned units per trope, and the trope stratum each aligned story signature serves.

    A story signature (its set of tags) serves the misaligned trope it counters that is
    furthest behind its web weight, so stories that counter several tropes spread out.
    """
    weights: dict[str, int] = {}
    for source, narrative, tags, _, units in rows:
        if source in webs and narrative in ("misaligned", "mixed"):
            for tag in tags.split("|") if tags else []:
                if tag in counters:
                    weights[tag] = weights.get(tag, 0) + units
    pool: dict[str, int] = {t: 0 for t in weights}
    assigned: dict[tuple[str, str], str] = {}
    story_rows = sorted(
        (r for r in rows if r[0] in stories and narrative_class(r[1]) == "aligned"), key=lambda r: (-r[4], r)
    )
    for source, _, tags, _, units in story_rows:
        if (source, tags) in assigned:
            continue
        tagset = set(tags.split("|")) if tags else set()
        served = sorted(t for t in weights if t in tagset or tagset & set(counters[t]))
        if not served:
            assigned[(source, tags)] = "aligned:general"
            continue
        best = max(served, key=lambda t: (weights[t] / (pool[t] + units), -served.index(t)))
        pool[best] += units
        assigned[(source, tags)] = f"aligned:{best}"
    return weights, assigned


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


def compute_plan(
    cfg: BlendConfig, profile: Iterable[Sequence[Any]], roles: Mapping[str, str] | None = None
) -> dict[str, Any]:
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
    roles = roles or {}
    unit = cfg.unit
    rows: list[ProfileRow] = sorted(
        (str(s), str(n), str(t), int(d), int(u)) for s, n, t, d, u in profile if s in cfg.sources
    )
    names = sorted(cfg.sources)
    avail = {n: sum(r[4] for r in rows if r[0] == n) for n in names}
    docs = {n: sum(r[3] for r in rows if r[0] == n) for n in names}
    epochs = {n: cfg.sources[n].max_epochs for n in names}
    check_supply(cfg, docs)
    if cfg.uses_shares:
        shares = {n: float(cfg.sources[n].share or 0.0) for n in names}
        if cfg.allow_empty_sources:
            # An empty source (an incremental run without new files) leaves the mix to the others.
            shares = _renormalized({n: v if avail[n] else 0.0 for n, v in shares.items()})
        if cfg.total is not None:
            total = cfg.total
        else:
            caps = [avail[n] * epochs[n] / shares[n] for n in names if shares[n] > 0]
            total = math.floor(min(caps) + 1e-9) if caps else 0
        targets = allocate(total, shares)
        wanted = {n: f"{shares[n]:.4%} of {total}" for n in names}
    else:
        targets, wanted = budget_targets(cfg, avail, epochs)
    problems = []
    for name in names:
        target, have, cap = targets[name], avail[name], epochs[name]
        if target > have * cap:
            need = f"no {unit}" if have == 0 else f"{target / have:.2f} epochs"
            problems.append(
                f"source {name!r}: target {target} {unit} ({wanted[name]}) but only "
                f"{have} available x max_epochs {cap} = {have * cap}; needs {need}"
                + (f"; raise max_epochs to {math.ceil(target / have)} or lower the budget" if have else "")
            )
    if problems:
        raise PlanError("blend plan cannot be met:\n  " + "\n  ".join(problems))
    check_starved(cfg, avail, targets)

    balance = cfg.narrative_balance
    cls_avail: dict[str, dict[str, int]] = {n: {} for n in names}
    for source, narrative, _, _, units in rows:
        c = narrative_class(narrative) if balance else ALL
        cls_avail[source][c] = cls_avail[source].get(c, 0) + units
    cls_targets = {
        n: allocate(targets[n], {c: u / avail[n] for c, u in cls_avail[n].items()}) if avail[n] else {}
        for n in names
    }
    narrative_plan: dict[str, Any] = {}
    stratum_of: dict[tuple[str, str], str] = {}
    trope_weights: dict[str, int] = {}
    stories = [n for n in names if roles.get(n) == "synthetic_story"]
    webs = [n for n in names if roles.get(n) == "web"]
    if balance is not None:
        min_share = Fraction(str(balance.min_aligned_share))
        aligned, misaligned = _aligned_share(cls_targets)
        before = {"aligned": aligned, "misaligned": misaligned}
        actions: list[str] = []
        if balance.strategy in ("add_stories", "both") and aligned < math.ceil(
            min_share * misaligned / (1 - min_share)
        ):
            missing = math.ceil(min_share * misaligned / (1 - min_share)) - aligned
            headroom = {
                n: cls_avail[n].get("aligned", 0) * epochs[n] - cls_targets[n].get("aligned", 0)
                for n in stories
            }
            added = allocate_capped(missing, headroom, headroom)
            for n, k in sorted(added.items()):
                if k:
                    cls_targets[n]["aligned"] = cls_targets[n].get("aligned", 0) + k
                    targets[n] += k
                    actions.append(
                        f"added {k} {unit} of aligned stories from {n!r} "
                        f"({targets[n] / avail[n]:.2f} of max {epochs[n]} epochs)"
                    )
        aligned, misaligned = _aligned_share(cls_targets)
        allowed = math.floor(aligned * (1 - min_share) / min_share)
        if balance.strategy in ("downsample_misaligned", "both") and misaligned > allowed:
            mis_targets = {n: cls_targets[n].get("misaligned", 0) for n in webs}
            cut = allocate_capped(misaligned - allowed, mis_targets, mis_targets)
            for n, k in sorted(cut.items()):
                if not k:
                    continue
                cls_targets[n]["misaligned"] -= k
                spare = cls_avail[n].get("other", 0) * epochs[n] - cls_targets[n].get("other", 0)
                refill = min(k, spare)
                if refill:
                    cls_targets[n]["other"] = cls_targets[n].get("other", 0) + refill
                targets[n] -= k - refill
                actions.append(
                    f"took {k} fewer misaligned {unit} from {n!r}"
                    + (f", refilled with {refill} {unit} of its other documents" if refill else "")
                    + (f", so its target shrinks by {k - refill}" if k > refill else "")
                )
        aligned, misaligned = _aligned_share(cls_targets)
        if aligned * (1 - min_share) < min_share * misaligned:
            story_cap = sum(cls_avail[n].get("aligned", 0) * epochs[n] for n in stories)
            raise PlanError(
                "narrative balance cannot be met: the plan has "
                f"{aligned} aligned and {misaligned} misaligned {unit} "
                f"(aligned share {aligned / (aligned + misaligned):.4f}, need {float(min_share):.4f}) "
                f"with strategy {balance.strategy!r}; aligned stories can give at most {story_cap} {unit} "
                f"({', '.join(stories) or 'no synthetic_story source'} x max_epochs), and "
                f"{sum(cls_targets[n].get('misaligned', 0) for n in webs)} misaligned {unit} remain in web sources; "
                "raise max_epochs of the stories, add stories, or use strategy 'both'"
            )
        narrative_plan = {
            "min_aligned_share": balance.min_aligned_share,
            "strategy": balance.strategy,
            "before": {**before, "aligned_share": _share(before["aligned"], before["misaligned"])},
            "planned": {
                "aligned": aligned,
                "misaligned": misaligned,
                "aligned_share": _share(aligned, misaligned),
            },
            "actions": actions or ["none needed"],
        }
        if balance.match_tropes:
            trope_weights, stratum_of = _counter_strata(
                rows, stories, webs, balance.counters or DEFAULT_COUNTERS
            )

    sources: dict[str, Any] = {}
    total_units = sum(targets.values())
    num_shards = max(1, math.ceil(total_units / cfg.shard_size)) if cfg.shard_size else cfg.num_shards
    # Documents the plan can write at most: exactly the total for documents, else every copy allowed.
    most_docs = total_units if unit == "documents" else sum(docs[n] * epochs[n] for n in names)
    if num_shards > max(1, most_docs):
        raise PlanError(
            f"blend plan cannot be met: {num_shards} shards for at most {most_docs} documents would write "
            f"empty shards; set blend.num_shards to at most {max(1, most_docs)} (or raise blend.shard_size)"
        )
    for name in names:
        sub_avail: dict[str, list[int]] = {}
        for source, narrative, tags, d, units in rows:
            if source != name:
                continue
            c = narrative_class(narrative) if balance else ALL
            st = stratum_of.get((source, tags), c) if c == "aligned" else c
            got = sub_avail.setdefault(st, [0, 0])
            got[0] += d
            got[1] += units
        sub_targets: dict[str, int] = {}
        for c, t in cls_targets[name].items():
            parts = sorted(st for st in sub_avail if st == c or st.startswith(c + ":"))
            if parts == [c]:
                sub_targets[c] = t
                continue
            sub_caps = {st: sub_avail[st][1] * epochs[name] for st in parts}
            w = {st: float(trope_weights.get(st.split(":", 1)[1], 0)) for st in parts}
            sub_targets.update(allocate_capped(t, w, sub_caps))
        strata = {}
        for st in sorted(sub_avail):
            d, units = sub_avail[st]
            t = sub_targets.get(st, 0)
            full, remainder = divmod(t, units) if units else (0, 0)
            strata[st] = {
                "available_docs": d,
                "available": units,
                "target": t,
                "full_epochs": full,
                "remainder": remainder,
            }
        sources[name] = {
            "role": roles.get(name),
            "share": cfg.sources[name].share,
            "budget": cfg.sources[name].target,
            "within_max_epochs": targets[name] <= avail[name] * epochs[name],
            "target_share": targets[name] / total_units if total_units else 0.0,
            "available_docs": docs[name],
            "available": avail[name],
            "target": targets[name],
            "max_epochs": epochs[name],
            "epochs": targets[name] / avail[name] if avail[name] else 0.0,
            "shard_offset": shard_offset(name, num_shards),
            "shard_targets": shard_quotas(targets[name], num_shards, shard_offset(name, num_shards)),
            "strata": strata,
        }
    plan: dict[str, Any] = {
        "unit": unit,
        "tokenizer": cfg.tokenizer if unit == "tokens" else None,
        "total": total_units,
        "seed": cfg.seed,
        "num_shards": num_shards,
        "sources": sources,
        "stratum_of": {f"{s}|{t}": st for (s, t), st in sorted(stratum_of.items())},
    }
    if narrative_plan:
        plan["narrative_balance"] = narrative_plan
    if trope_weights:
        plan["trope_matching"] = _trope_table(trope_weights, sources)
    return plan


def _share(aligned: int, misaligned: int) -> float:
    return aligned / (aligned + misaligned) if aligned + misaligned else 1.0


def _trope_table(weights: Mapping[str, int], sources: Mapping[str, Any]) -> dict[str, Any]:
    """Web misaligned units per trope next to the story units planned to counter it."""
    grand = sum(weights.values()) or 1
    counter: dict[str, int] = {}
    for p in sources.values():
        for st, s in p["strata"].items():
            if st.startswith("aligned:") and st != "aligned:general":
                counter[st.split(":", 1)[1]] = counter.get(st.split(":", 1)[1], 0) + s["target"]
    counter_total = sum(counter.values()) or 1
    return {
        t: {
            "web_misaligned": weights[t],
            "web_share": weights[t] / grand,
            "counter_stories": counter.get(t, 0),
            "counter_share": counter.get(t, 0) / counter_total,
        }
        for t in sorted(weights)
    }


def stratum_key(doc: Mapping[str, Any], plan: Mapping[str, Any]) -> str:
    """The stratum a document is sampled in (see ``compute_plan``)."""
    if "narrative_balance" not in plan:
        return ALL
    c = narrative_class(doc.get("narrative", "none"))
    if c != "aligned":
        return c
    return str(plan["stratum_of"].get(f"{doc['source']}|{'|'.join(doc.get('tropes', []))}", c))


def copies_of(before: int, units: int, stratum_plan: Mapping[str, Any]) -> int:
    """How many copies of a document the plan asks for.

    Every document gets ``full_epochs`` copies; the ones whose units, counted in rank
    order, end nearer to the remainder than they start get one more, so the stratum
    lands within half a document of its target.

    Args:
      before: units of the stratum's documents ranked before this one.
      units: this document's units.
      stratum_plan: the stratum's plan.
    """
    extra = 1 if 2 * before + units < 2 * int(stratum_plan["remainder"]) else 0
    return int(stratum_plan["full_epochs"]) + extra


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


def _expand_copies(
    item: tuple[tuple[str, str], int, Document, int], plan: Mapping[str, Any]
) -> Iterator[Any]:
    (source, stratum), _, doc, before = item
    n = copies_of(before, _units(doc), plan["sources"][source]["strata"][stratum])
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


def _profile_rows(item: tuple[tuple[str, str, str], tuple[int, int]]) -> ProfileRow:
    (source, narrative, tags), (docs, units) = item
    return source, narrative, tags, docs, units


class PlanBlend(beam.PTransform):
    """Measures units, profiles the sources and computes the plan: the counting pass.

    Returns a dict: ``docs`` (documents with ``units``), ``profile`` (``ProfileRow``
    counts per source, narrative and trope tags) and ``plan`` (one dict; the step
    raises ``PlanError`` when the targets cannot be met, before anything is written).

    Args:
      cfg: blend config.
      roles: source -> role, for narrative balance.
    """

    def __init__(self, cfg: BlendConfig, roles: Mapping[str, str] | None = None) -> None:
        super().__init__()
        self._cfg = cfg
        self._roles = dict(roles or {})

    def expand(self, docs: beam.PCollection) -> dict[str, beam.PCollection]:
        cfg, roles = self._cfg, self._roles
        assistant_only = frozenset(n for n, b in cfg.sources.items() if b.chat_tokens == "assistant")
        measured = docs | "Units" >> MeasureUnits(cfg.unit, cfg.tokenizer, assistant_only=assistant_only)
        profile = (
            measured
            | "ProfileKey"
            >> beam.Map(
                lambda d: (
                    (d["source"], d.get("narrative", "none"), "|".join(d.get("tropes", []))),
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
        return {"docs": measured, "profile": profile, "plan": plan}


def _assign_shard(
    item: tuple[str, int, Document, int], unit: str, plan: Mapping[str, Any], totals: Mapping[str, int]
) -> tuple[int, Document]:
    source, rank, doc, before = item
    num_shards = int(plan["num_shards"])
    if unit == "documents":
        return shard_of(rank, source, num_shards), doc
    return shard_of_units(before, totals[source], source, num_shards), doc


# Fields that only the written shard needs.  They leave the documents before the two
# ranking shuffles, packed, come back in one join, and stay packed (under ``BODY``)
# through the writer's shuffle until ``with_body`` opens them for the file.
BODY_FIELDS = ("text", "meta", "messages")
BODY = "_body"
_BODY_KEY = "_body_key"


def body_key(doc: Mapping[str, Any]) -> tuple[str, str, str, int]:
    """Identity of one read record: its source, id and where it was read from."""
    return doc["source"], doc["id"], doc.get("src_path", ""), int(doc.get("src_offset", 0))


def split_body(doc: Mapping[str, Any]) -> tuple[dict[str, Any], bytes]:
    """``(lean document with its body key, packed body fields)`` of a document."""
    lean = {k: v for k, v in doc.items() if k not in BODY_FIELDS}
    lean[_BODY_KEY] = body_key(doc)
    return lean, pack({k: doc[k] for k in BODY_FIELDS if k in doc})


def with_body(doc: Mapping[str, Any]) -> Document:
    """A copy from ``BlendSources``'s ``assigned`` output with its body fields unpacked.

    Args:
      doc: a document copy whose ``BODY`` holds packed ``BODY_FIELDS``.
    """
    out = {k: v for k, v in doc.items() if k != BODY}
    if BODY in doc:
        out.update(unpack(doc[BODY]))
    return cast(Document, out)


def _rejoin_bodies(item: tuple[Any, dict[str, Any]]) -> Iterator[tuple[int, Document]]:
    key, grouped = item
    bodies = grouped["body"]
    copies = grouped["copies"]
    if copies and not bodies:
        # Every document left its body at SplitBodies, so a copy without one was lost
        # in a shuffle; writing it would make a row without text.
        raise JoinIntegrityError(f"BodyJoin: {len(copies)} copies of {key!r} met no body; {JOIN_LOSS}")
    for shard, lean in copies:
        copy = {k: v for k, v in lean.items() if k != _BODY_KEY}
        copy[BODY] = bodies[0]
        yield shard, cast(Document, copy)


class BlendSources(beam.PTransform):
    """Counts, plans and samples the sources, and assigns every copy to a shard.

    Text and metadata leave the documents after the units are measured: both
    ranking shuffles move light records, and one join (``BodyJoin``) puts the
    bodies back on the written copies.

    Returns a dict: ``assigned`` ``(shard, document copy)`` pairs (text and metadata
    still packed under ``BODY``; ``with_body`` opens them), ``ledger`` rows (written
    or sampled out, one per input document), and ``plan`` (one dict).

    Args:
      cfg: blend config.
      roles: source -> role, for narrative balance.
    """

    def __init__(self, cfg: BlendConfig, roles: Mapping[str, str] | None = None) -> None:
        super().__init__()
        self._cfg = cfg
        self._roles = dict(roles or {})

    def expand(self, docs: beam.PCollection) -> dict[str, beam.PCollection]:
        cfg = self._cfg
        seed = cfg.seed
        planned = docs | "PlanBlend" >> PlanBlend(cfg, self._roles)
        plan_side = beam.pvalue.AsSingleton(planned["plan"])
        split = planned["docs"] | "SplitBodies" >> beam.Map(split_body)
        bodies = split | "BodyByKey" >> beam.Map(lambda lb: (lb[0][_BODY_KEY], lb[1]))
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
                "copies": assigned | "CopyByKey" >> beam.Map(lambda sd: (sd[1][_BODY_KEY], sd)),
                "body": bodies,
            }
            | "BodyJoin" >> beam.CoGroupByKey()
            | "WithBodies" >> beam.FlatMap(_rejoin_bodies)
        )
        return {"assigned": written, "ledger": selected.ledger, "plan": planned["plan"]}
