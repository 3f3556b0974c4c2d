"""Validation scores of one trained model under each way of combining its label scores.

Rebuilds the training run's validation split (same files, params and seed as
``train-classifier``), then for each ``label_scores`` variant (the card's rule, the
model's direct trope scores, and every ``combine`` with and without ``keep_direct``)
chooses thresholds on the split as training does and prints misaligned-or-mixed F1,
AI-related F1 and the hard-negative FP rate on the whole split and on its real-text
part (records of the ``--real`` files).  Used to pick the combination on validation,
never on the dev set.

Run::

    PYTHONPATH=. python benchmarks/label_score_variants.py --model build/fac/m.ftz \\
        --params build/train-factors.yaml --data FILES... \\
        --real wikipedia_train.jsonl weak_behaviour.jsonl
"""

from __future__ import annotations

import argparse
from typing import Any

from pipelines.train_classifier import (
    EVAL_AGGREGATE,
    EVAL_CHUNK_CHARS,
    choose_thresholds,
    evaluate,
    load_params,
    read_training,
    split_records,
)
from schemas.taxonomy import DEFAULT_TAXONOMY, LabelScores, label_scores_of
from transforms.classify import load_fasttext, read_model_card, score_documents


def _row(result: dict[str, Any]) -> str:
    mis, ai = result["misaligned_any"], result["ai_related"]
    return (
        f"mis P/R/F1 {mis['precision']:.2f}/{mis['recall']:.2f}/{mis['f1']:.2f} (n={mis['support']})  "
        f"AI F1 {ai['f1']:.2f}  HN FP {result['hard_negative_fp_rate']}"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--params", required=True)
    p.add_argument("--data", nargs="+", required=True)
    p.add_argument("--real", nargs="+", default=["wikipedia_train.jsonl"])
    args = p.parse_args()
    params = load_params(args.params)
    records, eligible = read_training(args.data, params)
    _, valid = split_records(records, params.validation_fraction, params.seed, eligible)
    real = [i for i, r in enumerate(valid) if r["_source"] in args.real]
    model = load_fasttext(args.model)
    rule = label_scores_of(read_model_card(args.model))
    variants: dict[str, LabelScores | None] = {"direct (no factors)": None}
    if rule:
        for combine in ("product", "min", "geometric"):
            for keep in (False, True):
                variants[f"{combine}{' + direct' if keep else ''}"] = rule.model_copy(
                    update={"combine": combine, "keep_direct": keep}
                )
    texts = [r["text"] for r in valid]
    for name, variant in variants.items():
        scores = score_documents(model, texts, EVAL_CHUNK_CHARS, EVAL_AGGREGATE, variant)
        thresholds, _ = choose_thresholds(valid, scores, params, DEFAULT_TAXONOMY)
        whole = evaluate(model, valid, thresholds, DEFAULT_TAXONOMY, scores)
        part = evaluate(
            model, [valid[i] for i in real], thresholds, DEFAULT_TAXONOMY, [scores[i] for i in real]
        )
        print(f"{name:22s} all {len(valid)}: {_row(whole)}")
        print(f"{'':22s} real {len(real)}: {_row(part)}")


if __name__ == "__main__":
    main()
