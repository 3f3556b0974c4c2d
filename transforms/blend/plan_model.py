"""The blend plan as typed, immutable values, and its JSON form.

``compute_plan`` (``transforms/blend/plan.py``) builds a ``BlendPlan``; sampling reads
it as a side input and ``to_dict`` gives the form stored in ``manifest.json`` and
``plan.json``.  The values are frozen dataclasses: they pickle by reference to this
module (side inputs cross workers), take no validation pass (the plan is computed, not
parsed, and must keep its exact ints and floats), and ``to_dict`` is the one place
that knows the JSON layout.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# The stratum of a source sampled as a whole (no narrative balance).
ALL = "all"

Tags = tuple[str, ...]
"""A document's trope tags, in the classifier's order."""

ProfileRow = tuple[str, str, Tags, int, int]
"""One count of the profile: ``(source, narrative, trope tags, documents, units)``."""


class PlanError(ValueError):
    """A blend target that cannot be met; the message gives the numbers."""


def narrative_class(narrative: str) -> str:
    """``aligned``, ``misaligned`` or ``other`` (mixed, ai_nonnarrative, none)."""
    return narrative if narrative in ("aligned", "misaligned") else "other"


def joined_tags(tags: Tags) -> str:
    """Tags as one string: the form of ``stratum_of`` keys in the JSON plan."""
    return "|".join(tags)


@dataclass(frozen=True)
class StratumPlan:
    """The part of a source sampled on its own: ``full_epochs`` passes plus ``remainder`` units.

    Args:
      available_docs: documents in the stratum.
      available: their units.
      target: units the mix takes from it.
      full_epochs: passes every document gets.
      remainder: units taken in hash-rank order on top of the full passes.
    """

    available_docs: int
    available: int
    target: int
    full_epochs: int
    remainder: int


@dataclass(frozen=True)
class SourcePlan:
    """One source's part of the mix.

    Args:
      role: the source's role (``web``, ``synthetic_story`` ...), or None.
      share: its configured share, or None with a budget.
      budget: its configured absolute target, or None with a share.
      within_max_epochs: the target needs no more than ``max_epochs`` passes.
      target_share: target / the mix's total.
      available_docs: documents after read, policy and dedup.
      available: their units.
      target: units the mix takes.
      max_epochs: configured cap on passes.
      epochs: passes the target needs.
      shard_offset: start shard of its round-robin deal.
      shard_targets: units (or copies) per shard.
      strata: stratum name -> its plan.
    """

    role: str | None
    share: float | None
    budget: int | None
    within_max_epochs: bool
    target_share: float
    available_docs: int
    available: int
    target: int
    max_epochs: int
    epochs: float
    shard_offset: int
    shard_targets: tuple[int, ...]
    strata: Mapping[str, StratumPlan]


@dataclass(frozen=True)
class NarrativeCounts:
    """Aligned and misaligned units of the mix and the aligned share."""

    aligned: int
    misaligned: int
    aligned_share: float

    @classmethod
    def of(cls, aligned: int, misaligned: int) -> NarrativeCounts:
        """Counts with their share (1.0 when there is neither)."""
        share = aligned / (aligned + misaligned) if aligned + misaligned else 1.0
        return cls(aligned, misaligned, share)


@dataclass(frozen=True)
class NarrativePlan:
    """What narrative balance did: the counts before and after, and each action taken.

    Args:
      min_aligned_share: configured minimum aligned share.
      strategy: configured strategy.
      before: counts of the share- or budget-based targets.
      planned: counts of the plan.
      actions: one sentence per change, or ``none needed``.
    """

    min_aligned_share: float
    strategy: str
    before: NarrativeCounts
    planned: NarrativeCounts
    actions: tuple[str, ...]


@dataclass(frozen=True)
class TropeMatch:
    """Web misaligned units of one trope next to the story units planned to counter it."""

    web_misaligned: int
    web_share: float
    counter_stories: int
    counter_share: float


@dataclass(frozen=True)
class BlendPlan:
    """The blend plan: target units per source and per stratum, and the shard layout.

    Args:
      unit: ``documents``, ``bytes`` or ``tokens``.
      tokenizer: the ``tokenizer.json`` counting tokens, or None.
      total: units of the mix.
      seed: sampling and shuffling seed.
      num_shards: shard count.
      sources: source -> its plan, sorted by name.
      stratum_of: ``(source, tags)`` of an aligned story -> the trope stratum it serves.
      narrative_balance: what narrative balance did, or None without it.
      trope_matching: trope -> web units and counter-story units, empty without matching.
    """

    unit: str
    tokenizer: str | None
    total: int
    seed: int
    num_shards: int
    sources: Mapping[str, SourcePlan]
    stratum_of: Mapping[tuple[str, Tags], str]
    narrative_balance: NarrativePlan | None = None
    trope_matching: Mapping[str, TropeMatch] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form of ``manifest.json`` and ``plan.json``; the optional parts only when set."""
        plan: dict[str, Any] = {
            "unit": self.unit,
            "tokenizer": self.tokenizer,
            "total": self.total,
            "seed": self.seed,
            "num_shards": self.num_shards,
            "sources": {
                name: {**dataclasses.asdict(s), "shard_targets": list(s.shard_targets)}
                for name, s in self.sources.items()
            },
            "stratum_of": dict(
                sorted((f"{s}|{joined_tags(t)}", st) for (s, t), st in self.stratum_of.items())
            ),
        }
        if self.narrative_balance is not None:
            balance = dataclasses.asdict(self.narrative_balance)
            plan["narrative_balance"] = {**balance, "actions": list(self.narrative_balance.actions)}
        if self.trope_matching:
            plan["trope_matching"] = {t: dataclasses.asdict(m) for t, m in self.trope_matching.items()}
        return plan


@dataclass(frozen=True)
class Supply:
    """What the sources bring after read, policy and dedup: the input of every plan phase.

    Args:
      rows: the profile, sorted.
      available: source -> units, for every configured source in name order.
      docs: source -> documents.
      max_epochs: source -> configured cap on passes.
      roles: source -> role (``web``, ``synthetic_story`` ...).
    """

    rows: tuple[ProfileRow, ...]
    available: Mapping[str, int]
    docs: Mapping[str, int]
    max_epochs: Mapping[str, int]
    roles: Mapping[str, str]

    @property
    def names(self) -> list[str]:
        """Configured source names, sorted."""
        return list(self.available)

    def with_role(self, role: str) -> list[str]:
        """Sorted names of the sources with ``role``."""
        return [n for n in self.available if self.roles.get(n) == role]
