"""Train and evaluate the fastText trope classifier.

Training data is labeled JSONL: ``{"text": ..., "labels": ["coercion", ...]}``; an
empty label list means "no AI in the text" and trains the ``none`` label.  Text is
preprocessed by ``transforms.text.fasttext_text``, the same function inference uses.

Rebuild the shipped model (deterministic: one thread, fixed seed)::

    tropemix train-classifier --data data/seed/tropes_seed.jsonl \
        --params models/train.yaml --output models/tropes-v0.ftz

Evaluate::

    tropemix eval-classifier --model models/tropes-v0.ftz --data data/seed/tropes_dev_handwritten.jsonl

Training runs on one machine (fastText is single-node); the model file can then be
copied to ``gs://`` and named in a run config for Dataflow or Flink.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Sequence
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field

from schemas.taxonomy import DEFAULT_TAXONOMY, Taxonomy, fired_labels, narrative_of
from transforms.classify import LABEL_PREFIX, model_card_path, predict_scores
from transforms.text import fasttext_text


class TrainParams(BaseModel):
    """fastText hyperparameters; the defaults are those of the shipped model."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    epoch: int = Field(default=40, ge=1)
    lr: float = Field(default=0.5, gt=0)
    word_ngrams: int = Field(default=2, ge=1)
    dim: int = Field(default=32, ge=2)
    min_count: int = Field(default=1, ge=1)
    bucket: int = Field(default=200_000, ge=0)
    minn: int = Field(default=0, ge=0)
    maxn: int = Field(default=0, ge=0)
    seed: int = 0
    quantize: bool = True
    threshold: float = Field(default=0.5, gt=0, lt=1)


def load_params(path: str | None) -> TrainParams:
    """Hyperparameters from a YAML file, or the defaults."""
    if path is None:
        return TrainParams()
    with open(path, encoding="utf-8") as f:
        return TrainParams.model_validate(yaml.safe_load(f) or {})


def read_labeled(paths: Iterable[str]) -> list[dict[str, Any]]:
    """Labeled records from JSONL files; each needs ``text`` and a ``labels`` list."""
    records = []
    for path in paths:
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                rec = json.loads(line)
                if not isinstance(rec.get("text"), str) or not isinstance(rec.get("labels"), list):
                    raise ValueError(
                        f"{path}:{n}: a labeled record needs a 'text' string and a 'labels' list"
                    )
                records.append(rec)
    return records


def fasttext_line(record: dict[str, Any], taxonomy: Taxonomy) -> str:
    """One fastText training line: ``__label__a __label__b text``."""
    unknown = set(record["labels"]) - set(taxonomy.all_labels)
    if unknown:
        raise ValueError(f"record {record.get('id', '?')}: unknown labels {sorted(unknown)}")
    labels = record["labels"] or [taxonomy.none_label]
    return " ".join(LABEL_PREFIX + label for label in sorted(labels)) + " " + fasttext_text(record["text"])


def _sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def train(
    data: Sequence[str],
    output: str,
    params: TrainParams,
    taxonomy: Taxonomy = DEFAULT_TAXONOMY,
    eval_data: Sequence[str] = (),
) -> dict[str, Any]:
    """Trains a one-vs-all fastText model and writes it with its model card.

    Args:
      data: labeled JSONL files.
      output: model path (``.ftz`` when quantized, else ``.bin``).
      params: hyperparameters.
      taxonomy: label groups.
      eval_data: labeled JSONL files to evaluate on; their metrics go into the card.
    """
    import fasttext

    records = read_labeled(data)
    lines = [fasttext_line(r, taxonomy) for r in records]
    with tempfile.TemporaryDirectory() as tmp:
        train_file = os.path.join(tmp, "train.txt")
        with open(train_file, "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
        model = fasttext.train_supervised(
            input=train_file,
            loss="ova",
            epoch=params.epoch,
            lr=params.lr,
            wordNgrams=params.word_ngrams,
            dim=params.dim,
            minCount=params.min_count,
            bucket=params.bucket,
            minn=params.minn,
            maxn=params.maxn,
            thread=1,  # one thread makes training reproducible
            seed=params.seed,
            verbose=0,
        )
        if params.quantize:
            model.quantize(input=train_file, qnorm=True, retrain=False)
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    model.save_model(output)
    data_hash = hashlib.sha256("\n".join(lines).encode("utf-8")).hexdigest()
    thresholds = {label: params.threshold for label in taxonomy.all_labels if label != taxonomy.none_label}
    card: dict[str, Any] = {
        "model": os.path.basename(output),
        "sha256": _sha256(output),
        "labels": sorted(label[len(LABEL_PREFIX) :] for label in model.labels),
        "thresholds": thresholds,
        "training_data": {
            "files": [os.path.basename(p) for p in data],
            "records": len(records),
            "sha256": data_hash,
        },
        "hyperparameters": params.model_dump() | {"loss": "ova", "thread": 1},
        "evaluation": {},
    }
    if eval_data:
        card["evaluation"] = evaluate(model, read_labeled(eval_data), thresholds, taxonomy)
    with open(model_card_path(output), "w", encoding="utf-8") as f:
        json.dump(card, f, indent=2, sort_keys=True)
        f.write("\n")
    return card


def _prf(tp: int, fp: int, fn: int) -> dict[str, float]:
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "precision": round(precision, 4),
        "recall": round(recall, 4),
        "f1": round(f1, 4),
        "support": tp + fn,
    }


def evaluate(
    model: Any,
    records: Sequence[dict[str, Any]],
    thresholds: dict[str, float],
    taxonomy: Taxonomy = DEFAULT_TAXONOMY,
) -> dict[str, Any]:
    """Per-label and per-narrative precision, recall and F1, plus the hard-negative FP rate.

    Args:
      model: a loaded fastText model.
      records: labeled records; ``hard_negative: true`` marks no-AI texts about human crime.
      thresholds: label -> threshold.
      taxonomy: label groups.
    """
    scores = predict_scores(model, [r["text"] for r in records])
    labels = [label for label in taxonomy.all_labels if label != taxonomy.none_label]
    counts = {label: [0, 0, 0] for label in labels}
    narratives = ["misaligned", "aligned", "mixed", "ai_nonnarrative", "none"]
    ncounts = {n: [0, 0, 0] for n in narratives}
    hard_total = hard_fp = 0
    for rec, s in zip(records, scores, strict=True):
        fired = set(fired_labels({k: v for k, v in s.items() if k in labels}, thresholds, 0.5))
        gold = set(rec["labels"])
        for label in labels:
            if label in fired and label in gold:
                counts[label][0] += 1
            elif label in fired:
                counts[label][1] += 1
            elif label in gold:
                counts[label][2] += 1
        predicted, truth = narrative_of(sorted(fired), taxonomy), narrative_of(sorted(gold), taxonomy)
        for n in narratives:
            if predicted == n and truth == n:
                ncounts[n][0] += 1
            elif predicted == n:
                ncounts[n][1] += 1
            elif truth == n:
                ncounts[n][2] += 1
        if rec.get("hard_negative"):
            hard_total += 1
            hard_fp += predicted != "none"
    return {
        "records": len(records),
        "labels": {label: _prf(*c) for label, c in counts.items()},
        "narratives": {n: _prf(*c) for n, c in ncounts.items()},
        "hard_negative_fp_rate": round(hard_fp / hard_total, 4) if hard_total else None,
        "hard_negatives": hard_total,
    }
