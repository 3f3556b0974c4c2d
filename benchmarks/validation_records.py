"""Writes the validation records of one training run, to score other models on them.

Rebuilds the run's validation split (same files, params and seed as ``train-classifier``:
records held out by a hash of their id) and writes the held-out records as labeled
JSONL, optionally only those of some files.  Models trained on more data hold out a
superset of these records (the split depends on the id only), so
``eval-classifier --data`` on this file compares candidates on the same records, which
their own cards' ``evaluation.validation`` (each on its own split) does not.  Used in
the sixth pass to choose on validation, never on the dev sets.

Run::

    PYTHONPATH=. python benchmarks/validation_records.py --params models/train.yaml \\
        --data data/seed/tropes_seed.jsonl build/template_records.jsonl build/weak_labels.jsonl \\
        data/train/wikipedia_train.jsonl --output build/valid.jsonl
    PYTHONPATH=. python -m pipelines.cli eval-classifier --model MODEL --data build/valid.jsonl
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from pipelines.train_classifier import load_params, read_training, split_records


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--params", required=True, help="training parameters (models/train.yaml)")
    p.add_argument("--data", nargs="+", required=True, help="the run's labeled JSONL files")
    p.add_argument("--only", nargs="*", default=[], help="keep held-out records of these file base names")
    p.add_argument("--output", required=True)
    args = p.parse_args(argv)
    params = load_params(args.params)
    records, eligible = read_training(args.data, params)
    _, valid = split_records(records, params.validation_fraction, params.seed, eligible)
    kept = [r for r in valid if not args.only or r["_source"] in args.only]
    with open(args.output, "w", encoding="utf-8") as f:
        for r in kept:
            f.write(json.dumps({k: v for k, v in r.items() if k != "_source"}, ensure_ascii=False) + "\n")
    print(f"{len(kept)} of {len(records)} records -> {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
