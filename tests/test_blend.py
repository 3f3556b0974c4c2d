"""Blend: exact allocation, plans, exact ranks and balanced shards."""

from __future__ import annotations

import apache_beam as beam
import pytest
from apache_beam.testing.util import assert_that, equal_to
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.config import BlendConfig, BlendSource
from transforms.blend import BlendSources, ExactRank, PlanError, allocate, compute_plan, copies_of
from transforms.text import stable_hash

from .conftest import make_pipeline


def _cfg(shares: dict[str, float], epochs: dict[str, int] | None = None, **kw: object) -> BlendConfig:
    epochs = epochs or {}
    return BlendConfig(
        sources={n: BlendSource(share=s, max_epochs=epochs.get(n, 1)) for n, s in shares.items()},
        **kw,  # type: ignore[arg-type]
    )


def test_allocate_is_exact_and_close_to_shares() -> None:
    out = allocate(1001, {"a": 0.5, "b": 0.3, "c": 0.2})
    assert sum(out.values()) == 1001
    assert all(abs(out[n] - s * 1001) < 1 for n, s in {"a": 0.5, "b": 0.3, "c": 0.2}.items())


@settings(max_examples=200, deadline=None)
@given(
    total=st.integers(0, 10**7),
    weights=st.lists(st.integers(0, 1000), min_size=1, max_size=8).filter(lambda w: sum(w) > 0),
)
def test_allocate_properties(total: int, weights: list[int]) -> None:
    shares = {f"s{i}": w / sum(weights) for i, w in enumerate(weights)}
    out = allocate(total, shares)
    assert sum(out.values()) == total
    assert all(abs(out[n] - shares[n] * total) < 1 + 1e-6 for n in shares)
    # Independent of the order the sources are listed in.
    assert allocate(total, dict(reversed(list(shares.items())))) == out


def test_plan_derives_total_from_the_binding_source() -> None:
    plan = compute_plan(_cfg({"web": 0.8, "stories": 0.2}, {"stories": 10}), {"web": 800, "stories": 5})
    # web caps the total at 1000; stories need 200 = 40 epochs > 10, so stories bind: 5*10/0.2 = 250.
    assert plan["total"] == 250
    assert plan["sources"]["stories"]["target"] == 50
    assert plan["sources"]["stories"]["full_epochs"] == 10
    assert plan["sources"]["web"]["target"] == 200
    assert plan["sources"]["web"]["remainder"] == 200


def test_plan_fails_with_numbers_when_epochs_are_not_enough() -> None:
    with pytest.raises(PlanError, match=r"'stories': target 300 .* only 5 available x max_epochs 10 = 50"):
        compute_plan(
            _cfg({"web": 0.7, "stories": 0.3}, {"stories": 10}, total=1000), {"web": 800, "stories": 5}
        )


def test_copies_follow_rank() -> None:
    plan = {"full_epochs": 2, "remainder": 3}
    assert [copies_of(r, plan) for r in range(5)] == [3, 3, 3, 2, 2]


def test_exact_rank_matches_sorting() -> None:
    items = [("a", (stable_hash(i), str(i)), i) for i in range(500)] + [
        ("b", (stable_hash("b", i), str(i)), i) for i in range(30)
    ]
    expected = []
    for group in ("a", "b"):
        members = sorted((k, v) for g, k, v in items if g == group)
        expected += [(group, rank, v) for rank, (_, v) in enumerate(members)]
    p = make_pipeline()
    assert_that(p | beam.Create(items) | ExactRank(), equal_to(expected))
    p.run()


def _docs(source: str, n: int) -> list[dict[str, object]]:
    return [{"id": f"{source}/{i}", "source": source, "text": "x", "narrative": "none"} for i in range(n)]


@pytest.mark.parametrize("num_shards", [1, 3, 7])
def test_blend_hits_targets_and_balances_shards(num_shards: int) -> None:
    cfg = _cfg({"web": 0.9, "stories": 0.1}, {"stories": 5}, num_shards=num_shards, seed=3, total=150)
    docs = _docs("web", 180) + _docs("stories", 7)
    plan = compute_plan(cfg, {"web": 180, "stories": 7})

    def check(assigned: list[tuple[int, dict[str, object]]]) -> None:
        per_source: dict[str, int] = {}
        per_shard: dict[tuple[int, str], int] = {}
        for shard, d in assigned:
            per_source[str(d["source"])] = per_source.get(str(d["source"]), 0) + 1
            per_shard[(shard, str(d["source"]))] = per_shard.get((shard, str(d["source"])), 0) + 1
        assert per_source == {n: p["target"] for n, p in plan["sources"].items()}
        for name, p in plan["sources"].items():
            counts = [per_shard.get((s, name), 0) for s in range(num_shards)]
            assert max(counts) - min(counts) <= 1, (name, counts)
            assert abs(counts[0] - p["target"] / num_shards) < 1
        copies = sorted((d["id"], d["epoch"]) for _, d in assigned)
        assert len(copies) == len(set(copies)), "each (id, epoch) copy appears once"

    p = make_pipeline()
    out = p | beam.Create(docs) | BlendSources(cfg)
    assert_that(out["assigned"], check, label="Assigned")
    assert_that(
        out["ledger"] | beam.Map(lambda r: (r["source"], r["fate"])) | beam.combiners.Count.PerElement(),
        equal_to(
            [
                (("web", "written"), plan["sources"]["web"]["target"]),
                (("web", "dropped"), 180 - plan["sources"]["web"]["target"]),
                (("stories", "written"), 7),
            ]
        ),
        label="Ledger",
    )
    p.run()
