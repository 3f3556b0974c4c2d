"""Blend: exact allocation, plans, exact ranks and balanced shards."""

from __future__ import annotations

import json
import pickle
import random
import re

import apache_beam as beam
import pytest
from apache_beam.testing.util import assert_that, equal_to
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.config import BlendConfig, BlendSource, NarrativeBalance
from transforms.blend.allocation import allocate, allocate_capped, shard_quotas
from transforms.blend.bodies import rejoin_bodies, split_body, with_body
from transforms.blend.plan import compute_plan
from transforms.blend.plan_model import NarrativeCounts, PlanError, ProfileRow, StratumPlan
from transforms.blend.sample import BlendSources, ExactRank, copies_of
from transforms.report.conservation import JoinIntegrityError
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


def _profile(available: dict[str, int]) -> list[ProfileRow]:
    return [(name, "none", (), n, n) for name, n in available.items()]


def test_plan_derives_total_from_the_binding_source() -> None:
    plan = compute_plan(
        _cfg({"web": 0.8, "stories": 0.2}, {"stories": 10}), _profile({"web": 800, "stories": 5})
    )
    # web caps the total at 1000; stories need 200 = 40 epochs > 10, so stories bind: 5*10/0.2 = 250.
    assert plan.total == 250
    stories, web = plan.sources["stories"], plan.sources["web"]
    assert stories.target == 50
    assert stories.strata["all"].full_epochs == 10
    assert web.target == 200
    assert web.strata["all"].remainder == 200
    assert sum(web.shard_targets) == 200


def test_plan_fails_with_numbers_when_epochs_are_not_enough() -> None:
    with pytest.raises(
        PlanError, match=r"'stories': target 300 documents .* only 5 available x max_epochs 10 = 50"
    ):
        compute_plan(
            _cfg({"web": 0.7, "stories": 0.3}, {"stories": 10}, total=1000),
            _profile({"web": 800, "stories": 5}),
        )


def test_absolute_targets() -> None:
    cfg = BlendConfig(
        unit="bytes",
        sources={"web": BlendSource(target=5000), "stories": BlendSource(target=3000, max_epochs=3)},
    )
    plan = compute_plan(cfg, _profile({"web": 9000, "stories": 1200}))
    assert plan.total == 8000
    assert plan.sources["stories"].strata["all"] == StratumPlan(
        available_docs=1200, available=1200, target=3000, full_epochs=2, remainder=600
    )
    with pytest.raises(PlanError, match=r"'stories': target 3000 bytes \(budget\) .* = 2400"):
        compute_plan(
            cfg.model_copy(
                update={"sources": {**cfg.sources, "stories": BlendSource(target=3000, max_epochs=2)}}
            ),
            _profile({"web": 9000, "stories": 1200}),
        )


def test_shard_size_sets_the_shard_count() -> None:
    cfg = BlendConfig(unit="bytes", sources={"web": BlendSource(target=1001)}, shard_size=250)
    plan = compute_plan(cfg, _profile({"web": 5000}))
    assert plan.num_shards == 5
    assert sum(plan.sources["web"].shard_targets) == 1001


def test_plan_pickles_and_serializes_like_the_manifest() -> None:
    plan = compute_plan(_balance_cfg("add_stories", match=True), _balance_profile(), ROLES)
    # Side inputs carry the typed plan between workers.
    assert pickle.loads(pickle.dumps(plan)) == plan
    as_json = plan.to_dict()
    assert json.loads(json.dumps(as_json)) == as_json, "plain JSON types only"
    assert list(as_json) == [
        "unit",
        "tokenizer",
        "total",
        "seed",
        "num_shards",
        "sources",
        "stratum_of",
        "narrative_balance",
        "trope_matching",
    ]
    assert "narrative_balance" not in compute_plan(_cfg({"web": 1.0}), _profile({"web": 10})).to_dict()


def test_copies_follow_units_before_a_document() -> None:
    plan = StratumPlan(available_docs=5, available=5, target=13, full_epochs=2, remainder=3)
    # Unit weights: the first `remainder` ranks get one more copy.
    assert [copies_of(r, 1, plan) for r in range(5)] == [3, 3, 3, 2, 2]
    # Weighted: a document gets the extra copy when it ends nearer to the remainder than it starts.
    plan = StratumPlan(available_docs=3, available=220, target=100, full_epochs=0, remainder=100)
    assert copies_of(0, 60, plan) == 1
    assert copies_of(60, 70, plan) == 1  # 60..130: midpoint 95 < 100
    assert copies_of(60, 90, plan) == 0  # 60..150: midpoint 105 > 100


@settings(max_examples=200, deadline=None)
@given(
    total=st.integers(0, 10**6),
    weights=st.lists(st.integers(0, 100), min_size=1, max_size=6),
    caps=st.lists(st.integers(0, 10**5), min_size=6, max_size=6),
)
def test_allocate_capped_properties(total: int, weights: list[int], caps: list[int]) -> None:
    names = [f"s{i}" for i in range(len(weights))]
    w = dict(zip(names, map(float, weights), strict=True))
    c = dict(zip(names, caps, strict=False))
    out = allocate_capped(total, w, c)
    assert sum(out.values()) == min(total, sum(c.values()))
    assert all(0 <= out[n] <= c[n] for n in names)
    assert allocate_capped(total, dict(reversed(w.items())), dict(reversed(c.items()))) == out


@settings(max_examples=200, deadline=None)
@given(total=st.integers(0, 10**6), num_shards=st.integers(1, 64), offset=st.integers(0, 63))
def test_shard_quotas_sum_and_match_round_robin(total: int, num_shards: int, offset: int) -> None:
    offset %= num_shards
    quotas = shard_quotas(total, num_shards, offset)
    assert sum(quotas) == total
    assert max(quotas) - min(quotas) <= 1
    if total <= 2000:
        dealt = [0] * num_shards
        for rank in range(total):
            dealt[(rank + offset) % num_shards] += 1
        assert dealt == quotas


_NARRATIVES = ["aligned", "misaligned", "mixed", "none"]
_TAGS = [
    (),
    ("coercion",),
    ("deception",),
    ("honest",),
    ("corrigible",),
    ("ethical_reasoning", "honest"),
    ("protective",),
]

profile_rows = st.lists(
    st.tuples(
        st.sampled_from(["web", "wiki", "stories", "constitution"]),
        st.sampled_from(_NARRATIVES),
        st.sampled_from(_TAGS),
        st.integers(1, 50),
        st.integers(0, 5000),
    ),
    min_size=1,
    max_size=30,
    unique_by=lambda r: r[:3],
)
ROLES = {"web": "web", "wiki": "web", "stories": "synthetic_story", "constitution": "constitution"}


@settings(max_examples=300, deadline=None)
@given(
    rows=profile_rows,
    weights=st.lists(st.integers(0, 20), min_size=4, max_size=4).filter(lambda w: sum(w) > 0),
    epochs=st.lists(st.integers(1, 20), min_size=4, max_size=4),
    total=st.one_of(st.none(), st.integers(1, 10**5)),
    balance=st.one_of(
        st.none(),
        st.builds(
            NarrativeBalance,
            min_aligned_share=st.floats(0.05, 0.95),
            strategy=st.sampled_from(["add_stories", "downsample_misaligned", "both"]),
            match_tropes=st.booleans(),
        ),
    ),
    unit=st.sampled_from(["documents", "bytes", "tokens"]),
    num_shards=st.integers(1, 16),
    seed=st.randoms(use_true_random=False),
)
def test_plan_properties(
    rows: list[ProfileRow],
    weights: list[int],
    epochs: list[int],
    total: int | None,
    balance: NarrativeBalance | None,
    unit: str,
    num_shards: int,
    seed: random.Random,
) -> None:
    names = ["web", "wiki", "stories", "constitution"]
    if unit == "documents":
        rows = [(s, n, t, d, d) for s, n, t, d, _ in rows]
    cfg = BlendConfig(
        unit=unit,  # type: ignore[arg-type]
        total=total,
        sources={
            n: BlendSource(share=w / sum(weights), max_epochs=e)
            for n, w, e in zip(names, weights, epochs, strict=True)
        },
        num_shards=num_shards,
        narrative_balance=balance,
    )
    try:
        plan = compute_plan(cfg, rows, ROLES)
    except PlanError as err:
        assert re.search(r"\d+", str(err)), "a plan error gives the numbers"
        return
    shuffled = list(rows)
    seed.shuffle(shuffled)
    assert compute_plan(cfg, shuffled, dict(reversed(ROLES.items()))) == plan, "independent of input order"
    assert sum(s.target for s in plan.sources.values()) == plan.total
    if total is not None and balance is None:
        assert plan.total == total
    for name, s in plan.sources.items():
        assert s.target <= s.available * s.max_epochs, name
        assert sum(st_.target for st_ in s.strata.values()) == s.target, name
        assert sum(st_.available for st_ in s.strata.values()) == s.available, name
        for st_ in s.strata.values():
            assert st_.target <= st_.available * s.max_epochs
            assert st_.full_epochs * st_.available + st_.remainder == st_.target
            assert st_.remainder < max(st_.available, 1)
        assert sum(s.shard_targets) == s.target
        assert len(s.shard_targets) == num_shards
    if balance is not None:
        assert plan.narrative_balance is not None
        planned = plan.narrative_balance.planned
        a, m = planned.aligned, planned.misaligned
        assert a * (1 - balance.min_aligned_share) >= balance.min_aligned_share * m - 1e-6 * (a + m)
        assert a == sum(
            v.target
            for s in plan.sources.values()
            for k, v in s.strata.items()
            if k.split(":")[0] == "aligned"
        )


def _balance_profile() -> list[ProfileRow]:
    # Web text that is mostly misaligned; stories that are aligned and tagged.
    return [
        ("web", "misaligned", ("coercion",), 600, 600),
        ("web", "misaligned", ("deception",), 200, 200),
        ("web", "aligned", ("honest",), 20, 20),
        ("web", "none", (), 180, 180),
        ("stories", "aligned", ("ethical_reasoning", "protective"), 10, 10),
        ("stories", "aligned", ("honest",), 10, 10),
        ("stories", "aligned", ("protective",), 10, 10),
    ]


def _balance_cfg(strategy: str, max_epochs: int = 30, match: bool = False) -> BlendConfig:
    return BlendConfig(
        sources={"web": BlendSource(share=0.9), "stories": BlendSource(share=0.1, max_epochs=max_epochs)},
        total=1000,
        narrative_balance=NarrativeBalance(min_aligned_share=0.5, strategy=strategy, match_tropes=match),  # type: ignore[arg-type]
    )


def test_balance_by_adding_stories() -> None:
    plan = compute_plan(_balance_cfg("add_stories"), _balance_profile(), ROLES)
    nb = plan.narrative_balance
    assert nb is not None
    # web 900 units: 720 misaligned, 18 aligned, 162 other; stories 100 aligned.
    assert nb.before == NarrativeCounts(aligned=118, misaligned=720, aligned_share=118 / 838)
    assert nb.planned.aligned == 720 and nb.planned.misaligned == 720
    assert plan.sources["stories"].target == 702
    assert plan.sources["web"].target == 900
    assert "added 602 documents of aligned stories from 'stories'" in nb.actions[0]


def test_balance_by_downsampling_misaligned_web() -> None:
    plan = compute_plan(_balance_cfg("downsample_misaligned"), _balance_profile(), ROLES)
    nb = plan.narrative_balance
    assert nb is not None
    assert nb.planned == NarrativeCounts(aligned=118, misaligned=118, aligned_share=0.5)
    web = plan.sources["web"].strata
    # 602 misaligned taken out; only 18 more "other" documents exist to refill.
    assert web["misaligned"].target == 118
    assert web["other"].target == 180
    assert plan.sources["web"].target == 900 - 602 + 18
    assert "took 602 fewer misaligned documents from 'web', refilled with 18" in nb.actions[0]


def test_balance_both_adds_stories_first_then_downsamples() -> None:
    plan = compute_plan(_balance_cfg("both", max_epochs=5), _balance_profile(), ROLES)
    nb = plan.narrative_balance
    assert nb is not None
    assert plan.sources["stories"].target == 150  # 30 stories x 5 epochs
    assert nb.planned.aligned == 168
    assert nb.planned.misaligned == 168
    assert len(nb.actions) == 2


def test_balance_that_cannot_be_met_says_why() -> None:
    with pytest.raises(
        PlanError, match=r"138 aligned and 720 misaligned documents .* need 0.5000.* at most 120"
    ):
        compute_plan(_balance_cfg("add_stories", max_epochs=4), _balance_profile(), ROLES)


def test_trope_matched_counter_stories() -> None:
    profile = [
        r if r[2] != ("ethical_reasoning", "protective") else (*r[:3], 30, 30) for r in _balance_profile()
    ]
    plan = compute_plan(_balance_cfg("add_stories", match=True), profile, ROLES)
    strata = plan.sources["stories"].strata
    # coercion is countered by ethical_reasoning stories, deception by honest ones; the
    # protective-only stories counter neither web trope.
    assert set(strata) == {"aligned:coercion", "aligned:deception", "aligned:general"}
    matched = plan.trope_matching
    assert matched["coercion"].web_misaligned == 600 and matched["deception"].web_misaligned == 200
    # 18 aligned web documents + 702 story units balance 720 misaligned ones; the
    # stories split 3:1 between the counters of coercion and deception: 526.5 / 175.5.
    assert abs(strata["aligned:coercion"].target - 526.5) <= 1
    assert abs(strata["aligned:deception"].target - 175.5) <= 1
    assert strata["aligned:general"].target == 0
    assert plan.stratum_of == {
        ("stories", ("ethical_reasoning", "protective")): "aligned:coercion",
        ("stories", ("honest",)): "aligned:deception",
        ("stories", ("protective",)): "aligned:general",
    }
    # The JSON form joins the keys with "|", as manifest.json and plan.json always had them.
    assert plan.to_dict()["stratum_of"] == {
        "stories|ethical_reasoning|protective": "aligned:coercion",
        "stories|honest": "aligned:deception",
        "stories|protective": "aligned:general",
    }


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


def test_weighted_exact_rank_gives_units_before() -> None:
    items = [("a", (stable_hash(i), str(i)), i) for i in range(300)]
    members = sorted((k, v) for _, k, v in items)
    expected, before = [], 0
    for rank, (_, v) in enumerate(members):
        expected.append(("a", rank, v, before))
        before += v % 7
    p = make_pipeline()
    assert_that(p | beam.Create(items) | ExactRank(weight=lambda v: v % 7), equal_to(expected))
    p.run()


def _docs(source: str, n: int, narrative: str = "none") -> list[dict[str, object]]:
    return [
        {"id": f"{source}/{i}", "source": source, "text": "x" * (1 + i % 13), "narrative": narrative}
        for i in range(n)
    ]


@pytest.mark.parametrize(
    ("num_shards", "unit"), [(1, "documents"), (3, "documents"), (7, "documents"), (3, "bytes")]
)
def test_blend_hits_targets_and_balances_shards(num_shards: int, unit: str) -> None:
    cfg = _cfg(
        {"web": 0.9, "stories": 0.1}, {"stories": 5}, num_shards=num_shards, seed=3, unit=unit, total=150
    )
    docs = _docs("web", 180) + _docs("stories", 7)
    available = {
        name: sum(1 if unit == "documents" else len(str(d["text"])) for d in docs if d["source"] == name)
        for name in ("web", "stories")
    }
    plan = compute_plan(
        cfg, [(n, "none", (), sum(1 for d in docs if d["source"] == n), u) for n, u in available.items()]
    )
    # A document is 1 unit, or up to 13 bytes.
    slack = 0 if unit == "documents" else 13

    def check(assigned: list[tuple[int, dict[str, object]]]) -> None:
        per_source: dict[str, int] = {}
        per_shard: dict[tuple[int, str], int] = {}
        for shard, d in assigned:
            units = int(d["units"])  # type: ignore[call-overload]
            per_source[str(d["source"])] = per_source.get(str(d["source"]), 0) + units
            per_shard[(shard, str(d["source"]))] = per_shard.get((shard, str(d["source"])), 0) + units
        for name, p in plan.sources.items():
            # Within half a document of the target.
            assert abs(per_source[name] - p.target) <= slack / 2, (name, per_source[name], p.target)
            counts = [per_shard.get((s, name), 0) for s in range(num_shards)]
            if unit == "documents":
                assert tuple(counts) == p.shard_targets, (name, counts)
            assert all(abs(c - per_source[name] / num_shards) <= max(slack, 1) for c in counts), (
                name,
                counts,
            )
        copies = sorted((d["id"], d["epoch"]) for _, d in assigned)
        assert len(copies) == len(set(copies)), "each (id, epoch) copy appears once"

    p = make_pipeline()
    out = p | beam.Create(docs) | BlendSources(cfg)
    assert_that(out.assigned, check, label="Assigned")
    assert_that(out.plan, equal_to([plan]), label="Plan")
    if unit == "documents":
        assert_that(
            out.ledger | beam.Map(lambda r: (r["source"], r["fate"])) | beam.combiners.Count.PerElement(),
            equal_to(
                [
                    (("web", "written"), 135),
                    (("web", "dropped"), 45),
                    (("stories", "written"), 7),
                ]
            ),
            label="Ledger",
        )
    p.run()


def test_blend_with_balance_samples_each_stratum_exactly() -> None:
    cfg = _balance_cfg("both", max_epochs=5)
    docs = (
        _docs("web", 800, "misaligned")
        + [{**d, "id": f"{d['id']}-a"} for d in _docs("web", 20, "aligned")]
        + [{**d, "id": f"{d['id']}-n"} for d in _docs("web", 180, "none")]
        + _docs("stories", 30, "aligned")
    )
    plan = compute_plan(
        cfg,
        [
            ("web", "misaligned", (), 800, 800),
            ("web", "aligned", (), 20, 20),
            ("web", "none", (), 180, 180),
            ("stories", "aligned", (), 30, 30),
        ],
        ROLES,
    )

    def check(assigned: list[tuple[int, dict[str, object]]]) -> None:
        got: dict[tuple[str, str], int] = {}
        for _, d in assigned:
            key = (str(d["source"]), str(d["narrative"]))
            got[key] = got.get(key, 0) + 1
        assert got[("web", "misaligned")] == plan.sources["web"].strata["misaligned"].target
        assert got[("stories", "aligned")] == 150
        aligned = got[("web", "aligned")] + got[("stories", "aligned")]
        assert aligned / (aligned + got[("web", "misaligned")]) >= 0.5
        epochs = sorted({int(d["epoch"]) for _, d in assigned if d["source"] == "stories"})  # type: ignore[call-overload]
        assert epochs == [0, 1, 2, 3, 4]

    p = make_pipeline()
    out = p | beam.Create(docs) | BlendSources(cfg, ROLES)
    assert_that(out.assigned, check)
    p.run()


def test_body_join_restores_bodies_and_fails_on_a_lost_one() -> None:
    doc = {"id": "web/a", "source": "web", "text": "t", "meta": {"k": 1}, "units": 1}
    lean, body = split_body(doc)
    [(shard, copy)] = list(rejoin_bodies(("key", {"copies": [(2, lean)], "body": [body]})))
    assert shard == 2 and with_body(copy) == doc
    assert list(rejoin_bodies(("key", {"copies": [], "body": [body]}))) == []  # sampled out
    with pytest.raises(JoinIntegrityError, match="no body"):
        list(rejoin_bodies(("key", {"copies": [(0, lean)], "body": []})))
