"""Near-duplicate clustering: rounds, elements moved and job-graph size of ``DedupDocuments``.

``graph``: the LSH link graph of a JSONL corpus built in memory with the pipeline's own
functions (bands, exact groups, salted bucket links), and the rounds each
algorithm needs on it: min-label propagation (one shuffle per round) and
large-star / small-star (``transforms.blocks.local_components``, two per round).

``pipeline``: ``DedupDocuments`` over the corpus on the in-process runner (one worker):
transforms in its job graph, elements the runner moved (``element_count``
monitoring infos, in all and inside ``ConnectedComponents``), the
``unsettled_round_*`` counters when the code has them, and the wall time.  It uses
only ``DedupDocuments`` and ``DedupConfig``, so ``PYTHONPATH`` can point it at an
older checkout for a before/after comparison.

The corpus is ``benchmarks/dedup_speed.py stage``'s: 250-word chunks of Wikipedia
pages plus near copies (1 in 6), ids ``0000000``...

    PYTHONPATH=. python benchmarks/dedup_components.py graph --docs 100000
    PYTHONPATH=. python benchmarks/dedup_components.py pipeline --docs 10000
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterable
from typing import Any

import apache_beam as beam
from apache_beam.metrics.monitoring_infos import extract_counter_value
from apache_beam.options.pipeline_options import PipelineOptions

from schemas.config import DedupConfig
from transforms.dedup.deduplicate import DedupDocuments

RUNNER = "apache_beam.runners.portability.fn_api_runner.FnApiRunner"


def corpus(count: int) -> list[dict[str, Any]]:
    """The stage benchmark's documents, as ``tropemix dedup`` reads them (blank texts skipped)."""
    from benchmarks.dedup_speed import chunks

    texts = chunks(count, 250, seed=0)
    return [
        {"id": f"input/{i:07d}", "text": t, "source": "input", "narrative": "none"}
        for i, t in enumerate(texts)
        if t.strip()
    ]


def link_edges(docs: list[dict[str, Any]], cfg: DedupConfig) -> list[tuple[Any, Any]]:
    """The candidate edges ``DedupDocuments`` clusters, computed in one process."""
    from transforms.dedup.keys import bands_of_normalized, doc_node, exact_hash
    from transforms.dedup.lsh import partition_edges
    from transforms.text import normalize_for_dedup

    winners: dict[int, tuple[Any, list[int]]] = {}
    for start in range(0, len(docs), 512):
        batch = docs[start : start + 512]
        normalized = [normalize_for_dedup(d["text"]) for d in batch]
        _, buckets, has_shingles = bands_of_normalized(normalized, cfg)
        for i, doc in enumerate(batch):
            node = doc_node(doc, 0, cfg.survivor)  # type: ignore[arg-type]
            key = exact_hash(normalized[i])
            bands = buckets[i].tolist() if has_shingles[i] else []
            if key not in winners or node < winners[key][0]:
                winners[key] = (node, bands)
    members = [
        ((band, bucket), node) for node, bands in winners.values() for band, bucket in enumerate(bands)
    ]
    return sorted(set(partition_edges((0, [members]), cfg.bucket_salts)))


def min_label_rounds(edges: Iterable[tuple[Any, Any]]) -> int:
    """Rounds of min-label propagation until no label changes (the check round included)."""
    neighbours: dict[Any, list[Any]] = {}
    for a, b in edges:
        neighbours.setdefault(a, []).append(b)
        neighbours.setdefault(b, []).append(a)
    labels = {node: node for node in neighbours}
    rounds = 0
    while True:
        rounds += 1
        new = {node: min([labels[node]] + [labels[n] for n in ns]) for node, ns in neighbours.items()}
        if new == labels:
            return rounds
        labels = new


def bench_graph(docs: list[dict[str, Any]], cfg: DedupConfig) -> None:
    from transforms.blocks import local_components

    edges = link_edges(docs, cfg)
    run = local_components(edges, max_rounds=64, partitions=cfg.partitions)
    sizes: dict[Any, int] = {}
    for label in run.labels.values():
        sizes[label] = sizes.get(label, 0) + 1
    print(
        f"{len(docs)} documents: {len(edges)} edges, {len(run.labels)} nodes, {len(sizes)} components, "
        f"largest {max(sizes.values(), default=0)}"
    )
    label_rounds = min_label_rounds(edges)
    print(f"min-label propagation: {label_rounds} rounds to a fixed point ({label_rounds} shuffles)")
    print(
        f"large-star/small-star: {run.rounds} rounds until every node settled "
        f"({2 * run.rounds + 1} shuffles with the labelling one), {run.records} edge records moved"
    )


def bench_pipeline(docs: list[dict[str, Any]], cfg: DedupConfig) -> None:
    p = beam.Pipeline(runner=RUNNER, options=PipelineOptions([f"--runner={RUNNER}"]))
    _ = p | "Docs" >> beam.Create(docs) | "Dedup" >> DedupDocuments(cfg, {"input": 0})
    proto = p.to_runner_api()
    dedup = [t for t in proto.components.transforms.values() if t.unique_name.startswith("Dedup/")]
    producer = {pc: t.unique_name for t in dedup if not t.subtransforms for pc in t.outputs.values()}
    leaves = sum(1 for t in dedup if not t.subtransforms)
    cc = [t for t in dedup if "/ConnectedComponents" in t.unique_name]
    print(
        f"job graph: {len(dedup)} transforms in DedupDocuments ({leaves} leaves), "
        f"{len(cc)} in ConnectedComponents ({sum(1 for t in cc if not t.subtransforms)} leaves)"
    )
    start = time.perf_counter()
    result = p.run()
    result.wait_until_finish()
    elapsed = time.perf_counter() - start
    total = in_cc = 0
    for info in result.monitoring_infos():  # type: ignore[attr-defined]
        if info.urn == "beam:metric:element_count:v1":
            count = extract_counter_value(info)
            name = producer.get(info.labels.get("PCOLLECTION", ""), "")
            total += count
            in_cc += count * ("/ConnectedComponents/" in name)
    print(f"elements moved: {total:,} in all, {in_cc:,} inside ConnectedComponents")
    rounds = {
        c.key.metric.name: c.committed
        for c in result.metrics().query()["counters"]
        if c.key.metric.name.startswith("unsettled_round_")
    }
    if rounds:
        print("unsettled nodes before each round: " + ", ".join(str(v) for _, v in sorted(rounds.items())))
    print(f"wall: {elapsed:.1f} s for {len(docs)} documents (one in-process worker)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("what", choices=["graph", "pipeline"])
    parser.add_argument("--docs", type=int, default=10_000)
    parser.add_argument("--threshold", type=float, default=0.8)
    args = parser.parse_args()
    cfg = DedupConfig(threshold=args.threshold)
    docs = corpus(args.docs)
    if args.what == "graph":
        bench_graph(docs, cfg)
    else:
        bench_pipeline(docs, cfg)


if __name__ == "__main__":
    main()
