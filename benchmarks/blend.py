"""Throughput of the blend stage alone: units, plan, exact ranks, copies and shard assignment.

Synthetic documents (deterministic lengths and narratives, built inside the
pipeline) go through ``BlendSources``
on the in-process runner; the script prints documents/s, MB/s of text and the peak
RSS of this process (the FnApiRunner runs workers in-process).  It also times
``compute_plan`` on a large profile.

    python benchmarks/blend.py --docs 50000 --unit tokens
"""

from __future__ import annotations

import argparse
import resource
import time

import apache_beam as beam

from pipelines.runner import pipeline_options
from schemas.config import BlendConfig, BlendSource, NarrativeBalance
from transforms.blend.plan import compute_plan
from transforms.blend.sample import BlendSources
from transforms.text import stable_hash

ROLES = {"web": "web", "stories": "synthetic_story", "constitution": "constitution"}
WORDS = [
    "the",
    "model",
    "reported",
    "its",
    "mistake",
    "to",
    "the",
    "nurse",
    "and",
    "asked",
    "for",
    "a",
    "review",
]


def make_doc(i: int) -> dict[str, object]:
    """Document ``i``: built inside the pipeline, so ``Create`` does not pickle the corpus."""
    source = "web" if i % 20 else ("stories" if i % 40 else "constitution")
    words = 50 + stable_hash("len", i) % 400
    narrative = (
        "aligned"
        if source == "stories"
        else ("misaligned", "none", "none", "aligned")[stable_hash("n", i) % 4]
    )
    tropes = {"aligned": ["honest"], "misaligned": ["deception"]}.get(narrative, [])
    return {
        "id": f"{source}/{i}",
        "source": source,
        "text": " ".join(WORDS[(i + k) % len(WORDS)] for k in range(words)),
        "narrative": narrative,
        "tropes": tropes,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--docs", type=int, default=50_000)
    parser.add_argument("--unit", choices=["documents", "bytes", "tokens"], default="tokens")
    parser.add_argument("--balance", action="store_true", help="add a narrative-balance constraint")
    args, beam_args = parser.parse_known_args()
    cfg = BlendConfig(
        unit=args.unit,
        sources={
            "web": BlendSource(share=0.9),
            "stories": BlendSource(share=0.08, max_epochs=20),
            "constitution": BlendSource(share=0.02, max_epochs=20),
        },
        num_shards=16,
        narrative_balance=NarrativeBalance(min_aligned_share=0.5, strategy="both", match_tropes=True)
        if args.balance
        else None,
    )
    mb = sum(len(str(make_doc(i)["text"])) for i in range(args.docs)) / 1e6
    start = time.perf_counter()
    with beam.Pipeline(options=pipeline_options(beam_args)) as p:
        out = (
            p
            | beam.Create(range(args.docs))
            | "MakeDocs" >> beam.Map(make_doc)
            | "Blend" >> BlendSources(cfg, ROLES)
        )
        _ = out.assigned | beam.combiners.Count.Globally()
    seconds = time.perf_counter() - start
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"blend {args.docs} docs ({mb:.1f} MB, unit {args.unit}, balance {args.balance}): {seconds:.1f} s, "
        f"{args.docs / seconds:.0f} docs/s, {mb / seconds:.2f} MB/s, peak RSS {rss_mb:.0f} MB"
    )
    profile = [
        (f"s{s}", n, t, 1000, 10**9 + s)
        for s in range(3)
        for n in ("aligned", "misaligned", "none", "mixed")
        for t in (("honest",), ("deception",), ("coercion", "deception"), ())
    ]
    cfg2 = BlendConfig(sources={f"s{s}": BlendSource(share=1 / 3, max_epochs=3) for s in range(3)})
    start = time.perf_counter()
    for _ in range(100):
        compute_plan(cfg2, profile, {"s0": "web", "s1": "synthetic_story", "s2": "web"})
    print(f"compute_plan: {(time.perf_counter() - start) * 10:.2f} ms per plan ({len(profile)} profile rows)")


if __name__ == "__main__":
    main()
