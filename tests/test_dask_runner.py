"""The fixed DaskRunner on a real Dask cluster (scheduler and two workers on 127.0.0.1).

Each fix in ``pipelines/dask_runner.py`` has a test run on both runners: the stock
``DaskRunner`` must fail it (strict xfail), the fixed one must pass.  Then the whole
tropemix DAG runs on the cluster and must write the same bytes as the in-process runner.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.runner import PipelineResult
from distributed.diagnostics.plugin import SchedulerPlugin

from benchmarks.corpus import CorpusSpec, write_corpus
from pipelines.dask_runner import MISSING_METRICS
from pipelines.run import run
from schemas.config import MixConfig
from schemas.loading import load_config, parse_config

from .conftest import DEMO_CONFIG, FN_API_RUNNER, MODEL, DaskCluster, write_demo_config

STOCK = "apache_beam.runners.dask.dask_runner.DaskRunner"
FIXED = "pipelines.dask_runner.TropemixDaskRunner"


def _on_both(reason: str) -> pytest.MarkDecorator:
    """Runs a test on the stock runner, where it must fail for ``reason``, and on the fixed one."""
    return pytest.mark.parametrize(
        "runner", [pytest.param(STOCK, marks=pytest.mark.xfail(strict=True, reason=reason)), FIXED]
    )


class _Sink(beam.DoFn):
    """Writes each bundle's elements to a JSON file of its own in ``folder``.

    Args:
      folder: a directory every worker can write (the cluster is on this machine).
    """

    def __init__(self, folder: str) -> None:
        self._folder = folder

    def start_bundle(self) -> None:
        self._items: list[Any] = []

    def process(self, element: Any) -> None:
        self._items.append(element)

    def finish_bundle(self) -> None:
        if self._items:
            (Path(self._folder) / f"{uuid.uuid4().hex}.json").write_text(json.dumps(self._items))


def _collected(folder: Path) -> list[Any]:
    return [item for path in sorted(folder.glob("*.json")) for item in json.loads(path.read_text())]


def _run(
    cluster: DaskCluster, runner: str, build: Callable[[beam.Pipeline], None], *extra: str
) -> PipelineResult:
    options = PipelineOptions([f"--runner={runner}", f"--dask_client_address={cluster.address}", *extra])
    p = beam.Pipeline(options=options)
    build(p)
    result = p.run()
    try:
        result.wait_until_finish()
    finally:
        if runner == STOCK:  # the stock result never closes its client
            result.client.close()
    return result


def _split(n: int) -> Iterator[Any]:
    yield n if n % 2 == 0 else beam.pvalue.TaggedOutput("odd", n)


@_on_both("every consumer of a multi-output ParDo receives every tag's elements")
def test_tags_apart(dask_cluster: DaskCluster, runner: str, tmp_path: Path) -> None:
    def build(p: beam.Pipeline) -> None:
        parts = p | beam.Create(range(10)) | beam.ParDo(_split).with_outputs("odd", main="even")
        even = parts.even | "E" >> beam.Map(lambda n: ["even", n])
        odd = parts.odd | "O" >> beam.Map(lambda n: ["odd", n])
        _ = (even, odd) | beam.Flatten() | beam.ParDo(_Sink(str(tmp_path)))

    _run(dask_cluster, runner, build)
    assert sorted(map(tuple, _collected(tmp_path))) == sorted(
        ("even" if n % 2 == 0 else "odd", n) for n in range(10)
    )


@_on_both("only the last sink visited is computed")
def test_every_sink(dask_cluster: DaskCluster, runner: str, tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()

    def build(p: beam.Pipeline) -> None:
        numbers = p | beam.Create([1, 2, 3])
        _ = numbers | "A" >> beam.ParDo(_Sink(str(tmp_path / "a")))
        _ = numbers | "B" >> beam.ParDo(_Sink(str(tmp_path / "b")))

    _run(dask_cluster, runner, build)
    assert sorted(_collected(tmp_path / "a")) == sorted(_collected(tmp_path / "b")) == [1, 2, 3]


@_on_both("elements emitted in finish_bundle are dropped")
def test_finish_bundle_kept(dask_cluster: DaskCluster, runner: str, tmp_path: Path) -> None:
    def build(p: beam.Pipeline) -> None:
        _ = (
            p
            | beam.Create(range(300))
            | beam.BatchElements(min_batch_size=64, max_batch_size=64)
            | beam.Map(len)
            | beam.ParDo(_Sink(str(tmp_path)))
        )

    _run(dask_cluster, runner, build)
    assert sum(_collected(tmp_path)) == 300


class _Touch(beam.DoFn):
    """Leaves a marker file per element it processes, so a test can count executions."""

    def __init__(self, folder: str) -> None:
        self._folder = folder

    def process(self, element: int) -> Iterator[int]:
        (Path(self._folder) / uuid.uuid4().hex).touch()
        yield element


@_on_both("each consuming task recomputes a side input")
def test_side_input_computed_once(dask_cluster: DaskCluster, runner: str, tmp_path: Path) -> None:
    (tmp_path / "marks").mkdir()
    (tmp_path / "out").mkdir()

    def build(p: beam.Pipeline) -> None:
        side = p | "Side" >> beam.Create([100]) | beam.ParDo(_Touch(str(tmp_path / "marks")))
        _ = (
            p
            | "Main" >> beam.Create(range(8))
            | beam.Map(lambda n, s: n + s, s=beam.pvalue.AsSingleton(side))
            | beam.ParDo(_Sink(str(tmp_path / "out")))
        )

    # Four partitions of the main input: four consuming tasks.
    _run(dask_cluster, runner, build, "--dask_npartitions=4")
    assert sorted(_collected(tmp_path / "out")) == [100 + n for n in range(8)]
    assert len(list((tmp_path / "marks").iterdir())) == 1


class _BundleId(beam.DoFn):
    def start_bundle(self) -> None:
        self._id = uuid.uuid4().hex

    def process(self, element: int) -> Iterator[str]:
        yield self._id


@_on_both("Reshuffle is ignored: what one Create made stays in one task")
def test_reshuffle_spreads(dask_cluster: DaskCluster, runner: str, tmp_path: Path) -> None:
    def build(p: beam.Pipeline) -> None:
        _ = (
            p
            | beam.Create(range(64))
            | beam.Reshuffle()
            | beam.ParDo(_BundleId())
            | beam.ParDo(_Sink(str(tmp_path)))
        )

    _run(dask_cluster, runner, build)
    bundles = Counter(_collected(tmp_path))
    assert sum(bundles.values()) == 64
    assert len(bundles) > 1


def _cogroup_chain(p: beam.Pipeline, links: int) -> None:
    keyed = p | beam.Create([(k % 5, k) for k in range(20)])
    for i in range(links):
        keyed = (
            {"a": keyed, "b": keyed}
            | f"Join{i}" >> beam.CoGroupByKey()
            | f"Sum{i}" >> beam.MapTuple(lambda k, g: (k, sum(g["a"]) + sum(g["b"])))
        )


@_on_both("each CoGroupByKey doubles the partition count")
def test_group_partitions_capped(runner: str) -> None:
    from apache_beam.runners.dask.dask_runner import DaskOptions, DaskRunner
    from apache_beam.runners.dask.overrides import dask_overrides

    from pipelines.dask_runner import _BagBuilder

    p = beam.Pipeline(options=PipelineOptions([f"--runner={runner}"]))
    _cogroup_chain(p, 6)
    p.replace_all(dask_overrides())
    bag_kwargs = DaskOptions._extract_bag_kwargs({"npartitions": 4})
    visitor = (
        _BagBuilder(bag_kwargs, 4, "unused")
        if runner == FIXED
        else DaskRunner.to_dask_bag_visitor(bag_kwargs)
    )
    p.visit(visitor)
    assert max(bag.npartitions for bag in visitor.bags.values()) <= 8


class _Counted(beam.DoFn):
    def process(self, element: int) -> Iterator[int]:
        beam.metrics.Metrics.counter("tropemix.test", "seen").inc()
        beam.metrics.Metrics.distribution("tropemix.test", "value").update(element)
        yield element


@_on_both("metrics() raises NotImplementedError")
def test_metrics_reach_the_driver(dask_cluster: DaskCluster, runner: str) -> None:
    from transforms.report.metrics import collect_metrics

    result = _run(
        dask_cluster,
        runner,
        lambda p: p | beam.Create(range(1, 41)) | beam.ParDo(_Counted()),
        "--dask_npartitions=4",
    )
    metrics = result.metrics().query()
    assert [m.committed for m in metrics["counters"]] == [40]
    report = collect_metrics(result)
    assert report["counters"] == {"tropemix.test/seen": 40}
    assert report["distributions"]["tropemix.test/value"] == {
        "count": 40,
        "sum": 820,
        "min": 1,
        "max": 40,
        "mean": 20.5,
    }


@_on_both("beam.io.Read is translated to nothing")
def test_read_a_bounded_source(dask_cluster: DaskCluster, runner: str, tmp_path: Path) -> None:
    text = tmp_path / "lines.txt"
    text.write_text("".join(f"line {i}\n" for i in range(50)))
    (tmp_path / "out").mkdir()
    _run(
        dask_cluster,
        runner,
        lambda p: p | beam.io.ReadFromText(str(text)) | beam.ParDo(_Sink(str(tmp_path / "out"))),
    )
    assert sorted(_collected(tmp_path / "out")) == sorted(f"line {i}" for i in range(50))


@_on_both("equal keys of different types (numpy.int64 and int) are grouped apart")
def test_equal_keys_group_together(dask_cluster: DaskCluster, runner: str, tmp_path: Path) -> None:
    pairs = [(np.int64(k), "numpy") for k in range(20)] + [(k, "int") for k in range(20)]

    def build(p: beam.Pipeline) -> None:
        _ = (
            p
            | beam.Create(pairs)
            | beam.GroupByKey()
            | beam.MapTuple(lambda k, vs: [int(k), sorted(vs)])
            | beam.ParDo(_Sink(str(tmp_path)))
        )

    _run(dask_cluster, runner, build, "--dask_npartitions=2")
    assert sorted(_collected(tmp_path)) == [[k, ["int", "numpy"]] for k in range(20)]


def test_trim_returns_the_pages_arrow_keeps() -> None:
    """Fix 10: Arrow's pool keeps freed buffers' pages (the P2P frames) until released."""
    import psutil
    import pyarrow as pa

    from pipelines.dask_runner import trim_heaps

    def rss_mb() -> float:
        return psutil.Process().memory_info().rss / 2**20

    arrays = [pa.array([b"x" * 1000] * 100, type=pa.large_binary()) for _ in range(3000)]
    assert pa.total_allocated_bytes() > 250 * 2**20
    del arrays
    kept = rss_mb()
    trim_heaps(None)
    assert kept - rss_mb() > 150  # ~290 MB allocated; measured 870 MB back of 3x as much


class _Priorities(SchedulerPlugin):
    """Counts, per graph the scheduler receives, tasks ranked below one of their dependencies."""

    name = "tropemix-test-priorities"

    def __init__(self) -> None:
        self.graphs: list[tuple[int, int]] = []  # (tasks with dependencies, ranked below one)

    def update_graph(self, scheduler: Any, *, priority: dict[Any, tuple[Any, ...]], **kwargs: Any) -> None:
        with_deps = below = 0
        for key, rank in priority.items():
            deps = [d.key for d in scheduler.tasks[key].dependencies if d.key in priority]
            with_deps += bool(deps)
            # Lower tuples run first: a task must rank strictly before every task it depends on.
            below += any(rank[0] >= priority[d][0] for d in deps)
        self.graphs.append((with_deps, below))


@_on_both("dask.order may run a partition's consumers after new reads; user priority is 0 everywhere")
def test_consumers_rank_above_their_inputs(dask_cluster: DaskCluster, runner: str, tmp_path: Path) -> None:
    """Fix 12: every task outranks the tasks it depends on, so data in hand is consumed first."""
    from distributed import Client

    (tmp_path / "out").mkdir()
    with Client(dask_cluster.address, timeout=30) as client:
        client.register_plugin(_Priorities())

        def build(p: beam.Pipeline) -> None:
            keyed = p | beam.Create(range(40)) | beam.Reshuffle() | beam.Map(lambda n: (n % 3, n))
            grouped = keyed | beam.GroupByKey() | beam.MapTuple(lambda k, vs: (k, sorted(vs)))
            _ = (
                (grouped, keyed | beam.Map(lambda kv: (kv[0], [kv[1]])))
                | beam.Flatten()
                | beam.ParDo(_Sink(str(tmp_path / "out")))
            )

        _run(dask_cluster, runner, build, "--dask_npartitions=4")

        def graphs(dask_scheduler: Any) -> list[tuple[int, int]]:
            plugin = dask_scheduler.plugins.pop(_Priorities.name)
            return list(plugin.graphs)

        (with_deps, below), *_ = client.run_on_scheduler(graphs)
    assert with_deps > 10 and below == 0
    assert len(_collected(tmp_path / "out")) == 40 + 3


def test_workers_trim_their_heap(dask_cluster: DaskCluster, tmp_path: Path) -> None:
    """Fix 10: a run registers ``TrimMemory`` on every worker, and it trims there."""
    from distributed import Client

    from pipelines.dask_runner import TRIM_SECONDS, TrimMemory

    (tmp_path / "out").mkdir()
    _run(dask_cluster, FIXED, lambda p: p | beam.Create(range(10)) | beam.ParDo(_Sink(str(tmp_path / "out"))))

    def state(dask_worker: Any) -> tuple[bool, bool]:
        """(registered with libc's malloc_trim, has trimmed since a task ended)."""
        plugin = dask_worker.plugins.get(TrimMemory.name)
        return plugin is not None and plugin._trim is not None, plugin is not None and plugin._last > 0

    def forget_trims(dask_worker: Any) -> bool:
        dask_worker.plugins[TrimMemory.name]._last = 0.0
        callback = dask_worker.periodic_callbacks.get(TrimMemory.name)
        return callback is not None and callback.is_running()

    def last_trim(dask_worker: Any) -> float:
        return float(dask_worker.plugins[TrimMemory.name]._last)

    with Client(dask_cluster.address, timeout=30) as client:
        states = list(client.run(state).values())
        assert len(states) == 2 and all(registered for registered, _ in states)
        assert any(trimmed for _, trimmed in states)  # a worker with no task of this run has nothing to trim
        # A worker paused on unmanaged memory runs no task: its timer alone must trim.
        assert all(client.run(forget_trims).values())
        time.sleep(3 * TRIM_SECONDS)
        assert all(last > 0 for last in client.run(last_trim).values())


def test_layers_named_by_label() -> None:
    """Every graph layer maps to the Beam label that made it (what memory profiles name tasks by)."""
    from apache_beam.runners.dask.dask_runner import DaskOptions
    from apache_beam.runners.dask.overrides import dask_overrides

    from pipelines.dask_runner import _BagBuilder

    p = beam.Pipeline(options=PipelineOptions([f"--runner={FIXED}"]))
    _ = (
        p
        | "Nums" >> beam.Create(range(8))
        | "Pair" >> beam.Map(lambda n: (n % 2, n))
        | "Group" >> beam.GroupByKey()
    )
    p.replace_all(dask_overrides())
    builder = _BagBuilder(DaskOptions._extract_bag_kwargs({"npartitions": 2}), 2, "unused")
    p.visit(builder)
    roots = {label.split("/")[0] for label in builder.layer_labels.values()}
    assert roots == {"Nums", "Pair", "Group"}
    names = {name for bag in builder.bags.values() for name in bag.__dask_graph__().layers}
    assert names == set(builder.layer_labels)


# --- the whole tropemix DAG on the cluster -------------------------------------------------------

# Few partitions: these inputs are small, and scheduling cost grows with partitions.
DASK_ARGS = ("--runner=dask", "--dask_npartitions=2")
OUTPUTS = ("shards", "ledger", "dead_letter", "dedup_index")


def _hashes(out: Path) -> dict[str, str]:
    """sha256 of every shard, ledger, dead-letter and dedup-index file of a run, by relative path."""
    return {
        str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
        for folder in OUTPUTS
        for p in sorted((out / folder).glob("*"))
    }


def _with_output(cfg: MixConfig, out: Path) -> MixConfig:
    return cfg.model_copy(update={"output": cfg.output.model_copy(update={"path": str(out)})})


def _same_bytes_on_dask(cfg: MixConfig, local: Path, out: Path, cluster: DaskCluster) -> dict[str, Any]:
    """Runs ``cfg`` on the cluster into ``out``; asserts the same outputs as the in-process run in ``local``."""
    report = run(_with_output(cfg, out), [*DASK_ARGS, f"--dask_client_address={cluster.address}"])
    assert report is not None and report["conservation"]["ok"]
    expected = _hashes(local)
    assert any(name.startswith("ledger/") for name in expected)
    assert _hashes(out) == expected
    return report


@pytest.fixture(scope="module")
def demo_local(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo's outputs on the in-process runner."""
    out = tmp_path_factory.mktemp("demo-local")
    run(_with_output(load_config(str(DEMO_CONFIG)), out), [f"--runner={FN_API_RUNNER}"])
    return out


def test_demo_byte_identical_on_dask(dask_cluster: DaskCluster, demo_local: Path, tmp_path: Path) -> None:
    report = _same_bytes_on_dask(load_config(str(DEMO_CONFIG)), demo_local, tmp_path, dask_cluster)
    # Beam's counters reach the report through Dask's event log and agree with the ledger.
    assert report["metrics"]["available"] and report["metrics_check"]["ok"]
    assert report["metrics"]["missing"] == list(MISSING_METRICS)


@pytest.fixture(scope="module")
def corpus_2k(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    """The 2,000-document benchmark corpus (``benchmarks/corpus.py``), in eight files."""
    out = tmp_path_factory.mktemp("corpus-2k")
    write_corpus(CorpusSpec(2000), out, shard_docs=250, workers=1, shared_data=shared_data)
    return out


def _corpus_config(corpus: Path) -> MixConfig:
    return parse_config(
        {
            "run_name": "corpus-2k",
            "sources": [
                {
                    "name": "bench",
                    "role": "web",
                    "inputs": [str(corpus / "*.jsonl.gz")],
                    "fields": {"id": "id", "text": "text", "metadata": ["kind", "dup_of"]},
                }
            ],
            "classifier": {"model": str(MODEL)},
            "blend": {"sources": {"bench": {"share": 1.0, "max_epochs": 1}}, "num_shards": 4},
            "output": {"path": str(corpus / "unused")},
        }
    )


def test_2k_corpus_byte_identical_on_dask(dask_cluster: DaskCluster, corpus_2k: Path, tmp_path: Path) -> None:
    cfg = _corpus_config(corpus_2k)
    run(_with_output(cfg, tmp_path / "local"), [f"--runner={FN_API_RUNNER}"])
    report = _same_bytes_on_dask(cfg, tmp_path / "local", tmp_path / "dask", dask_cluster)
    assert report["conservation"]["sources"]["bench"]["records_in"] == 2000


def _keys_held(cluster: DaskCluster, name: str) -> int:
    """How many task results the worker called ``name`` holds."""
    from distributed import Client

    with Client(cluster.address, timeout=30) as client:
        workers = client.scheduler_info(n_workers=-1)["workers"]
        address = next(a for a, w in workers.items() if w["name"] == name)
        return len(client.has_what([address])[address])


def test_a_killed_worker_changes_no_byte(dask_cluster: DaskCluster, demo_local: Path, tmp_path: Path) -> None:
    victim = dask_cluster.start_worker("victim")
    dask_cluster.wait_for_workers(3)
    config = write_demo_config(tmp_path, tmp_path / "dask")
    job = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "tropemix"),
            "run",
            str(config),
            "--",
            *DASK_ARGS,
            f"--dask_client_address={dask_cluster.address}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    # Mid-run: the victim holds results other tasks still need, so Dask must recompute them.
    while job.poll() is None and _keys_held(dask_cluster, "victim") == 0:
        time.sleep(0.2)
    assert job.poll() is None, "the run ended before the victim held a result"
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    output = job.communicate()[0].decode()
    assert job.returncode == 0, output
    assert "conservation OK" in output
    report = json.loads((tmp_path / "dask" / "report.json").read_text())
    assert report["conservation"]["ok"] and report["metrics_check"]["ok"]
    assert _hashes(tmp_path / "dask") == _hashes(demo_local)


def test_metrics_count_each_task_once_by_latest_attempt() -> None:
    from pipelines.dask_runner import DaskMetrics

    def event(task: str, attempt: int, value: int) -> tuple[float, dict[str, Any]]:
        return (
            0.0,
            {
                "task": task,
                "attempt": attempt,
                "step": "S",
                "counters": [("ns", "n", value)],
                "distributions": [],
            },
        )

    metrics = DaskMetrics()
    # Task a: two bundles of attempt 3, then a re-run (attempt 7, same worker or not),
    # then a late event of the stale attempt.  Task b: one attempt.
    for e in [event("a", 3, 1), event("a", 3, 2), event("b", 4, 10), event("a", 7, 5), event("a", 3, 100)]:
        metrics.receive(e)
    (counter,) = metrics.query()["counters"]
    assert counter.committed == 5 + 10
