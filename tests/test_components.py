"""Connected components (large-star / small-star) against a union-find reference.

The step functions are checked without a runner on chains up to 10,000 nodes,
stars, rings, grids, joined chains and random graphs; one pipeline checks that the
Beam transform gives the same labels whatever the partitions and list flushes, and
that an unconverged graph fails the job instead of releasing labels.
"""

from __future__ import annotations

import hashlib
import math
import random
from typing import Any

import apache_beam as beam
import pytest
from apache_beam.testing.util import assert_that, equal_to
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.cluster.hierarchy import DisjointSet

from transforms.blocks import (
    ConnectedComponents,
    large_star,
    local_components,
    neighbour_bounds,
    small_star,
)

from .conftest import make_pipeline

Node = tuple[Any, ...]


def _reference(edges: list[tuple[Node, Node]]) -> dict[Node, Node]:
    """Each node's component minimum, by union-find (scipy's ``DisjointSet``)."""
    sets = DisjointSet([n for edge in edges for n in edge])
    for a, b in edges:
        sets.merge(a, b)
    labels: dict[Node, Node] = {}
    for subset in sets.subsets():
        low = min(subset)
        labels.update(dict.fromkeys(subset, low))
    return labels


def _node(i: int, ids: str) -> Node:
    """Document-like nodes whose ids sort with ``i``, against it, or at random."""
    if ids == "sorted":
        return (1, f"doc/{i:06d}")
    if ids == "reversed":
        return (1, f"doc/{999_999 - i:06d}")
    return (1, hashlib.blake2b(str(i).encode(), digest_size=6).hexdigest())


def _chain(n: int, ids: str, start: int = 0) -> list[tuple[Node, Node]]:
    return [(_node(start + i, ids), _node(start + i + 1, ids)) for i in range(n - 1)]


def _check(edges: list[tuple[Node, Node]], partitions: int = 7) -> int:
    run = local_components(edges, max_rounds=64, partitions=partitions)
    assert run.unsettled == 0
    assert run.labels == _reference(edges)
    return run.rounds


@pytest.mark.parametrize("ids", ["sorted", "reversed", "hashed"])
def test_chains_converge_in_rounds_that_grow_with_log_n(ids: str) -> None:
    for n in (10, 100, 1000, 10_000):
        rounds = _check(_chain(n, ids))
        # Min-label propagation needs up to n - 1 rounds here; these take about log2 n.
        assert rounds <= 2 * math.log2(n), (n, rounds)


def test_stars_rings_grids_and_joined_chains() -> None:
    hub = _node(0, "hashed")
    star = [(hub, _node(i, "hashed")) for i in range(1, 500)]
    # The minimum as a leaf: every other node links to one centre that is not the minimum.
    off_centre = [(_node(10_000, "sorted"), _node(i, "sorted")) for i in range(9_990, 10_000)]
    ring = [*_chain(300, "reversed", start=20_000), (_node(20_000, "reversed"), _node(20_299, "reversed"))]
    side = 30
    grid = [
        (_node(40_000 + r * side + c, "hashed"), _node(40_000 + r * side + c + 1, "hashed"))
        for r in range(side)
        for c in range(side - 1)
    ] + [
        (_node(40_000 + r * side + c, "hashed"), _node(40_000 + (r + 1) * side + c, "hashed"))
        for r in range(side - 1)
        for c in range(side)
    ]
    # Two chains of 200 joined in their middles: a component whose minimum is an end.
    joined = _chain(200, "sorted", start=50_000) + _chain(200, "sorted", start=60_000)
    joined.append((_node(50_100, "sorted"), _node(60_100, "sorted")))
    for edges in (star, off_centre, ring, grid, joined):
        _check(edges)
    everything = star + off_centre + ring + grid + joined
    random.Random(3).shuffle(everything)
    # Repeated edges, both directions, one partition or many: the same components.
    _check(everything + [(b, a) for a, b in everything[:500]], partitions=1)
    _check(everything, partitions=64)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 60), st.integers(0, 60)), max_size=120),
    st.integers(1, 9),
)
def test_random_graphs_match_union_find(pairs: list[tuple[int, int]], partitions: int) -> None:
    edges = [(_node(a, "hashed"), _node(b, "hashed")) for a, b in pairs if a != b]
    _check(edges, partitions)


def test_a_finished_star_leaves_with_its_labels() -> None:
    c, v, w = (1, "c"), (1, "v"), (1, "w")
    # Both leaves were leaves in the previous large-star: the star is a whole component.
    records = [[(c, v, True), (c, w, True), (v, c, False), (w, c, False)]]
    out = list(large_star(records, neighbour_bounds(records)))
    labels = sorted(o.value for o in out if isinstance(o, beam.pvalue.TaggedOutput))
    assert labels == [(c, c), (v, c), (w, c)]
    # Leaves only tell small-star that they are leaves, which then emits nothing for them.
    edges = [o for o in out if not isinstance(o, beam.pvalue.TaggedOutput)]
    assert sorted(edges) == [(v, v), (w, w)]
    assert list(small_star([edges])) == []


def test_too_few_rounds_leave_nodes_unsettled() -> None:
    run = local_components(_chain(1000, "sorted"), max_rounds=3)
    assert run.rounds == 3 and run.unsettled > 0


def _pipeline_edges() -> list[tuple[Node, Node]]:
    rng = random.Random(1)
    nodes = [_node(i, "hashed") for i in range(80)] + [(0, "earlier")]
    edges = [(a, b) for a, b in ((rng.choice(nodes), rng.choice(nodes)) for _ in range(70)) if a != b]
    # Repeated and reversed edges: every node must still get exactly one label.
    repeats = [(b, a) for a, b in edges[:20]] + edges[:5]
    return edges + repeats + _chain(150, "sorted", start=1000) + _chain(40, "reversed", start=2000)


@pytest.mark.parametrize("partitions", [1, 5])
def test_connected_components_do_not_depend_on_how_lists_split(monkeypatch: Any, partitions: int) -> None:
    """Lists flushed every 3 records and 1 or 5 partitions: the union-find labels."""
    monkeypatch.setattr("transforms.blocks.MAX_BUFFERED_ITEMS", 3)
    edges = _pipeline_edges()
    p = make_pipeline()
    labels = p | beam.Create(edges) | ConnectedComponents(max_rounds=10, partitions=partitions)
    assert_that(labels, equal_to(sorted(_reference(edges).items())))
    p.run()


def test_an_unconverged_graph_fails_the_job_and_names_the_setting() -> None:
    p = make_pipeline()
    _ = p | beam.Create(_chain(150, "sorted")) | ConnectedComponents(max_rounds=2, partitions=4)
    with pytest.raises(
        Exception, match=r"unsettled after 2 large-star/small-star rounds.*raise dedup.max_rounds"
    ):
        p.run()
