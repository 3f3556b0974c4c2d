"""Token budgets per source beside shares: the plan states epochs needed, or fails naming the numbers."""

from __future__ import annotations

import pytest

from pipelines.summary import format_plan
from schemas.config import BlendConfig, BlendSource
from transforms.blend.plan import compute_plan
from transforms.blend.plan_model import PlanError, ProfileRow

ROLES = {"web": "web", "stories": "synthetic_story", "advice": "advice", "constitution": "constitution"}


def _profile(available: dict[str, tuple[int, int]]) -> list[ProfileRow]:
    return [(name, "none", (), docs, units) for name, (docs, units) in available.items()]


def _recipe(**budgets: int) -> BlendConfig:
    return BlendConfig(
        unit="tokens",
        sources={
            "web": BlendSource(share=1.0),
            "stories": BlendSource(target=budgets.get("stories", 30_000), max_epochs=4),
            "advice": BlendSource(target=budgets.get("advice", 3_000), max_epochs=2, chat_tokens="assistant"),
            "constitution": BlendSource(target=budgets.get("constitution", 5_000), max_epochs=3),
        },
    )


AVAILABLE = {
    "web": (1000, 500_000),
    "stories": (40, 12_000),
    "advice": (25, 2_000),
    "constitution": (7, 20_000),
}


def test_budgets_beside_a_share_and_the_epochs_they_need() -> None:
    plan = compute_plan(_recipe(), _profile(AVAILABLE), ROLES)
    sources = plan.sources
    # Budgets are met exactly; the web share takes all of web at max_epochs 1.
    assert {n: s.target for n, s in sources.items()} == {
        "web": 500_000,
        "stories": 30_000,
        "advice": 3_000,
        "constitution": 5_000,
    }
    assert plan.total == 538_000
    assert sources["stories"].epochs == pytest.approx(2.5) and sources["stories"].within_max_epochs
    assert sources["advice"].epochs == pytest.approx(1.5)
    assert sources["advice"].budget == 3_000 and sources["web"].budget is None
    assert sources["advice"].role == "advice"
    assert sources["stories"].strata["all"].full_epochs == 2
    printed = "\n".join(format_plan(plan.to_dict()))
    assert "2.50 of max 4 (budget)" in printed and "1.00 of max 1 (share)" in printed
    assert "advice" in printed


def test_an_unmeetable_budget_names_the_source_and_the_numbers() -> None:
    with pytest.raises(PlanError) as err:
        compute_plan(_recipe(advice=5_000), _profile(AVAILABLE), ROLES)
    message = str(err.value)
    assert message.startswith("blend plan cannot be met")
    assert (
        "source 'advice': target 5000 tokens (budget) but only 2000 available x max_epochs 2 = 4000; "
        "needs 2.50 epochs; raise max_epochs to 3 or lower the budget"
    ) in message
    # The sources that can meet their budgets are not named.
    assert "'stories'" not in message


def test_budgets_larger_than_the_total_fail_clearly() -> None:
    cfg = _recipe().model_copy(update={"total": 10_000})
    with pytest.raises(PlanError, match=r"budgets sum to 38000 tokens, more than blend.total 10000"):
        compute_plan(cfg, _profile(AVAILABLE), ROLES)


def test_shares_split_what_the_budgets_leave_of_a_total() -> None:
    cfg = BlendConfig(
        unit="tokens",
        total=100_000,
        sources={
            "web": BlendSource(share=0.75),
            "constitution": BlendSource(share=0.25, max_epochs=3),
            "advice": BlendSource(target=4_000, max_epochs=2),
        },
    )
    plan = compute_plan(cfg, _profile(AVAILABLE), ROLES)
    assert {n: s.target for n, s in plan.sources.items()} == {
        "web": 72_000,
        "constitution": 24_000,
        "advice": 4_000,
    }
