"""Training the trope model on annotated real text, with work-disjoint cross-validation.

The model is one fastText classifier (softmax) over the text the pipeline feeds it
(``transforms.classify.gate.ai_context``): each line carries its narrative (one of
``schemas.taxonomy.NARRATIVE_CLASSES``) and its trope tags.  Scores are turned into
group scores (``scores_from_softmax``) and the narrative comes from those
(``narrative_from_scores``); tags only say which tropes.  Softmax beat one-vs-all
on the validation folds (misaligned F1 0.20 against 0.15, aligned 0.28 against 0.23,
word n-grams, 4 folds; BENCHMARKS.md), and GloVe 6B vectors, character n-grams,
oversampling the trope classes, a two-stage AI-then-trope model and the older
template and hand-written records did not beat it.

Evaluation is grouped k-fold by work: each fold's model never saw a text of the
works it scores.  Thresholds of fold ``f`` are chosen on the out-of-fold scores of
the other folds, so no figure is tuned on the records it reports.  The shipped
model trains on every record, with thresholds chosen on all out-of-fold scores.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from schemas.taxonomy import (
    DEFAULT_TAXONOMY,
    NARRATIVE_LABELS,
    Taxonomy,
    narrative_from_scores,
    scores_from_softmax,
)
from training.evaluate import VIEWS, fold_of, prf
from transforms.classify.gate import MAX_WINDOWS, WHOLE_BELOW_CHARS, WINDOW_CHARS, ai_context
from transforms.text import fasttext_text, stable_hash

LABEL_PREFIX = "__label__"


class TrainParams(BaseModel):
    """fastText hyperparameters and the context the model reads (``models/train.yaml``)."""

    model_config = ConfigDict(extra="forbid")

    epoch: int = Field(default=25, gt=0)
    lr: float = Field(default=0.5, gt=0)
    word_ngrams: int = Field(default=2, ge=1)
    dim: int = Field(default=50, gt=0)
    min_count: int = Field(default=1, ge=1)
    bucket: int = Field(default=200000, ge=0)
    minn: int = Field(default=0, ge=0)
    maxn: int = Field(default=0, ge=0)
    seed: int = 0
    quantize: bool = True
    cutoff: int = Field(default=100000, ge=0)
    pretrained_vectors: str | None = None
    whole_below: int = Field(default=WHOLE_BELOW_CHARS, gt=0)
    window_chars: int = Field(default=WINDOW_CHARS, gt=0)
    max_windows: int = Field(default=MAX_WINDOWS, gt=0)
    folds: int = Field(default=5, ge=2)
    tag_min_positives: int = Field(default=5, ge=1)


def model_text(text: str, params: TrainParams) -> str:
    """What the model reads of a text: its AI context, or (for gate misses) its start."""
    ctx = ai_context(text, params.whole_below, params.window_chars, params.max_windows)
    return ctx if ctx is not None else text[: params.whole_below]


def labels_of(record: dict[str, Any]) -> list[str]:
    """fastText labels of an annotated record: its narrative, then its tags."""
    return [record["label"], *sorted(record["tags"])]


def training_lines(records: Sequence[dict[str, Any]], params: TrainParams) -> list[str]:
    """One fastText line per record, in a hash order of ids (not file order)."""
    ordered = sorted(records, key=lambda r: stable_hash("train", params.seed, r["id"]))
    return [
        " ".join(LABEL_PREFIX + label for label in labels_of(r))
        + " "
        + fasttext_text(model_text(r["text"], params))
        for r in ordered
    ]


def fit(records: Sequence[dict[str, Any]], params: TrainParams, output: str | None = None) -> Any:
    """Trains (one thread, fixed seed: bit-for-bit reproducible) and optionally saves.

    Args:
      records: joined annotated records.
      params: hyperparameters.
      output: where to save the model (quantized when ``params.quantize``); None keeps it in memory.
    """
    import fasttext

    fasttext.FastText.eprint = lambda *args, **kwargs: None
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "train.txt")
        with open(path, "w", encoding="utf-8") as f:
            f.write("\n".join(training_lines(records, params)) + "\n")
        kwargs: dict[str, Any] = {}
        if params.pretrained_vectors:
            kwargs["pretrainedVectors"] = params.pretrained_vectors
        model = fasttext.train_supervised(
            input=path, epoch=params.epoch, lr=params.lr, wordNgrams=params.word_ngrams, dim=params.dim,
            minCount=params.min_count, bucket=params.bucket, minn=params.minn, maxn=params.maxn,
            loss="softmax", thread=1, seed=params.seed, verbose=0, **kwargs,
        )  # fmt: skip
        if output and params.quantize:
            model.quantize(input=path, retrain=False, cutoff=params.cutoff, qnorm=True, thread=1)
    if output:
        model.save_model(output)
    return model


SCORE_NAMES = ["misaligned", "aligned", "ai_nonnarrative", *DEFAULT_TAXONOMY.trope_labels]


def score(model: Any, texts: Sequence[str], params: TrainParams) -> tuple[list[str], np.ndarray]:
    """Score names and a ``(texts, scores)`` matrix (``scores_from_softmax``) of each text."""
    labels, probs = model.predict([fasttext_text(model_text(t, params)) for t in texts], k=-1, threshold=0.0)
    matrix = np.zeros((len(texts), len(SCORE_NAMES)))
    for i, (ls, ps) in enumerate(zip(labels, probs, strict=True)):
        raw = {label[len(LABEL_PREFIX) :]: float(p) for label, p in zip(ls, ps, strict=True)}
        scores = scores_from_softmax(raw)
        matrix[i] = [scores[name] for name in SCORE_NAMES]
    return list(SCORE_NAMES), matrix


def gated(texts: Sequence[str], params: TrainParams) -> np.ndarray:
    """True where the AI gate lets a text through to the model."""
    return np.array(
        [
            ai_context(t, params.whole_below, params.window_chars, params.max_windows) is not None
            for t in texts
        ]
    )


def narratives(
    names: list[str], matrix: np.ndarray, passed: np.ndarray, thresholds: dict[str, float], taxonomy: Taxonomy
) -> list[str]:
    """The narrative of each text: ``none`` where the gate stopped it, else from its scores."""
    out = []
    for row, ok in zip(matrix, passed, strict=True):
        scores = dict(zip(names, row.tolist(), strict=True))
        out.append(narrative_from_scores(scores, thresholds, taxonomy)[0] if ok else "none")
    return out


def _best_threshold(truth: np.ndarray, score_col: np.ndarray) -> float:
    """The threshold maximizing F1; ties go to the higher threshold (fewer false alarms)."""
    best, best_t = -1.0, 0.5
    for t in np.unique(np.round(score_col, 4)):
        pred = score_col >= t
        f1 = prf(truth.tolist(), pred.tolist())["f1"] or 0.0
        if f1 >= best:
            best, best_t = f1, float(t)
    return round(max(best_t, 0.05), 4)


def choose_thresholds(
    names: list[str], matrix: np.ndarray, truth: Sequence[str], tags: Sequence[list[str]], params: TrainParams
) -> dict[str, float]:
    """Per-label thresholds maximizing F1 on the given (out-of-fold) scores.

    ``misaligned`` and ``aligned`` against their group views; ``ai_nonnarrative`` against
    any-AI given those two; a tag against the records of its group, when it has
    ``tag_min_positives`` positives (else 0.5).
    """
    col = {n: j for j, n in enumerate(names)}
    th: dict[str, float] = {"default": 0.5}
    for group in NARRATIVE_LABELS:
        th[group] = _best_threshold(np.array([VIEWS[group](t) for t in truth]), matrix[:, col[group]])
    trope = (matrix[:, col["misaligned"]] >= th["misaligned"]) | (matrix[:, col["aligned"]] >= th["aligned"])
    rest = ~trope
    any_ai = np.array([t != "none" for t in truth])
    th["ai_nonnarrative"] = (
        _best_threshold(any_ai[rest], matrix[rest, col["ai_nonnarrative"]]) if rest.any() else 0.5
    )
    for tag in DEFAULT_TAXONOMY.trope_labels:
        if tag not in col:
            continue
        # Among texts of the tag's group only: the tag says which trope, not whether.
        group = "misaligned" if tag in DEFAULT_TAXONOMY.misaligned else "aligned"
        rows = np.array([VIEWS[group](t) for t in truth])
        positives = np.array([tag in t for t in tags])[rows]
        enough = positives.sum() >= params.tag_min_positives
        th[tag] = _best_threshold(positives, matrix[rows, col[tag]]) if enough else 0.5
    return th


def cross_validate(records: Sequence[dict[str, Any]], params: TrainParams) -> dict[str, Any]:
    """Grouped k-fold by work: out-of-fold scores, and predictions with nested thresholds.

    Returns ``names``, ``matrix`` (out-of-fold scores), ``passed`` (gate), ``folds`` and
    ``predicted`` (the narrative of each record under thresholds chosen on the other folds).
    """
    folds = np.array([fold_of(r["work"], params.folds) for r in records])
    texts = [r["text"] for r in records]
    names: list[str] = []
    matrix = np.zeros((0, 0))
    for f in range(params.folds):
        model = fit([r for r, g in zip(records, folds, strict=True) if g != f], params)
        held = np.flatnonzero(folds == f)
        names, fold_matrix = score(model, [texts[i] for i in held], params)
        if not matrix.size:
            matrix = np.zeros((len(records), len(names)))
        matrix[held] = fold_matrix
    passed = gated(texts, params)
    truth = [r["label"] for r in records]
    tags = [r["tags"] for r in records]
    predicted = [""] * len(records)
    for f in range(params.folds):
        other, held = np.flatnonzero(folds != f), np.flatnonzero(folds == f)
        th = choose_thresholds(
            names, matrix[other], [truth[i] for i in other], [tags[i] for i in other], params
        )
        for i, n in zip(
            held, narratives(names, matrix[held], passed[held], th, DEFAULT_TAXONOMY), strict=True
        ):
            predicted[i] = n
    return {"names": names, "matrix": matrix, "passed": passed, "folds": folds, "predicted": predicted}
