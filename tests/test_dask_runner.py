"""The fixed DaskRunner on a real Dask cluster (scheduler and two workers on 127.0.0.1).

Each fix in ``pipelines/dask_runner.py`` has a test run on both runners: the stock
``DaskRunner`` must fail it (strict xfail), the fixed one must pass.  Then the whole
tropemix DAG runs on the cluster and must write the same bytes as the in-process runner.
"""

from __future__ import annotations

import json
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

from .conftest import DaskCluster

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
    from pipelines.report import collect_metrics

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
