"""Scoring a document: language id, the AI gate, the trope model's softmax, thresholds.

Per batch: language identification (lid.176) on every document, the AI gate
(``transforms/classify/gate.py``), then one trope-model ``predict`` call over the AI
contexts of the documents that passed both (``route_documents`` then
``predict_softmax``; ``score_documents`` is the two together).  ``annotate`` turns
scores into fired tropes and a narrative with the thresholds.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from schemas.records import Document
from schemas.taxonomy import DEFAULT_TAXONOMY, Taxonomy, narrative_from_scores, scores_from_softmax
from transforms.classify.gate import MAX_WINDOWS, WHOLE_BELOW_CHARS, WINDOW_CHARS, ai_context
from transforms.classify.langid import identify
from transforms.text import fasttext_text

LABEL_PREFIX = "__label__"
# fastText reports each label as p + 1e-5 (the smoothing of its log scores); asking
# predict only for p >= PREDICT_FLOOR leaves those out, so predict builds a few label
# strings per text instead of all of them.
PREDICT_FLOOR = 1.5e-5

# Why a document did not reach the trope model (``route`` in counters and the docs).
ROUTE_LANGUAGE = "language"
ROUTE_GATE = "gate"
ROUTE_MODEL = "model"

# Length buckets of the report's narrative-by-length table (characters).
LENGTH_BUCKETS = ((2000, "<2k"), (8000, "2k-8k"), (32000, "8k-32k"), (float("inf"), ">=32k"))


def length_bucket(chars: int) -> str:
    """The report's length bucket of a document of ``chars`` characters."""
    return next(name for limit, name in LENGTH_BUCKETS if chars < limit)


class ContextParams(NamedTuple):
    """What the trope model reads of a document (``ai_gate.ai_context``), from the model card."""

    whole_below: int = WHOLE_BELOW_CHARS
    window_chars: int = WINDOW_CHARS
    max_windows: int = MAX_WINDOWS


def context_params(card: dict[str, Any]) -> ContextParams:
    """The context the card's model was trained on; the defaults for a card without one."""
    params = card.get("params", {})
    return ContextParams(
        *(params.get(f, d) for f, d in zip(ContextParams._fields, ContextParams(), strict=True))
    )


class Scored(NamedTuple):
    """One document's classification before thresholds: language, route and scores."""

    lang: str
    lang_score: float
    route: str
    scores: dict[str, float]


def route_documents(
    lid: Any,
    texts: Sequence[str],
    languages: Sequence[str],
    context: ContextParams = ContextParams(),
    min_language_score: float = 0.0,
) -> list[tuple[Scored, str | None]]:
    """Language and route of a batch, with one lid.176 ``predict`` call, and what the model reads.

    A document in another language, or one where the gate finds no AI mention, gets
    its route and no model input; the rest get ``ROUTE_MODEL`` and their bounded AI
    context as one fastText line, so the score of a long document does not grow with
    its length.  Scores are empty until ``predict_softmax``.

    Args:
      lid: the language-identification model (``transforms.classify.langid.load_lid``).
      texts: document texts.
      languages: language codes the trope model applies to.
      context: the context the model was trained on (``context_params``).
      min_language_score: below this lid.176 probability the language counts as other.
    """
    out: list[tuple[Scored, str | None]] = []
    for text, (lang, p) in zip(texts, identify(lid, texts), strict=True):
        if lang not in languages or p < min_language_score:
            out.append((Scored(lang, p, ROUTE_LANGUAGE, {}), None))
            continue
        ctx = ai_context(text, *context)
        if ctx is None:
            out.append((Scored(lang, p, ROUTE_GATE, {}), None))
        else:
            out.append((Scored(lang, p, ROUTE_MODEL, {}), fasttext_text(ctx)))
    return out


def predict_softmax(model: Any, lines: Sequence[str]) -> list[dict[str, float]]:
    """The trope model's probability per label (without ``__label__``) of each line, in one call.

    Args:
      model: the trope model (fastText, narrative softmax).
      lines: model inputs (``route_documents``); may be empty.
    """
    if not lines:
        return []
    labels, probs = model.predict(list(lines), k=-1, threshold=PREDICT_FLOOR)
    return [
        {label[len(LABEL_PREFIX) :]: float(p) for label, p in zip(ls, ps, strict=True)}
        for ls, ps in zip(labels, probs, strict=True)
    ]


def score_documents(
    model: Any,
    lid: Any,
    texts: Sequence[str],
    languages: Sequence[str],
    context: ContextParams = ContextParams(),
    taxonomy: Taxonomy = DEFAULT_TAXONOMY,
    min_language_score: float = 0.0,
) -> list[Scored]:
    """Language, gate and trope scores of a batch, with one ``predict`` call per model.

    The functions the ``ClassifyDocuments`` stage runs, in one call (training,
    calibration and benchmarks score this way).

    Args:
      model: the trope model (fastText, narrative softmax).
      lid: the language-identification model (``transforms.classify.langid.load_lid``).
      texts: document texts.
      languages: language codes the trope model applies to.
      context: the context the model was trained on (``context_params``).
      taxonomy: trope labels.
      min_language_score: below this lid.176 probability the language counts as other.
    """
    routed = route_documents(lid, texts, languages, context, min_language_score)
    lines = [line for _, line in routed if line is not None]
    raws = iter(predict_softmax(model, lines))
    return [
        scored if line is None else scored._replace(scores=scores_from_softmax(next(raws), taxonomy))
        for scored, line in routed
    ]


def annotate(doc: Document, scored: Scored, thresholds: dict[str, float], taxonomy: Taxonomy) -> Document:
    """Adds ``lang``, ``lang_score``, ``trope_scores``, ``tropes`` and ``narrative``.

    Args:
      doc: the document.
      scored: its language, route and scores (``score_documents``).
      thresholds: label -> threshold, with a ``default`` entry.
      taxonomy: label groups.
    """
    narrative, tropes = narrative_from_scores(scored.scores, thresholds, taxonomy)
    out = dict(doc)
    out["lang"] = scored.lang
    out["lang_score"] = scored.lang_score
    out["trope_scores"] = {k: round(v, 6) for k, v in sorted(scored.scores.items())}
    out["tropes"] = tropes
    out["narrative"] = narrative
    return out  # type: ignore[return-value]
