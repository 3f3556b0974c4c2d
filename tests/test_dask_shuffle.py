"""GroupByKey as one P2P shuffle (fix 11 of ``pipelines/dask_runner.py``), on the real cluster."""

from __future__ import annotations

import dask.bag as db
import numpy as np
import pandas as pd
from dask.bag.core import groupby_tasks
from distributed import Client

from pipelines.dask_runner import depth_priorities, stable_key_hash
from pipelines.dask_shuffle import grouped, keyed_frame, optimized, p2p_group

from .conftest import DaskCluster


def _key(item: tuple[int, int]) -> int:
    return item[0]


def test_groups_keep_input_order_and_equal_keys_together() -> None:
    first = keyed_frame([(np.int64(1), "a"), (2, "b")], [0], stable_key_hash)
    second = keyed_frame([(1, "c"), (2, "d"), (1, "e")], [1], stable_key_hash)
    # Rows arrive in any order from a P2P shuffle: shuffled here, and put back.
    arrived = pd.concat([second, first]).sample(frac=1.0, random_state=3)
    assert grouped(arrived) == [(1, ["a", "c", "e"]), (2, ["b", "d"])]


def test_p2p_group_on_the_cluster(dask_cluster: DaskCluster) -> None:
    pairs = [(k % 7, k) for k in range(500)]
    bag = db.from_sequence(pairs, npartitions=9)
    groups = p2p_group(bag, stable_key_hash)
    with Client(dask_cluster.address, timeout=60) as client:
        result = client.compute(optimized(groups.reduction(list, _flatten)), optimize_graph=False).result()
    assert sorted(result) == [(k, [v for v in range(500) if v % 7 == k]) for k in range(7)]


def _flatten(parts: list[list[tuple[int, list[int]]]]) -> list[tuple[int, list[int]]]:
    return [group for part in parts for group in part]


def test_p2p_group_tasks_grow_linearly_with_partitions() -> None:
    # The task shuffle splits every partition max_branch (32) ways per stage; at 256
    # partitions that is ~39 tasks a partition, against ~7 for the P2P shuffle (its input, transfer,
    # unpack and output tasks, the partition index and the count).
    n = 256
    bag = db.from_sequence(range(n * 4), npartitions=n).map(lambda x: (x % 97, x))
    p2p = len(optimized(p2p_group(bag, stable_key_hash).count()).__dask_graph__())
    tasks = len(optimized(groupby_tasks(bag, _key, hash=stable_key_hash).count()).__dask_graph__())
    assert p2p <= 8 * n, p2p
    assert tasks > 20 * n, tasks


def test_depth_priorities_rank_each_task_by_its_longest_chain() -> None:
    words = db.from_sequence(["a", "b", "c", "d"], npartitions=2)
    upper = words.map(str.upper)
    both = db.concat([words, upper]).count()
    graph = dict(optimized(both).__dask_graph__())
    depth = depth_priorities(graph)
    assert set(depth) == set(graph)
    # Roots are 0; the final sum waits on the upper branch, the longest chain.
    assert {k for k, d in depth.items() if d == 0} == {k for k in graph if k[0].startswith("from_sequence")}
    assert depth[both.key] == max(depth.values())
    assert all(depth[k] > 0 for k in graph if not k[0].startswith("from_sequence"))
