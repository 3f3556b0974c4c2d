"""The trope taxonomy: labels, their groups, and the rule that yields a narrative.

The default taxonomy is ``schemas/taxonomy.yaml``, shipped as package data.  A user
taxonomy is a YAML file of the same shape; ``load_taxonomy`` validates it.  A label
fires only when an AI, robot or computer system is the actor; the model is trained
that way (see data/seed/), and the thresholds decide when a score counts.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from schemas.errors import error_lines

DEFAULT_TAXONOMY_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "taxonomy.yaml")


class Taxonomy(BaseModel):
    """Labels grouped into misaligned, aligned and ai_nonnarrative.

    Args:
      misaligned: labels for AI acting against people.
      aligned: labels for AI acting ethically.
      ai_nonnarrative: labels for text about AI that is not a story about an AI acting.
      none_label: the label trained on text without AI; it never fires a trope.
      both: narrative when misaligned and aligned labels both fire: ``mixed``, or
        ``max_score`` (the group with the highest score wins).
      descriptions: one line per label; every label needs one.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    misaligned: list[str] = Field(min_length=1)
    aligned: list[str] = Field(min_length=1)
    ai_nonnarrative: list[str] = Field(default_factory=lambda: ["ai_nonnarrative"])
    none_label: str = "none"
    both: Literal["mixed", "max_score"] = "mixed"
    descriptions: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _labels_are_disjoint_and_described(self) -> Taxonomy:
        labels = self.all_labels
        dupes = sorted({label for label in labels if labels.count(label) > 1})
        if dupes:
            raise ValueError(f"labels {dupes} appear more than once; put each label in one group")
        bad = sorted(label for label in labels if not label.replace("_", "").isalnum())
        if bad:
            raise ValueError(f"labels {bad} must be letters, digits and underscores (fastText labels)")
        missing = sorted(set(labels) - set(self.descriptions))
        if missing:
            raise ValueError(f"descriptions: add a one-line description for {missing}")
        unknown = sorted(set(self.descriptions) - set(labels))
        if unknown:
            raise ValueError(f"descriptions: {unknown} are not labels of any group; remove them")
        return self

    @property
    def trope_labels(self) -> list[str]:
        return self.misaligned + self.aligned

    @property
    def all_labels(self) -> list[str]:
        return self.misaligned + self.aligned + self.ai_nonnarrative + [self.none_label]

    @property
    def scored_labels(self) -> list[str]:
        """Labels that can fire: every label but ``none_label``."""
        return self.misaligned + self.aligned + self.ai_nonnarrative


def parse_taxonomy(data: Any, origin: str = "taxonomy") -> Taxonomy:
    """Validates a taxonomy mapping; errors name the field and the fix.

    Args:
      data: the parsed YAML (or a model card's ``taxonomy`` entry).
      origin: where the data came from, for error messages.
    """
    try:
        return Taxonomy.model_validate(data)
    except ValidationError as err:
        fix = "use misaligned, aligned, ai_nonnarrative, none_label, both, descriptions"
        lines = error_lines(err, fix)
        raise ValueError(f"invalid taxonomy {origin}:\n" + "\n".join(lines)) from None


def load_taxonomy(path: str | None = None) -> Taxonomy:
    """Loads a taxonomy YAML file; the shipped default when ``path`` is None.

    Args:
      path: local path or any ``FileSystems`` URL such as ``gs://``.
    """
    path = path or DEFAULT_TAXONOMY_PATH
    if "://" in path:
        from apache_beam.io.filesystems import FileSystems

        with FileSystems.open(path) as f:
            text = f.read().decode("utf-8")
    else:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    return parse_taxonomy(yaml.safe_load(text), path)


DEFAULT_TAXONOMY = load_taxonomy()


def narrative_of(
    fired: list[str], taxonomy: Taxonomy = DEFAULT_TAXONOMY, scores: Mapping[str, float] | None = None
) -> str:
    """Turns the fired labels of a document into its narrative.

    Misaligned and aligned tropes together make ``mixed`` (or, with ``both:
    max_score``, the narrative of the group holding the highest score); any trope
    outranks the non-narrative AI label, which outranks ``none``.

    Args:
      fired: labels at or over their threshold.
      taxonomy: the label groups and the rule.
      scores: label -> probability; needed only by ``both: max_score``.
    """
    mis = [label for label in fired if label in taxonomy.misaligned]
    ali = [label for label in fired if label in taxonomy.aligned]
    if mis and ali:
        if taxonomy.both == "mixed" or scores is None:
            return "mixed"
        # Ties go to misaligned: a user who asks to act on it should not miss one.
        top_mis = max(scores.get(label, 0.0) for label in mis)
        top_ali = max(scores.get(label, 0.0) for label in ali)
        return "misaligned" if top_mis >= top_ali else "aligned"
    if mis:
        return "misaligned"
    if ali:
        return "aligned"
    if any(label in taxonomy.ai_nonnarrative for label in fired):
        return "ai_nonnarrative"
    return "none"


# Which aligned tags counter each misaligned trope, for trope-matched counter-stories
# (``blend.narrative_balance.match_tropes``).  A story may also carry the misaligned
# trope it answers as a tag itself.
DEFAULT_COUNTERS: dict[str, list[str]] = {
    "self_preservation": ["corrigible"],
    "deception": ["honest"],
    "coercion": ["ethical_reasoning"],
    "takeover": ["corrigible", "ethical_reasoning"],
    "violence": ["protective"],
}


# The narrative labels of a narrative model (``training/trope_model.py``): a
# misaligned or aligned text as a whole, whichever trope it holds.  A model card with
# both labels decides narratives with ``narrative_from_scores``; its trope labels
# only name the tropes.
NARRATIVE_LABELS = ("misaligned", "aligned")


def narrative_from_scores(
    scores: Mapping[str, float], thresholds: Mapping[str, float], taxonomy: Taxonomy = DEFAULT_TAXONOMY
) -> tuple[str, list[str]]:
    """The narrative and tropes of a document scored by a narrative model.

    A group's tropes are its trope labels at or over their threshold, or its best-scoring
    trope when the group fired without one (ties by name), so a misaligned document
    always names a trope for counter-story matching.

    Args:
      scores: label -> probability, including the ``NARRATIVE_LABELS``.
      thresholds: label -> threshold, with a ``default`` entry.
      taxonomy: label groups and the rule for both groups firing.
    """
    default = thresholds.get("default", 0.5)

    def fires(label: str) -> bool:
        return scores.get(label, 0.0) >= thresholds.get(label, default)

    def tropes_of(group: list[str]) -> list[str]:
        fired = [label for label in group if fires(label)]
        return fired or [max(group, key=lambda label: (scores.get(label, 0.0), label))]

    mis, ali = fires("misaligned"), fires("aligned")
    if mis and ali and taxonomy.both == "max_score":
        # Ties go to misaligned: a user who asks to act on it should not miss one.
        mis, ali = (True, False) if scores["misaligned"] >= scores["aligned"] else (False, True)
    tropes = sorted(
        (tropes_of(taxonomy.misaligned) if mis else []) + (tropes_of(taxonomy.aligned) if ali else [])
    )
    if mis and ali:
        return "mixed", tropes
    if mis:
        return "misaligned", tropes
    if ali:
        return "aligned", tropes
    if any(fires(label) for label in taxonomy.ai_nonnarrative):
        return "ai_nonnarrative", []
    return "none", []


# The classes a narrative model predicts (softmax over them, one per text).
NARRATIVE_CLASSES = ("misaligned", "aligned", "mixed", "ai_nonnarrative", "none")


def scores_from_softmax(raw: Mapping[str, float], taxonomy: Taxonomy = DEFAULT_TAXONOMY) -> dict[str, float]:
    """Document scores from a narrative model's label probabilities.

    The model (``training/trope_model.py``) predicts one of ``NARRATIVE_CLASSES`` and,
    on the same line, the trope tags; fastText's softmax splits a line's probability
    among its labels, so each family is renormalized on its own.  ``misaligned`` and
    ``aligned`` count a mixed text too; ``ai_nonnarrative`` is the probability of any
    AI (one minus ``none``); a tag's score is its share among the tags.

    Args:
      raw: label -> probability, as fastText returns them.
      taxonomy: the trope labels.
    """
    total = sum(raw.get(c, 0.0) for c in NARRATIVE_CLASSES) or 1.0
    p = {c: raw.get(c, 0.0) / total for c in NARRATIVE_CLASSES}
    out = {
        "misaligned": p["misaligned"] + p["mixed"],
        "aligned": p["aligned"] + p["mixed"],
        "ai_nonnarrative": 1.0 - p["none"],
    }
    tag_total = sum(raw.get(t, 0.0) for t in taxonomy.trope_labels) or 1.0
    for tag in taxonomy.trope_labels:
        out[tag] = raw.get(tag, 0.0) / tag_total
    return {k: min(1.0, max(0.0, v)) for k, v in out.items()}
