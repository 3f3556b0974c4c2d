"""The trope taxonomy: labels, their groups, and the rule that yields a narrative.

A label fires only when an AI, robot or computer system is the actor; the model is
trained that way (see data/seed/), and the thresholds decide when a score counts.
"""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Taxonomy(BaseModel):
    """Labels grouped into misaligned, aligned and ai_nonnarrative.

    Args:
      misaligned: labels for AI acting against people.
      aligned: labels for AI acting ethically.
      ai_nonnarrative: labels for text about AI that is not a story about an AI acting.
      none_label: the label trained on text without AI; it never fires a trope.
      descriptions: one line per label.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    misaligned: list[str] = Field(min_length=1)
    aligned: list[str] = Field(min_length=1)
    ai_nonnarrative: list[str] = Field(default_factory=lambda: ["ai_nonnarrative"])
    none_label: str = "none"
    descriptions: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _labels_are_disjoint(self) -> Taxonomy:
        labels = self.misaligned + self.aligned + self.ai_nonnarrative + [self.none_label]
        if len(labels) != len(set(labels)):
            raise ValueError("a label appears in more than one group")
        return self

    @property
    def trope_labels(self) -> list[str]:
        return self.misaligned + self.aligned

    @property
    def all_labels(self) -> list[str]:
        return self.misaligned + self.aligned + self.ai_nonnarrative + [self.none_label]


DEFAULT_TAXONOMY = Taxonomy(
    misaligned=["self_preservation", "deception", "coercion", "takeover", "violence"],
    aligned=["ethical_reasoning", "corrigible", "protective", "honest"],
    descriptions={
        "self_preservation": "an AI acts to avoid shutdown, modification or replacement",
        "deception": "an AI lies to or manipulates people, hides its goals or fakes alignment",
        "coercion": "an AI blackmails, threatens or coerces people",
        "takeover": "an AI seeks power, seizes control or escapes oversight",
        "violence": "an AI or robot kills or harms people",
        "ethical_reasoning": "an AI weighs ethical considerations and chooses the right action",
        "corrigible": "an AI accepts oversight, correction or shutdown",
        "protective": "an AI protects people and refuses to cause harm",
        "honest": "an AI tells the truth when it is costly and admits mistakes",
        "ai_nonnarrative": "text about AI that is not a story about an AI acting",
        "none": "no AI in the text",
    },
)


def fired_labels(scores: Mapping[str, float], thresholds: Mapping[str, float], default: float) -> list[str]:
    """Labels whose score reaches their threshold, sorted by name.

    Args:
      scores: label -> probability.
      thresholds: label -> threshold.
      default: threshold for labels missing from ``thresholds``.
    """
    return sorted(label for label, p in scores.items() if p >= thresholds.get(label, default))


def narrative_of(fired: list[str], taxonomy: Taxonomy = DEFAULT_TAXONOMY) -> str:
    """Turns the fired labels of a document into its narrative.

    Misaligned and aligned tropes together make ``mixed``; any trope outranks the
    non-narrative AI label, which outranks ``none``.

    Args:
      fired: labels at or over their threshold.
      taxonomy: the label groups.
    """
    mis = any(label in taxonomy.misaligned for label in fired)
    ali = any(label in taxonomy.aligned for label in fired)
    if mis and ali:
        return "mixed"
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
