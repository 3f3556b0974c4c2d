"""Dedup: each stage alone, clustering against union-find, survivors, oversized buckets.

Pipelines are few and each holds several scenarios, because every FnApiRunner
run of the dedup graph costs seconds.
"""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing.util import assert_that, equal_to

from schemas.config import DedupConfig, SurvivorConfig
from transforms.blocks import ListsPerKeyFn, salt_of
from transforms.dedup.deduplicate import Decision, DedupDocuments, _apply
from transforms.dedup.exact import ExactGroups
from transforms.dedup.index import index_rows
from transforms.dedup.keys import (
    CURRENT,
    EARLIER,
    compute_bands,
    doc_node,
    earlier_node,
    exact_hash,
    key_partition,
    score_of,
)
from transforms.dedup.lsh import LinkBuckets, partition_edges
from transforms.packing import pack
from transforms.report.conservation import JoinIntegrityError
from transforms.text import normalize_for_dedup

from .conftest import make_pipeline

WORDS = [f"word{i}" for i in range(5000)]


def _text(seed: int, n: int = 300) -> str:
    rng = random.Random(seed)
    return " ".join(rng.choice(WORDS) for _ in range(n))


def _edit(text: str, seed: int, edits: int = 3) -> str:
    rng = random.Random(seed)
    words = text.split()
    for _ in range(edits):
        words[rng.randrange(len(words))] = f"edit{rng.randrange(10**6)}"
    return " ".join(words)


def _doc(doc_id: str, text: str, source: str = "web", **meta: Any) -> dict[str, Any]:
    return {"id": doc_id, "source": source, "text": text, "meta": dict(meta), "narrative": "none"}


# --- pure functions -------------------------------------------------------------------------


def test_exact_hash_ignores_case_punctuation_and_spacing() -> None:
    a = exact_hash(normalize_for_dedup("The AI  refused, politely."))
    assert a == exact_hash(normalize_for_dedup("the ai refused politely"))
    assert a != exact_hash(normalize_for_dedup("the ai refused"))
    assert 0 <= a < 2**63


def test_survivor_order_priority_then_score_then_id() -> None:
    story = _doc("stories/z", "t", source="stories", quality=0.1)
    web_good = _doc("web/b", "t", quality=0.9)
    web_same = _doc("web/a", "t", quality=0.9)
    default = SurvivorConfig()
    nodes = {
        "story": doc_node(story, 1, default),
        "good": doc_node(web_good, 3, default),
        "same": doc_node(web_same, 3, default),
    }
    assert min(nodes.values()) == nodes["story"]  # curated source first
    assert nodes["same"] < nodes["good"]  # equal score: smallest id
    by_score = SurvivorConfig(order=["score", "priority"], score_field="meta.quality")
    assert doc_node(web_good, 3, by_score) < doc_node(story, 1, by_score)
    by_length = SurvivorConfig(order=["length"])
    assert doc_node(_doc("x/2", "longer text"), 3, by_length) < doc_node(_doc("x/1", "short"), 3, by_length)
    # Earlier runs' survivors outrank everything of this run.
    assert earlier_node("web/zzz") < nodes["story"]
    assert earlier_node("a")[0] == EARLIER and nodes["story"][0] == CURRENT


def test_score_of_reads_dotted_paths_and_defaults_to_zero() -> None:
    doc = {"meta": {"quality": 0.5, "flag": True}, "trope_scores": {"honest": 0.25}}
    assert score_of(doc, "meta.quality") == 0.5  # type: ignore[arg-type]
    assert score_of(doc, "trope_scores.honest") == 0.25  # type: ignore[arg-type]
    assert score_of(doc, "meta.flag") == 0.0  # type: ignore[arg-type]
    assert score_of(doc, "meta.missing.deeper") == 0.0  # type: ignore[arg-type]


def test_compute_bands_marks_wordless_texts_and_matches_for_copies() -> None:
    cfg = DedupConfig()
    base = _text(1)
    sigs, bands, has = compute_bands([base, base.upper(), "!!! ...", _text(2)], cfg)
    assert sigs.shape == (4, 128) and bands.shape == (4, 9)
    assert has.tolist() == [True, True, False, True]
    assert np.array_equal(bands[0], bands[1])
    assert not np.any(bands[0] == bands[3])
    assert bands.min() >= 0  # 63-bit: fits Beam's signed VarIntCoder


# --- Beam transforms ------------------------------------------------------------------------


def _salted_links(members: list[tuple[Any, Any]], salts: int) -> set[tuple[Any, Any]]:
    """The reference: per bucket, member -> salted group minimum -> bucket minimum."""
    groups: dict[Any, list[Any]] = {}
    for key, node in members:
        groups.setdefault((key, salt_of(node, salts)), []).append(node)
    edges = {(node, min(nodes)) for nodes in groups.values() for node in nodes if node != min(nodes)}
    lows: dict[Any, list[Any]] = {}
    for (key, _), nodes in groups.items():
        lows.setdefault(key, []).append(min(nodes))
    return edges | {(low, min(ls)) for ls in lows.values() for low in ls if low != min(ls)}


def _partitioned(items: list[tuple[Any, Any]], partitions: int) -> dict[int, list[Any]]:
    fn = ListsPerKeyFn(lambda item: key_partition(item[0], partitions), lambda item: item, None)
    fn.start_bundle()
    lists = [kv for item in items for kv in fn.process(item)] + [wv.value for wv in fn.finish_bundle()]
    grouped: dict[int, list[Any]] = {}
    for part, batch in lists:
        grouped.setdefault(part, []).append(batch)
    assert sorted(item for bs in grouped.values() for b in bs for item in b) == sorted(items)
    return grouped


def test_partitioned_links_are_the_salted_links_whatever_the_flush_and_partition_count(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rng = random.Random(7)
    members = [((rng.randrange(3), rng.randrange(20)), (CURRENT, f"d{i:03d}")) for i in range(300)]
    members += [((0, 5), (EARLIER, "old")), ((2, 9), (CURRENT, "solo"))]
    expected = _salted_links(members, 4)
    for partitions in (1, 16):
        got = [e for item in _partitioned(members, partitions).items() for e in partition_edges(item, 4)]
        assert set(got) == expected and len(got) == len(expected)
    monkeypatch.setattr("transforms.blocks.MAX_BUFFERED_ITEMS", 7)  # flushes mid-bundle
    assert {e for item in _partitioned(members, 16).items() for e in partition_edges(item, 4)} == expected


def test_bucket_linking_and_exact_groups() -> None:
    """Bounded bucket fan-in, and every exact-group member told its group's minimum and size."""
    p = make_pipeline()
    # One bucket of 1,000 members (boilerplate) plus a bucket of one member.
    members = [((0, 77), (CURRENT, f"web/{i:04d}")) for i in range(1000)] + [((1, 5), (CURRENT, "web/x"))]
    linked = (p | "Members" >> beam.Create(members),) | "Link" >> LinkBuckets(salts=8, partitions=4)

    def check_links(got: list[tuple[Any, Any]]) -> None:
        # Every member except the minimum has exactly one outgoing edge; the singleton none.
        sources = Counter(a for a, _ in got)
        assert len(sources) == 999 and max(sources.values()) == 1, sources.most_common(3)
        roots = {b for a, b in got} - {a for a, _ in got}
        assert roots == {(CURRENT, "web/0000")}
        # Fan-in stays near 1000 / 8 per node, not 999 on the minimum.
        assert max(Counter(b for _, b in got).values()) < 250

    assert_that(linked, check_links, label="BoundedLinks")

    # Exact hash 11 has 50 members and an earlier survivor; 12 one member; 13 only an earlier survivor.
    items = [(11, ((CURRENT, f"d{i}"), ({"id": f"d{i}"}, [i], None))) for i in range(50)]
    items += [(11, ((EARLIER, "old"), None)), (13, ((EARLIER, "alone"), None))]
    items += [(12, ((CURRENT, "s"), ({"id": "s"}, [7, 8], b"sig")))]
    exact = (p | "Items" >> beam.Create(items),) | "GroupMin" >> ExactGroups(partitions=3)
    # Every copy is told its group's minimum, here the earlier survivor.
    assert_that(
        exact.losers, equal_to([((EARLIER, "old"), {"id": f"d{i}"}) for i in range(50)]), label="Losers"
    )
    assert_that(exact.weights, equal_to([((EARLIER, "old"), 51), ((CURRENT, "s"), 1)]), label="Weights")
    assert_that(exact.bands, equal_to([((0, 7), (CURRENT, "s")), ((1, 8), (CURRENT, "s"))]), label="Bands")
    assert_that(exact.keys, equal_to([((CURRENT, "s"), (12, [7, 8]))]), label="Keys")
    assert_that(exact.sigs, equal_to([((CURRENT, "s"), b"sig")]), label="Sigs")
    p.run()


def test_dedup_documents_end_to_end() -> None:
    """Exact + near duplicates with a curated survivor, a boilerplate bucket, scores, verification."""
    base = _text(1)
    docs = [
        _doc("web/a", base),
        _doc("web/b", base.upper() + "!!"),  # exact after normalization
        _doc("web/c", _edit(base, 5, edits=1)),  # near duplicate
        _doc("stories/s", base, source="stories"),  # the curated copy wins
        _doc("web/unique", _text(2)),
        _doc("web/empty", "... !!!"),  # no words: no bands, only exact dedup applies
        _doc("web/empty2", "?"),
        _doc("web/short", "hello"),  # one word is one shingle: it gets bands
        # Higher score beats smaller id; equal scores fall back to the smallest id.
        _doc("web/sc-a", _text(4), quality=0.2),
        _doc("web/sc-b", _text(4), quality=0.9),
        _doc("web/tie-b", _text(5), quality=0.5),
        _doc("web/tie-a", _text(5) + ".", quality=0.5),
    ]
    # 120 copies of one page with two words changed each: every band bucket of the page
    # is oversized, and the salted groups split it.
    board = _text(3)
    docs += [_doc(f"bp/{i:03d}", _edit(board, i, edits=2), source="bp", quality=i / 1000) for i in range(120)]
    cfg = DedupConfig(max_rounds=3, bucket_salts=4)

    p = make_pipeline()
    out = p | "Docs" >> beam.Create(docs) | "Dedup" >> DedupDocuments(cfg, {"web": 3, "stories": 1, "bp": 3})
    assert_that(
        out.kept | "KeptIds" >> beam.Map(lambda d: (d["id"], d["cluster_id"], d["cluster_size"])),
        equal_to(
            [
                ("stories/s", "stories/s", 4),
                ("web/unique", "web/unique", 1),
                ("web/empty", "web/empty", 2),
                ("web/short", "web/short", 1),
                ("web/sc-b", "web/sc-b", 2),
                ("web/tie-a", "web/tie-a", 2),
                ("bp/119", "bp/119", 120),  # equal priority, highest quality
            ]
        ),
        label="Kept",
    )
    assert_that(
        out.dropped
        | "NotBoilerplate" >> beam.Filter(lambda r: r["source"] != "bp")
        | "DroppedIds" >> beam.Map(lambda r: (r["id"], r["reason"], r["detail"], r["cluster_size"])),
        equal_to(
            [
                ("web/a", "exact_duplicate", "duplicate_of=stories/s", 4),
                ("web/b", "exact_duplicate", "duplicate_of=stories/s", 4),
                ("web/c", "near_duplicate", "duplicate_of=stories/s", 4),
                ("web/empty2", "exact_duplicate", "duplicate_of=web/empty", 2),
                ("web/sc-a", "exact_duplicate", "duplicate_of=web/sc-b", 2),
                ("web/tie-b", "exact_duplicate", "duplicate_of=web/tie-a", 2),
            ]
        ),
        label="Dropped",
    )
    assert_that(
        out.dropped
        | "Boilerplate" >> beam.Filter(lambda r: r["source"] == "bp")
        | "BpReasons" >> beam.Map(lambda r: (r["reason"], r["detail"], r["cluster_size"]))
        | "CountReasons" >> beam.combiners.Count.PerElement(),
        equal_to([(("near_duplicate", "duplicate_of=bp/119", 120), 119)]),
        label="BoilerplateDropped",
    )
    assert_that(
        out.index_entries
        | "Survivors" >> beam.Filter(lambda r: r["id"] in ("stories/s", "web/empty", "web/short"))
        | "IndexRows" >> beam.FlatMap(lambda e: [(r["id"], r["band"]) for r in index_rows(e)])
        | "PerId" >> beam.combiners.Count.PerKey(),
        equal_to(
            [("stories/s", 10), ("web/empty", 1), ("web/short", 10)]
        ),  # exact hash + 9 bands; no bands without words
        label="Index",
    )

    # Verification at 0.95: the 3-word edit (estimated Jaccard 0.90) shares 3 of 9 bands,
    # so it is a candidate, but no longer a duplicate; the one-word tail (0.99) still is.
    other = _text(6)
    vf_docs = [_doc("v/a", other), _doc("v/b", other + " tail"), _doc("v/c", _edit(other, 9, edits=3))]
    verified = DedupConfig(max_rounds=3, verify_threshold=0.95)
    vf = p | "VerifyDocs" >> beam.Create(vf_docs) | "DedupVerified" >> DedupDocuments(verified, {"web": 3})
    assert_that(vf.kept | "VfKept" >> beam.Map(lambda d: d["id"]), equal_to(["v/a", "v/c"]), label="Verified")
    p.run()


def test_doc_join_fails_loudly_when_one_side_is_missing() -> None:
    doc = {"id": "web/a", "source": "web", "text": "some words here"}
    node = (CURRENT, 3, 0, "web/a")
    keys = [(7, [1, 2])]
    kept = Decision(True, "web/a", 1, False)
    whole = {"doc": [(7, pack(doc))], "keys": keys, "losers": [], "decision": [kept]}
    assert [d["id"] for d in _apply((node, whole)) if isinstance(d, dict)] == ["web/a"]
    # An exact copy's body arrives alone under its own node: discarded, counted, no error.
    assert list(_apply((node, {**whole, "keys": [], "decision": []}))) == []
    # A winner whose decision was lost, a decision whose body or keys were lost.
    for broken in ({"decision": []}, {"doc": []}, {"keys": []}):
        with pytest.raises(JoinIntegrityError, match="web/a"):
            list(_apply((node, {**whole, **broken})))
    # An earlier run's survivor has a decision and no body: nothing to apply, no error.
    earlier = earlier_node("old/x")
    assert list(_apply((earlier, {"doc": [], "keys": [], "losers": [], "decision": [kept]}))) == []
