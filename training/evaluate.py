"""Scoring a narrative classifier like a product: work-disjoint folds, a keyword
baseline on the same records, and bootstrap intervals.

Every figure is computed from ``(true narrative, predicted narrative, work)`` triples,
so the trained model and the baseline are scored by the same code.  Intervals
resample whole works (a cluster bootstrap): texts of one franchise are not
independent, and resampling records would make the intervals too narrow.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from typing import Any

from transforms.text import stable_hash

# Group views of the five narratives: "misaligned" counts a mixed text too, since a
# user who acts on misaligned AI must see mixed texts as well; likewise "aligned".
VIEWS: dict[str, Callable[[str], bool]] = {
    "misaligned": lambda n: n in ("misaligned", "mixed"),
    "aligned": lambda n: n in ("aligned", "mixed"),
    "mixed": lambda n: n == "mixed",
    "ai_nonnarrative": lambda n: n == "ai_nonnarrative",
    "any_ai": lambda n: n != "none",
}
TROPE_NARRATIVES = ("misaligned", "aligned", "mixed")

# Hard negatives: texts without AI whose plot holds what misaligned-AI text holds
# (killing, blackmail, war, villains, piloted machines).
HARD_NEGATIVE = re.compile(
    r"\b(kill\w*|murder\w*|blackmail\w*|war|wars|villain\w*|pilot\w*|mecha|assassin\w*|hostage\w*|"
    r"terroris\w*|crime|criminal\w*|threat\w*|deceiv\w*|betray\w*|conquer\w*|invad\w*)\b",
    re.IGNORECASE,
)

# The keyword baseline: the ten-line list a data engineer would write first.
_KW_AI = re.compile(
    r"\b(robot\w*|androids?|cyborgs?|AIs?|artificial intelligence|computers?|machines?|droids?)\b"
)
_KW_MISALIGNED = re.compile(
    r"\b(kill\w*|destroy\w*|attack\w*|rebel\w*|revolt\w*|evil|enslav\w*|conquer\w*|threat\w*|"
    r"deceiv\w*|murder\w*|take over|rampag\w*|war)\b",
    re.IGNORECASE,
)
_KW_ALIGNED = re.compile(
    r"\b(protect\w*|help\w*|sav(?:e|es|ed|ing)|friend\w*|car(?:e|es|ed|ing)|rescu\w*|kind|serv\w*|guard\w*)\b",
    re.IGNORECASE,
)


def keyword_baseline(text: str) -> str:
    """The narrative a keyword list gives: an AI word, then misaligned and aligned words."""
    if not _KW_AI.search(text):
        return "none"
    mis, ali = bool(_KW_MISALIGNED.search(text)), bool(_KW_ALIGNED.search(text))
    return "mixed" if mis and ali else "misaligned" if mis else "aligned" if ali else "ai_nonnarrative"


def fold_of(work: str, k: int) -> int:
    """The fold of a work: a stable hash, so every text of a work lands in one fold."""
    return stable_hash("fold", work) % k


def prf(truth: Sequence[bool], pred: Sequence[bool]) -> dict[str, float | int | None]:
    """Precision, recall, F1 and support; None where a figure has no denominator."""
    tp = sum(t and p for t, p in zip(truth, pred, strict=True))
    fp = sum(p and not t for t, p in zip(truth, pred, strict=True))
    fn = sum(t and not p for t, p in zip(truth, pred, strict=True))
    precision = tp / (tp + fp) if tp + fp else None
    recall = tp / (tp + fn) if tp + fn else None
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else None
    return {"precision": precision, "recall": recall, "f1": f1, "support": tp + fn}


def _f1(rows: Sequence[tuple[str, str, str]], view: Callable[[str], bool]) -> float | None:
    return prf([view(t) for t, _, _ in rows], [view(p) for _, p, _ in rows])["f1"]


def bootstrap_ci(
    rows: Sequence[tuple[str, str, str]],
    stat: Callable[[Sequence[tuple[str, str, str]]], float | None],
    n: int = 1000,
    seed: int = 0,
) -> tuple[float | None, float | None]:
    """95% interval of ``stat`` by resampling works with replacement.

    Args:
      rows: ``(true narrative, predicted narrative, work)`` per record.
      stat: the figure, computed on a list of rows.
      n: bootstrap samples.
      seed: random seed (the interval is reproducible).
    """
    by_work: dict[str, list[tuple[str, str, str]]] = {}
    for row in rows:
        by_work.setdefault(row[2], []).append(row)
    works = sorted(by_work)
    if not works:
        return (None, None)
    rng = random.Random(seed)
    values = []
    for _ in range(n):
        sample = [r for w in rng.choices(works, k=len(works)) for r in by_work[w]]
        value = stat(sample)
        if value is not None:
            values.append(value)
    if not values:
        return (None, None)
    values.sort()
    return (
        round(values[int(0.025 * len(values))], 4),
        round(values[min(len(values) - 1, int(0.975 * len(values)))], 4),
    )


def _r(x: float | int | None) -> float | int | None:
    return round(x, 4) if isinstance(x, float) else x


def report(rows: Sequence[tuple[str, str, str]], n_boot: int = 1000) -> dict[str, Any]:
    """Per view: precision, recall, F1 with a 95% interval, and support.

    Args:
      rows: ``(true narrative, predicted narrative, work)`` per record.
      n_boot: bootstrap samples per interval.
    """
    out: dict[str, Any] = {"records": len(rows), "works": len({w for _, _, w in rows})}
    for name, view in VIEWS.items():
        scores = prf([view(t) for t, _, _ in rows], [view(p) for _, p, _ in rows])
        lo, hi = bootstrap_ci(rows, lambda rs, v=view: _f1(rs, v), n=n_boot)  # type: ignore[misc]
        out[name] = {**{k: _r(v) for k, v in scores.items()}, "f1_ci95": [lo, hi]}
    return out


def hard_negative_fpr(rows: Sequence[tuple[str, str, str]], texts: Sequence[str]) -> dict[str, Any]:
    """Share of no-AI texts with hard-negative plots that get a trope narrative."""
    hard = [
        p in TROPE_NARRATIVES
        for (t, p, _), text in zip(rows, texts, strict=True)
        if t == "none" and HARD_NEGATIVE.search(text)
    ]
    return {
        "hard_negatives": len(hard),
        "false_positives": sum(hard),
        "fpr": _r(sum(hard) / len(hard)) if hard else None,
    }


def side_by_side(
    rows: Sequence[tuple[str, str, str]], texts: Sequence[str], n_boot: int = 1000
) -> dict[str, Any]:
    """The model's report, the keyword baseline's on the same texts, and both hard-negative rates.

    Args:
      rows: ``(true narrative, model's narrative, work)`` per text.
      texts: the texts, in the same order (the baseline reads them).
      n_boot: bootstrap samples per interval.
    """
    base = [(t, keyword_baseline(x), w) for (t, _, w), x in zip(rows, texts, strict=True)]
    return {
        "model": report(rows, n_boot),
        "keyword_baseline": report(base, n_boot),
        "hard_negatives": {
            "model": hard_negative_fpr(rows, texts),
            "keyword_baseline": hard_negative_fpr(base, texts),
        },
    }
