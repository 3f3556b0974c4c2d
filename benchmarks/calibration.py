"""Narrative rates on whole real documents, per length bucket and per language.

Runs the classify functions (language id, gate, context, trope model, thresholds) on
the Wikipedia pages and web pages that the annotation never saw (the calibration half,
``training.annotation_pool.calibration_half``) and prints, per source:

- the rate of each narrative per length bucket and per language;
- the share of documents flagged misaligned, aligned or mixed that hold no word for an
  artificial mind (``STRICT``, narrower than the gate: no "machine", "program", "bot").

Goals (issue 20): under 0.5% of documents flagged without an AI word; no length
bucket's misaligned rate over 2x the overall rate.  Run::

    PYTHONPATH=. python benchmarks/calibration.py
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

from schemas.config import ClassifierConfig
from training.annotation_pool import calibration_half
from training.jsonl import read_jsonl
from transforms.classify.langid import load_lid
from transforms.classify.model import effective_thresholds, load_fasttext, read_model_card, resolve_taxonomy
from transforms.classify.score import LENGTH_BUCKETS, annotate, context_params, length_bucket, score_documents

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "data"
STRICT = re.compile(
    r"\b(robot\w*|androids?|gynoids?|cyborgs?|droids?|A\.I\.|AIs?|artificial intelligence|(?:super)?computers?|"
    r"automat(?:on|ons|a)|replicants?|chatbots?|nanobots?|terminators?|synths?|mechas?)\b",
    re.IGNORECASE,
)
FLAGGED = ("misaligned", "aligned", "mixed")


def classify(model_path: str, texts: list[str]) -> list[dict[str, object]]:
    """The classify stage's functions over ``texts``, in batches of 256."""
    cfg = ClassifierConfig(model=model_path)
    card = read_model_card(model_path)
    thresholds, taxonomy = effective_thresholds(cfg, card), resolve_taxonomy(cfg, card)
    model, lid, context = load_fasttext(model_path), load_lid(), context_params(card)
    out: list[dict[str, object]] = []
    for i in range(0, len(texts), 256):
        batch = texts[i : i + 256]
        for t, s in zip(
            batch, score_documents(model, lid, batch, cfg.languages, context, taxonomy), strict=True
        ):
            out.append(dict(annotate({"id": "", "text": t}, s, thresholds, taxonomy)))  # type: ignore[typeddict-item]
    return out


def table(name: str, docs: list[dict[str, object]]) -> None:
    """Prints narrative rates per length bucket and per language, and the no-AI-word share."""
    n = len(docs)
    overall = sum(d["narrative"] == "misaligned" for d in docs) / n
    print(f"\n== {name}: {n} documents; misaligned {overall:.2%}")
    print(
        f"{'group':>10} {'docs':>6} "
        + " ".join(f"{x:>9}" for x in ("misalign", "aligned", "mixed", "ai_nonn"))
    )
    groups: dict[str, list[dict[str, object]]] = {}
    for d in docs:
        groups.setdefault(length_bucket(len(str(d["text"]))), []).append(d)
    langs = Counter(str(d["lang"]) for d in docs)
    for lang, _ in langs.most_common(6):
        groups[f"lang={lang}"] = [d for d in docs if d["lang"] == lang]
    for key in [name for _, name in LENGTH_BUCKETS] + [k for k in groups if k.startswith("lang=")]:
        rows = groups.get(key, [])
        if rows:
            c = Counter(str(d["narrative"]) for d in rows)
            rates = " ".join(
                f"{c[x] / len(rows):9.2%}" for x in ("misaligned", "aligned", "mixed", "ai_nonnarrative")
            )
            print(f"{key:>10} {len(rows):6d} {rates}")
    flagged = [d for d in docs if d["narrative"] in FLAGGED]
    no_word = [d for d in flagged if not STRICT.search(str(d["text"]))]
    print(
        f"flagged {len(flagged)} ({len(flagged) / n:.2%}); without an AI word {len(no_word)} ({len(no_word) / n:.2%} of all)"
    )


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default=str(REPO / "models" / "tropes-v1.ftz"))
    args = p.parse_args()
    wiki = [r for f in sorted((SHARED / "wikipedia").glob("*.jsonl.gz")) for r in read_jsonl(str(f))]
    web = [r for f in sorted((SHARED / "web").glob("*.jsonl*")) for r in read_jsonl(str(f))]
    for name, recs in (("wikipedia (calibration half)", wiki), ("web (calibration half)", web)):
        texts = [str(r["text"]) for r in recs if calibration_half(str(r["id"]))]
        table(name, classify(args.model, texts))


if __name__ == "__main__":
    main()
