"""Dedup: exact and near duplicates, survivor priority, clustering against union-find."""

from __future__ import annotations

import random

import apache_beam as beam
import pytest
from apache_beam.testing.util import assert_that, equal_to

from schemas.config import DedupConfig
from transforms.dedup import ConnectedComponents, DedupDocuments

from .conftest import make_pipeline

WORDS = [f"word{i}" for i in range(5000)]


def _text(seed: int, n: int = 300) -> str:
    rng = random.Random(seed)
    return " ".join(rng.choice(WORDS) for _ in range(n))


def _doc(doc_id: str, text: str, source: str = "web") -> dict[str, object]:
    return {"id": doc_id, "source": source, "text": text, "meta": {}, "narrative": "none"}


def _union_find(edges: list[tuple[int, int]]) -> dict[int, int]:
    parent: dict[int, int] = {}

    def find(x: int) -> int:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in edges:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return {x: min(y for y in parent if find(y) == find(x)) for x in parent}


@pytest.mark.parametrize(
    "edges",
    [
        [(i, i + 1) for i in range(12)],  # a chain of 13 nodes
        [(0, i) for i in range(1, 40)] + [(100, i) for i in range(101, 120)],  # two stars
        [(i + 1, i) for i in range(0, 10, 2)] + [(7, 3), (50, 51), (51, 52), (52, 50)],  # mixed with a cycle
    ],
)
def test_connected_components_match_union_find(edges: list[tuple[int, int]]) -> None:
    expected = sorted(_union_find(edges).items())
    p = make_pipeline()
    cc = p | beam.Create(edges) | ConnectedComponents(max_rounds=14)
    assert_that(cc["labels"], equal_to(expected), label="Labels")
    assert_that(cc["unconverged"], equal_to([0]), label="Converged")
    p.run()


def test_connected_components_reports_non_convergence() -> None:
    chain = [(i, i + 1) for i in range(30)]
    p = make_pipeline()
    cc = p | beam.Create(chain) | ConnectedComponents(max_rounds=3)
    assert_that(
        cc["unconverged"],
        lambda counts: counts == [] or counts[0] > 0 or (_ for _ in ()).throw(AssertionError(counts)),
    )
    p.run()


def test_dedup_removes_exact_and_near_duplicates_and_keeps_curated_copy() -> None:
    base = _text(1)
    words = base.split()
    near = " ".join([*words[:150], "edited", *words[151:]])
    docs = [
        _doc("web/a", base),
        _doc("web/b", base.upper() + "!!"),  # exact after normalization
        _doc("web/c", near),  # near duplicate
        _doc("stories/s", base, source="stories"),  # the curated copy wins
        _doc("web/unique", _text(2)),
        _doc("web/other", _text(3)),
    ]
    p = make_pipeline()
    out = p | beam.Create(docs) | DedupDocuments(DedupConfig(), {"web": 3, "stories": 1})
    assert_that(
        out["kept"] | "KeptIds" >> beam.Map(lambda d: (d["id"], d["cluster_id"], d["cluster_size"])),
        equal_to(
            [("stories/s", "stories/s", 4), ("web/unique", "web/unique", 1), ("web/other", "web/other", 1)]
        ),
        label="Kept",
    )
    assert_that(
        out["dropped"] | "DroppedIds" >> beam.Map(lambda r: (r["id"], r["reason"], r["detail"])),
        equal_to(
            [
                ("web/a", "exact_duplicate", "duplicate_of=stories/s"),
                ("web/b", "exact_duplicate", "duplicate_of=stories/s"),
                ("web/c", "near_duplicate", "duplicate_of=stories/s"),
            ]
        ),
        label="Dropped",
    )
    p.run()


def test_dedup_is_independent_of_worker_count() -> None:
    docs = [_doc(f"web/{i}", _text(i % 7) if i % 3 else _text(100 + i)) for i in range(60)]
    results = []
    for workers in (1, 2):
        p = make_pipeline(f"--direct_num_workers={workers}")
        out = p | beam.Create(docs) | DedupDocuments(DedupConfig(), {"web": 3})
        expected_kept = sorted(
            {f"web/{i}" for i in range(60) if not i % 3}
            | {min(f"web/{j}" for j in range(60) if j % 3 and j % 7 == k) for k in range(7)}
        )
        assert_that(out["kept"] | beam.Map(lambda d: d["id"]), equal_to(expected_kept))
        p.run()
        results.append(expected_kept)
    assert results[0] == results[1]
