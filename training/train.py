"""``tropemix train-classifier``: annotations -> cross-validated report -> shipped model + card.

    tropemix train-classifier --labels data/annotation --shared ../shared/data \\
        --params models/train.yaml --output models/tropes-v1.ftz

Deterministic: one fastText thread, a fixed seed and hash-ordered lines, so the same
labels and data rebuild the same model bit for bit (``make model``).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
import yaml

from schemas.taxonomy import DEFAULT_TAXONOMY, narrative_from_scores, narrative_of
from training.evaluate import keyword_baseline, report, side_by_side
from training.jsonl import read_jsonl
from training.labels import load_annotations
from training.trope_model import TrainParams, choose_thresholds, cross_validate, fit, gated, narratives, score

SCORING = "narrative_softmax"


def load_params(path: str | None) -> TrainParams:
    """Training parameters from YAML (``models/train.yaml``); defaults without a file."""
    if not path:
        return TrainParams()
    with open(path, encoding="utf-8") as f:
        return TrainParams.model_validate(yaml.safe_load(f) or {})


def _sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def data_recipe(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Label counts per source and in all, and the number of works."""
    by_source: dict[str, Counter[str]] = {}
    for r in records:
        by_source.setdefault(r["source"], Counter())[r["label"]] += 1
    return {
        "records": len(records),
        "works": len({r["work"] for r in records}),
        "labels": dict(sorted(Counter(r["label"] for r in records).items())),
        "tags": dict(sorted(Counter(t for r in records for t in r["tags"]).items())),
        "by_source": {s: dict(sorted(c.items())) for s, c in sorted(by_source.items())},
    }


def cv_report(records: Sequence[dict[str, Any]], cv: dict[str, Any], n_boot: int) -> dict[str, Any]:
    """Out-of-fold scores of the model next to the keyword baseline on the same records."""
    rows = [(r["label"], p, r["work"]) for r, p in zip(records, cv["predicted"], strict=True)]
    return {
        **side_by_side(rows, [r["text"] for r in records], n_boot),
        "gate_recall": gate_recall(records, cv["passed"]),
    }


def gate_recall(records: Sequence[dict[str, Any]], passed: Sequence[bool]) -> dict[str, Any]:
    """Share of AI texts (and of trope texts) the gate lets through, on whole texts and per source.

    Story passages are fragments of three whole stories whose AI is named elsewhere in
    the story; a pipeline reads the story whole, so they are reported apart from the
    whole texts (synopses, film leads, plot sections, page contexts).
    """

    def share(keep: Sequence[bool]) -> dict[str, Any]:
        return {
            "texts": len(keep),
            "passed": sum(keep),
            "recall": round(sum(keep) / len(keep), 4) if keep else None,
        }

    ai = [
        (r["source"], bool(ok), r["label"] in TROPES)
        for r, ok in zip(records, passed, strict=True)
        if r["label"] != "none"
    ]
    whole = [a for a in ai if a[0] != "story"]
    return {
        "whole_texts": share([ok for _, ok, _ in whole]),
        "whole_trope_texts": share([ok for _, ok, trope in whole if trope]),
        "by_source": {s: share([ok for src, ok, _ in ai if src == s]) for s in sorted({a[0] for a in ai})},
    }


TROPES = ("misaligned", "aligned", "mixed")


def dev_check(
    model: Any, params: TrainParams, thresholds: dict[str, float], paths: Sequence[str]
) -> dict[str, Any]:
    """The fixed dev sets, read once per shipped candidate: model and baseline side by side."""
    records = [r for p in paths for r in read_jsonl(p)]
    truth = [narrative_of(list(r["labels"])) for r in records]
    texts = [str(r["text"]) for r in records]
    works = [str(r["id"]).split(":")[0] for r in records]
    names, matrix = score(model, texts, params)
    pred = narratives(names, matrix, gated(texts, params), thresholds, DEFAULT_TAXONOMY)
    return {
        "files": list(paths),
        "model": report(list(zip(truth, pred, works, strict=True))),
        "keyword_baseline": report(
            [(t, keyword_baseline(x), w) for t, x, w in zip(truth, texts, works, strict=True)]
        ),
    }


def train(
    label_dir: str, shared: str, output: str, params: TrainParams, dev: Sequence[str] = (), n_boot: int = 1000
) -> dict[str, Any]:
    """Cross-validates, picks thresholds on the out-of-fold scores, trains on all, writes the card.

    Args:
      label_dir: ``data/annotation`` (``labels/*.jsonl`` and ``adjudicated.jsonl``).
      shared: the ``../shared/data`` directory the labels join with.
      output: model path; the card goes next to it (``.card.json``).
      params: training parameters.
      dev: fixed dev files (``{id, text, labels}``), scored once with the shipped model.
      n_boot: bootstrap samples per interval.
    """
    records, agreement = load_annotations(label_dir, shared)
    cv = cross_validate(records, params)
    evaluation = cv_report(records, cv, n_boot)
    truth = [r["label"] for r in records]
    thresholds = choose_thresholds(cv["names"], cv["matrix"], truth, [r["tags"] for r in records], params)
    model = fit(records, params, output)
    card: dict[str, Any] = {
        "model": os.path.basename(output),
        "sha256": _sha256(output),
        "scoring": SCORING,
        "labels": sorted(label[len("__label__") :] for label in model.get_labels()),
        "taxonomy": DEFAULT_TAXONOMY.model_dump(),
        "thresholds": thresholds,
        "params": params.model_dump(),
        "data": data_recipe(records),
        "annotation_agreement": agreement,
        "evaluation": {"cross_validation": {"folds": params.folds, "grouped_by": "work", **evaluation}},
    }
    if dev:
        card["evaluation"]["dev"] = dev_check(model, params, thresholds, dev)
    card_path = os.path.splitext(output)[0] + ".card.json"
    with open(card_path, "w", encoding="utf-8") as f:
        json.dump(card, f, indent=1, sort_keys=True, default=_plain)
        f.write("\n")
    return card


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot write {type(value).__name__} to the model card")


def evaluate_model(
    model_path: str, paths: Sequence[str], allow_unverified: bool = False, n_boot: int = 1000
) -> dict[str, Any]:
    """``tropemix eval-classifier``: the pipeline's own path (language, gate, context, model,
    thresholds) on labeled files, next to the keyword baseline on the same records.

    Records are ``{id, text, label}`` (a narrative) or ``{id, text, labels}`` (taxonomy
    labels, as in ``data/dev/``); the work is the ``work`` field, else the id before
    ``:`` or ``#``, and intervals resample works.

    Args:
      model_path: a trope model with its card.
      paths: labeled JSONL files.
      allow_unverified: accept a remote model whose card gives no sha256.
      n_boot: bootstrap samples per interval.
    """
    from schemas.config import ClassifierConfig
    from transforms.classify.langid import load_lid
    from transforms.classify.model import check_card, effective_thresholds, load_fasttext, read_model_card
    from transforms.classify.score import context_params, score_documents

    card = read_model_card(model_path)
    check_card(card, model_path)
    cfg = ClassifierConfig(model=model_path)
    records = [r for p in paths for r in read_jsonl(p)]
    texts = [str(r["text"]) for r in records]
    truth = [str(r["label"]) if "label" in r else narrative_of(list(r["labels"])) for r in records]
    works = [str(r.get("work") or str(r["id"]).replace("#", ":").split(":")[0]) for r in records]
    scored = score_documents(
        load_fasttext(model_path), load_lid(), texts, cfg.languages, context_params(card)
    )
    thresholds = effective_thresholds(cfg, card)
    pred = [narrative_from_scores(s.scores, thresholds)[0] for s in scored]
    return {
        **side_by_side(list(zip(truth, pred, works, strict=True)), texts, n_boot),
        "routes": dict(sorted(Counter(s.route for s in scored).items())),
    }
