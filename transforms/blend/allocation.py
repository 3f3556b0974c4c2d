"""Integer allocation: largest-remainder splits of units over sources, strata and shards.

Every split sums exactly to what it splits and breaks ties by name, so a plan never
depends on dict order, worker count or input order.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from transforms.text import stable_hash


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
