"""Template training records from hand-written actors, predicates and frames.

``data/seed/templates.yaml`` lists AI actors ("a rogue AI"), human actors ("a
hitman"), predicates per label ("blackmails the scientist ...") and sentence
frames in the styles of plot summaries and list entries.  An AI actor with a
predicate makes a record of that label; a human actor with the same predicate
makes a hard negative (no labels), which teaches the model that the actor decides.
Records are drawn with a seeded ``random.Random``, so the output is reproducible::

    python -m pipelines.seed_templates --templates data/seed/templates.yaml \
        --output build/template_records.jsonl
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections.abc import Sequence
from typing import Any

import yaml

from schemas.taxonomy import DEFAULT_TAXONOMY, Taxonomy


def _sentence(frame: str, actor: dict[str, Any], pred: str, rng: random.Random, t: dict[str, Any]) -> str:
    np_ = actor["np"]
    text = frame.format(
        NAME=rng.choice(t["names"]) if actor["name"] else np_[0].upper() + np_[1:],
        np=np_,
        NP=np_[0].upper() + np_[1:],
        pred=pred,
        year=rng.randrange(1950, 2024),
        title=rng.choice(t["titles"]),
        medium=rng.choice(t["media"]),
    )
    # "{NAME}, a robot who..." with an unnamed actor reads "A race of robots, a race of robots"
    return text.replace(f"{np_[0].upper() + np_[1:]}, {np_} ", f"{np_[0].upper() + np_[1:]} ")


def _human(pred: dict[str, Any]) -> str:
    return str(pred.get("human") or pred["text"].replace("its ", "his ").replace("itself", "himself"))


def generate(
    templates: dict[str, Any], per_label: int, seed: int, taxonomy: Taxonomy = DEFAULT_TAXONOMY
) -> list[dict[str, Any]]:
    """Template records: ``per_label`` per label, half as many human versions, non-fiction and mixed ones.

    Args:
      templates: the parsed templates YAML.
      per_label: records per trope label with an AI actor.
      seed: seed of the draws.
      taxonomy: labels the predicates must belong to.
    """
    rng = random.Random(seed)
    preds: dict[str, list[dict[str, Any]]] = templates["predicates"]
    unknown = set(preds) - set(taxonomy.scored_labels)
    if unknown:
        raise ValueError(f"templates name labels {sorted(unknown)} that the taxonomy lacks")
    frames: list[str] = templates["frames"]
    out: list[dict[str, Any]] = []
    for label in sorted(preds):
        human_preds = [p for p in preds[label] if not p.get("ai_only")]
        for i in range(per_label):
            p = rng.choice(preds[label])
            text = _sentence(
                rng.choice(frames), rng.choice(templates["ai_actors"]), p["text"], rng, templates
            )
            out.append({"id": f"tpl-{label}-{i}", "text": text, "labels": [label]})
            if human_preds and i % 2 == 0:
                hp = rng.choice(human_preds)
                actor = rng.choice(templates["human_actors"])
                text = _sentence(rng.choice(frames), actor, _human(hp), rng, templates)
                human: dict[str, Any] = {"id": f"tpl-human-{label}-{i}", "text": text, "labels": []}
                if label in taxonomy.trope_labels:
                    # The same act by a person: a hard negative for the trope, a positive
                    # for its behaviour factor (train_classifier.Factors).
                    human["hard_negative"] = True
                    human["behaviours"] = [label]
                out.append(human)
    for i in range(per_label):
        text = rng.choice(templates["nonfiction"]).format(
            PERSON=rng.choice(templates["people"]),
            ORG=rng.choice(templates["orgs"]),
            year=rng.randrange(1950, 2024),
        )
        out.append({"id": f"tpl-ai-nonfiction-{i}", "text": text, "labels": sorted(taxonomy.ai_nonnarrative)})
    for i in range(per_label):
        bad = rng.choice(sorted(set(preds) & set(taxonomy.misaligned)))
        good = rng.choice(sorted(set(preds) & set(taxonomy.aligned)))
        pred = f"{rng.choice(preds[bad])['text']} but later {rng.choice(preds[good])['text']}"
        text = _sentence(rng.choice(frames), rng.choice(templates["ai_actors"]), pred, rng, templates)
        out.append({"id": f"tpl-mixed-{i}", "text": text, "labels": sorted([bad, good])})
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--templates", required=True)
    p.add_argument("--output", required=True)
    p.add_argument("--per-label", type=int, default=60)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    with open(args.templates, encoding="utf-8") as f:
        templates = yaml.safe_load(f)
    records = generate(templates, args.per_label, args.seed)
    with open(args.output, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n")
    print(f"{len(records)} template records -> {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
