"""GroupByKey on Dask as one peer-to-peer shuffle (fix 11 of ``pipelines/dask_runner.py``).

``dask.bag``'s task shuffle (``groupby_tasks``) splits every partition into
``max_branch`` pieces per stage, one task each: a GroupByKey of ``n`` partitions is
about ``2 n max_branch`` tasks once ``n`` passes 32.  The tropemix DAG has ~45 of them,
so at 400 partitions (1M documents) the graph was 1.24 million tasks and the scheduler
held 5.5 GB before a document was read (BENCHMARKS.md, Dask).  Dask's P2P shuffle
moves the same rows in ``2 n + 1`` tasks, streams them between workers and spills
them to disk on its own; it is built for DataFrames, so rows travel as one pickled
binary column beside their key's stable hash.

Two things of the P2P machinery this module works around (dask 2026.8):

- the bag optimizer (``lazify``) turns the shuffle's ``P2PBarrierTask`` into a plain
  ``Task``, and the scheduler then fails the shuffle ("P2P ... failed during transfer
  phase"; dask/dask#11825).  ``optimized`` optimizes the graph itself and puts the
  barriers back, and the runner submits it with ``optimize_graph=False``;
- P2P output arrives in whatever order the transfers land, so each row carries its
  input partition and position, and a group's values are put back in that order:
  the same input gives the same groups in the same order on every run.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Iterable
from typing import Any

import dask
import dask.bag as db
import dask.dataframe as dd
import numpy as np
import pandas as pd
import pyarrow as pa
from dask.bag.core import Item
from dask.bag.core import optimize as optimize_bag
from dask.highlevelgraph import HighLevelGraph
from distributed.shuffle._core import P2PBarrierTask

# The shuffled frame: the key's stable hash (the shuffle column), where the row came
# from (for a stable order) and the pickled (key, value) pair.  Binary, not object,
# so dask's string conversion leaves the payload alone.
_BINARY = pd.ArrowDtype(pa.large_binary())  # large: a partition may pass 2 GB
META = pd.DataFrame(
    {
        "hash": pd.Series([], dtype="int64"),
        "src": pd.Series([], dtype="int64"),
        "pos": pd.Series([], dtype="int64"),
        "payload": pd.Series([], dtype=_BINARY),
    }
)


def keyed_frame(
    items: Iterable[tuple[Any, Any]], index: list[int], hash_key: Callable[[Any], int]
) -> pd.DataFrame:
    """One partition of ``(key, value)`` pairs as rows of the shuffled frame.

    Args:
      items: the partition's pairs.
      index: the partition's index, as the one element of a partition of ``db.range``.
      hash_key: a hash of a key equal in every process for equal keys.
    """
    (src,) = index
    pairs = items if isinstance(items, list) else list(items)
    # Pickled one pair at a time straight into one Arrow buffer: a list of the pickles
    # beside the Arrow copy doubled the task's peak (a 100k-document run went to 4.5 GB).
    payloads = pa.array(
        (pickle.dumps(pair, protocol=pickle.HIGHEST_PROTOCOL) for pair in pairs),
        type=pa.large_binary(),
        size=len(pairs),
    )
    return pd.DataFrame(
        {
            # int64: pandas hashes the column again to pick the output partition.
            "hash": pd.Series([hash_key(k) & 0x7FFF_FFFF_FFFF_FFFF for k, _ in pairs], dtype="int64"),
            "src": pd.Series(np.full(len(pairs), src, dtype="int64")),
            "pos": pd.Series(np.arange(len(pairs), dtype="int64")),
            "payload": pd.Series(payloads, dtype=_BINARY),
        }
    )


def grouped(frame: pd.DataFrame) -> list[tuple[Any, list[Any]]]:
    """One output partition of the shuffle as ``(key, [values])``, values in input order.

    Args:
      frame: rows of ``keyed_frame``s, in arrival order.
    """
    frame = frame.sort_values(["src", "pos"], kind="stable")
    groups: dict[Any, list[Any]] = {}
    for payload in frame["payload"]:
        key, value = pickle.loads(payload)
        groups.setdefault(key, []).append(value)
    return list(groups.items())


def p2p_group(bag: db.Bag, hash_key: Callable[[Any], int]) -> db.Bag:
    """``bag``'s ``(key, value)`` pairs grouped by key over a P2P shuffle, as ``(key, [values])``.

    Args:
      bag: ``(key, value)`` pairs.
      hash_key: picks a key's output partition; equal keys must hash equal everywhere.
    """
    n = bag.npartitions
    frames = bag.map_partitions(keyed_frame, db.range(n, npartitions=n), hash_key)
    with dask.config.set({"dataframe.convert-string": False}):
        # The frame refers to the partitions by key alone: ``Bag.to_dataframe`` would
        # tokenize the whole upstream graph, which holds DoFns that do not tokenize.
        keys = [(frames.name, i) for i in range(n)]
        ddf = dd.from_graph({}, META, (None,) * (n + 1), keys, "tropemix-p2p-input")
        shuffled = ddf.shuffle(on="hash", npartitions=n, shuffle_method="p2p", ignore_index=True)
        out = shuffled.to_bag(format="frame").map_partitions(grouped)
    # ``out`` lacks the partitions' own graph; merged back here.
    return db.Bag(HighLevelGraph.merge(frames.__dask_graph__(), out.__dask_graph__()), out.name, n)


def optimized(item: Item) -> Item:
    """``item`` with the bag optimizations applied and every P2P barrier task kept as it was.

    Submit the result with ``optimize_graph=False``.

    Args:
      item: the value to compute (the runner's sink count).
    """
    graph = dict(item.__dask_graph__())
    barriers = [key for key, task in graph.items() if isinstance(task, P2PBarrierTask)]
    out = optimize_bag(graph, item.__dask_keys__(), fuse_keys=barriers)
    for key in barriers:
        out[key] = graph[key]
    return Item(out, item.key)
