"""Beam's DaskRunner with the fixes tropemix needs to run on a Dask distributed cluster.

Beam 2.77's ``apache_beam.runners.dask.dask_runner.DaskRunner`` translates a pipeline
into ``dask.bag`` operations.  As shipped it loses data silently on ordinary
pipelines; ``TropemixDaskRunner`` keeps its translation and fixes, one named piece
each (written up for apache/beam in ``deploy/dask/UPSTREAM.md``):

1. ``tags_apart``: a multi-output ParDo's consumers each get their own tag's elements
   (stock: every consumer of any tag gets every tag's elements).
2. ``every_sink``: every unconsumed PCollection is computed (stock: only the last
   transform visited, so other sinks never run and the job still succeeds).
3. ``finish_bundle_kept``: elements a DoFn emits in ``finish_bundle`` are kept
   (stock: the outputs are read before ``finish_bundle`` runs).
4. ``side_inputs_as_dependencies``: a side input is computed once, as a task the
   consuming tasks depend on (stock: each consuming task recomputes it).
5. ``reshuffle_as_repartition``: ``Reshuffle`` spreads elements over partitions
   (stock: ignored, so everything read from one ``Create`` stays in one task).
6. ``capped_groups``: a ``GroupByKey`` merges its input down to at most
   ``--dask_npartitions`` partitions first (stock: a chain of ``CoGroupByKey``
   doubles the partition count at every Flatten).
7. ``metrics_through_events``: user counters and distributions reach
   ``PipelineResult.metrics()`` through Dask's event log, one attempt per task
   (stock: ``metrics()`` raises ``NotImplementedError``).
8. ``read_bounded_sources``: ``beam.io.Read`` of a bounded source reads its splits
   (stock: translated to nothing, so its consumers fail).
9. ``equal_keys_group_together``: GroupByKey partitions keys by a hash of their value
   (stock: Dask's ``tokenize``, under which ``numpy.int64(3)`` and ``3`` differ, so
   one key's values can end up in two groups).
10. ``trim_memory``: every worker returns the heap pages glibc and Arrow's allocator
   keep after a partition is freed (``TrimMemory``; stock: RSS stays at its high-water
   mark, which Dask counts as unmanaged memory and pauses the worker on).
11. ``p2p_groups``: a GroupByKey is one P2P shuffle (``pipelines/dask_shuffle.py``),
   about 2n + 1 tasks for n partitions (stock: ``dask.bag``'s task shuffle, ~39 a
   partition; 1.24 million tasks and a 5.4 GB scheduler for the 1M-document graph).
12. ``depth_first``: a task's priority is its depth in the graph, so a worker runs
   what consumes data in hand before it reads more (``depth_priorities``; stock:
   ``dask.order`` left the ledger's step over five doc-sized collections for later,
   and 1M documents spilled 28 GB in 18 minutes, 2 GB a minute).

Select it with ``--runner=dask`` (``pipelines.runner.pipeline_options``) and
``--dask_client_address=HOST:PORT``.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import itertools
import json
import numbers
import os
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import apache_beam as beam
import dask
import dask.bag as db
import pyarrow as pa
from apache_beam import pvalue
from apache_beam.metrics.cells import DistributionData, DistributionResult
from apache_beam.metrics.execution import MetricKey, MetricResult, MetricsContainer
from apache_beam.metrics.metric import MetricResults, MetricsFilter
from apache_beam.metrics.metricbase import MetricName
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.pipeline import AppliedPTransform, Pipeline, PipelineVisitor
from apache_beam.runners.common import DoFnContext, DoFnInvoker, DoFnSignature, Receiver, _OutputHandler
from apache_beam.runners.dask import overrides
from apache_beam.runners.dask.dask_runner import DaskOptions, DaskRunner, DaskRunnerResult
from apache_beam.runners.dask.transform_evaluator import get_windowed_value
from apache_beam.runners.worker import statesampler
from apache_beam.transforms.sideinputs import SideInputMap
from apache_beam.transforms.window import GlobalWindows
from apache_beam.utils import counters
from apache_beam.utils.windowed_value import WindowedValue
from dask.core import get_deps
from dask.highlevelgraph import HighLevelGraph
from distributed.diagnostics.plugin import WorkerPlugin

from pipelines.dask_shuffle import optimized, p2p_group

# Partitions of a GroupByKey or Reshuffle when --dask_npartitions is not given.  Each
# GroupByKey costs about 2n + 1 tasks (fix 11), so n bounds the graph; raise it with N.
DEFAULT_PARTITIONS = 16
# Metrics a tropemix report has on the in-process runner that this runner cannot give.
MISSING_METRICS = ("ptransform_execution_time (report timing.stages.*.busy_seconds)",)
# Least seconds between two heap trims of a worker (``TrimMemory``); the environment
# variable overrides it in the submitting process, 0 turns trimming off (to measure it).
TRIM_ENV = "TROPEMIX_DASK_TRIM_SECONDS"
TRIM_SECONDS = 1.0
# Where the driver writes the graph's layer -> Beam label map when set (memory profiles).
LAYERS_ENV = "TROPEMIX_DASK_LAYERS"


class _ListReceiver(Receiver):
    """Collects one output tag's values; with ``tagged``, as ``(tag, value)`` pairs (fix 1)."""

    def __init__(self, tag: str | None, out: list[Any], tagged: bool) -> None:
        self._tag, self._out, self._tagged = tag, out, tagged

    def receive(self, windowed_value: WindowedValue) -> None:
        self._out.append((self._tag, windowed_value.value) if self._tagged else windowed_value.value)


class _Receivers(dict[str | None, _ListReceiver]):
    """Tag -> receiver, made on first use, as ``_OutputHandler`` expects of its tagged receivers."""

    def __init__(self, out: list[Any], tagged: bool) -> None:
        super().__init__()
        self._out, self._tagged = out, tagged

    def __missing__(self, tag: str | None) -> _ListReceiver:
        receiver = self[tag] = _ListReceiver(tag, self._out, self._tagged)
        return receiver


def _encode_updates(container: MetricsContainer) -> dict[str, list[Any]]:
    """A container's counters and distributions as msgpack-able lists."""
    updates = container.get_cumulative()
    return {
        "counters": [[k.metric.namespace, k.metric.name, v] for k, v in updates.counters.items()],
        "distributions": [
            [k.metric.namespace, k.metric.name, d.sum, d.count, d.min, d.max]
            for k, d in updates.distributions.items()
        ],
    }


def _publish_metrics(topic: str, step: str, container: MetricsContainer) -> None:
    """Sends a bundle's metrics to the driver as a Dask event, tagged with the task and worker (fix 7)."""
    from distributed import get_worker

    encoded = _encode_updates(container)
    if not (encoded["counters"] or encoded["distributions"]):
        return
    try:
        worker = get_worker()
    except ValueError:  # not on a distributed worker (a local dask scheduler): nowhere to send
        return
    key = worker.get_current_task()
    # The scheduler numbers every execution of a task: a re-run (its worker died, or its
    # result was lost) has a higher run_id, also when it runs on the same worker again.
    state = worker.state.tasks.get(key)
    attempt = state.run_id if state is not None else -1
    worker.log_event(topic, {"task": str(key), "attempt": attempt, "step": step, **encoded})


@dataclasses.dataclass(frozen=True)
class ParDoSpec:
    """What a partition of a ParDo needs to run its DoFn.

    Args:
      fn: the DoFn.
      label: the transform's full label, the metrics step.
      window_fn: the main input's window function.
      args: the ParDo's extra positional arguments, side inputs replaced by placeholders.
      kwargs: the ParDo's extra keyword arguments, likewise.
      side_views: ``(view class, view options)`` per side input.
      tagged: emit ``(tag, value)`` pairs; the ParDo has several outputs (fix 1).
      topic: the Dask event topic of this run's metrics (fix 7).
    """

    fn: beam.DoFn
    label: str
    window_fn: Any
    args: Sequence[Any]
    kwargs: Mapping[str, Any]
    side_views: Sequence[tuple[Any, Any]]
    tagged: bool
    topic: str


def run_bundle(items: Iterable[Any], spec: ParDoSpec, *side_values: list[Any]) -> list[Any]:
    """Runs a DoFn over one partition and returns everything it emitted.

    Args:
      items: the partition's elements (plain values).
      spec: the ParDo.
      side_values: every element of each side input, computed once upstream (fix 4).
    """
    window_fn, label = spec.window_fn, spec.label
    out: list[Any] = []
    receivers = _Receivers(out, spec.tagged)
    handler = _OutputHandler(
        window_fn=window_fn,
        main_receivers=receivers[None],
        tagged_receivers=receivers,
        per_element_output_counter=None,
        output_batch_converter=None,
        process_yields_batches=False,
        process_batch_yields_elements=False,
    )
    side_inputs = [
        SideInputMap(view, options, [get_windowed_value(v, window_fn) for v in values])
        for (view, options), values in zip(spec.side_views, side_values, strict=True)
    ]
    invoker = DoFnInvoker.create_invoker(
        DoFnSignature(spec.fn),
        handler,
        context=DoFnContext(label, state=None),
        side_inputs=side_inputs,
        input_args=list(spec.args),
        input_kwargs=dict(spec.kwargs),
        user_state_context=None,
        bundle_finalizer_param=beam.DoFn.BundleFinalizerParam(),
    )
    # Beam's Metrics API finds its container through the thread's state sampler.
    previous = statesampler.get_current_tracker()
    sampler = statesampler.StateSampler("", counters.CounterFactory())
    statesampler.set_current_tracker(sampler)
    container = MetricsContainer(label)
    try:
        with sampler.scoped_state(label, "process", metrics_container=container):
            invoker.invoke_setup()
            invoker.invoke_start_bundle()
            for item in items:
                invoker.invoke_process(get_windowed_value(item, window_fn))
            # Fix 3: what finish_bundle emits lands in ``out`` before it is returned.
            invoker.invoke_finish_bundle()
            invoker.invoke_teardown()
    finally:
        statesampler.set_current_tracker(previous)
    _publish_metrics(spec.topic, label, container)
    return out


def _concat(parts: list[Iterable[Any]]) -> list[Any]:
    return list(itertools.chain.from_iterable(parts))


def pardo_bag(bag: db.Bag, spec: ParDoSpec, sides: Sequence[db.Bag]) -> db.Bag:
    """``run_bundle`` over each partition of ``bag``, with each side input as one task it depends on (fix 4).

    The graph is written out by hand: ``Bag.map_partitions`` takes a whole-bag value
    only as a ``dask.bag.Item``, and unpacking one optimizes its entire upstream graph
    again for every ParDo (most of the graph's build time on the tropemix DAG).

    Args:
      bag: the main input.
      spec: the ParDo.
      sides: the side inputs' bags, in the order of ``spec.side_views``.
    """
    name = f"pardo-{uuid.uuid4().hex}"
    dsk: dict[Any, Any] = {}
    side_keys = []
    for j, side in enumerate(sides):
        key = f"{name}-side-{j}"
        dsk[key] = (_concat, [(side.name, i) for i in range(side.npartitions)])
        side_keys.append(key)
    for i in range(bag.npartitions):
        dsk[(name, i)] = (run_bundle, (bag.name, i), spec, *side_keys)
    deps: list[Any] = [bag, *sides]  # Bag does not match dask's DaskCollection protocol for mypy
    return db.Bag(HighLevelGraph.from_collections(name, dsk, dependencies=deps), name, bag.npartitions)


def _select(pair: tuple[Any, Any], tag: Any) -> bool:
    return pair[0] == tag


def _value(pair: tuple[Any, Any]) -> Any:
    return pair[1]


def _canonical(value: Any) -> Any:
    """``value`` with numbers as ``int``/``float`` and sequences as tuples, so equal keys look equal."""
    if isinstance(value, (tuple, list)):
        return tuple(_canonical(v) for v in value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        f = float(value)
        return int(f) if f.is_integer() else f
    return value


def stable_key_hash(key: Any) -> int:
    """A hash of a grouping key that is the same in every process and for every equal key.

    Dask's task shuffle hashes with ``tokenize``, which tells apart keys Python finds
    equal (``numpy.int64(3)`` and ``3``, a NamedTuple and its plain tuple), so one
    key's values could land in two groups; ``hash`` itself differs between processes
    for strings.  ``repr`` of the canonical form has neither problem for the keys
    pipelines use (numbers, strings, bytes, tuples of them).

    Args:
      key: a GroupByKey key.
    """
    digest = hashlib.blake2b(repr(_canonical(key)).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def _group_values(group: tuple[Any, list[Any]]) -> tuple[Any, list[Any]]:
    key, values = group
    # Values arrive as ReifyWindows left them; GroupAlsoByWindow is a no-op here (global window).
    return key, [v.value if isinstance(v, WindowedValue) else v for v in values]


def _window_fn(pcoll: Any) -> Any:
    try:
        return pcoll.windowing.windowfn
    except AttributeError:  # the stock _Read replacement asks its PBegin input for a windowing
        return GlobalWindows()


def depth_priorities(graph: Mapping[Any, Any]) -> dict[Any, int]:
    """Each task's longest chain of dependencies, as its scheduling priority (fix 12).

    Dask runs the ready task of highest priority first.  Ranked by depth, a worker
    finishes what consumes the partitions it holds (the ledger's step over a Flatten of
    every stage, counts, a shuffle's transfer) before it reads a new partition, so a
    collection is released once its last consumer ran instead of waiting, spilled,
    for whatever ``dask.order`` put last.

    Args:
      graph: the optimized task graph, key -> task.
    """
    dependencies, dependents = get_deps(graph)
    left = {key: len(deps) for key, deps in dependencies.items()}
    depth = dict.fromkeys(graph, 0)
    ready = [key for key, n in left.items() if n == 0]
    while ready:
        key = ready.pop()
        for child in dependents[key]:
            depth[child] = max(depth[child], depth[key] + 1)
            left[child] -= 1
            if left[child] == 0:
                ready.append(child)
    return depth


def _read_splits(splits: Iterable[Any]) -> list[Any]:
    """Every record of some splits of a bounded source (fix 8)."""
    out: list[Any] = []
    for split in splits:
        tracker = split.source.get_range_tracker(split.start_position, split.stop_position)
        out.extend(split.source.read(tracker))
    return out


class _BagBuilder(PipelineVisitor):
    """Translates each leaf transform into a ``dask.bag``, one bag per PCollection (fix 1).

    Args:
      bag_kwargs: ``npartitions`` / ``partition_size`` for ``Create``.
      partitions: the partition cap of GroupByKey and the spread of Reshuffle.
      topic: the Dask event topic of this run's metrics.
    """

    def __init__(self, bag_kwargs: dict[str, Any], partitions: int, topic: str) -> None:
        super().__init__()
        self._bag_kwargs, self._partitions, self._topic = bag_kwargs, partitions, topic
        self.bags: dict[pvalue.PValue, db.Bag] = {}
        self._consumed: set[pvalue.PValue] = set()
        # Graph layer name -> the Beam label of the transform that made it, for profiles
        # (``benchmarks/memprofile.py``): task keys carry layer names, not labels.
        self.layer_labels: dict[str, str] = {}

    def _label_layers(self, label: str, bags: Iterable[db.Bag]) -> None:
        for bag in bags:
            graph: Any = bag.__dask_graph__()  # a HighLevelGraph
            for name in graph.layers:
                self.layer_labels.setdefault(name, label)

    def _input(self, pcoll: pvalue.PCollection) -> db.Bag:
        self._consumed.add(pcoll)
        return self.bags[pcoll]

    def sinks(self) -> Any:
        """One task that depends on every PCollection nothing consumes (fix 2): their total length.

        Counting forces each partition while shipping only a number to the driver.  One
        collection, not one per sink: ``dask.optimize`` of several fuses each on its own,
        so work upstream of two sinks would run twice.
        """
        return db.concat([bag for pcoll, bag in self.bags.items() if pcoll not in self._consumed]).count()

    def visit_transform(self, node: AppliedPTransform) -> None:
        inputs = [self._input(p) for p in node.inputs if isinstance(p, pvalue.PCollection)]
        transform: Any = node.transform
        kind = type(transform)
        if kind is beam.ParDo:
            self._pardo(node, inputs[0])
            self._label_layers(node.full_label, [self.bags[p] for p in node.outputs.values()])
            return
        if kind is overrides._Create:
            from apache_beam.runners.dask.transform_evaluator import Create

            bag = Create(node, bag_kwargs=self._bag_kwargs).apply(None)
        elif kind is overrides._Flatten:
            bag = db.concat(inputs)
        elif kind is overrides._GroupByKeyOnly:
            bag = self._group(inputs[0])
        elif kind is overrides._Reshuffle:
            # Fix 5: split partitions (a Create's single one, typically) into the target count.
            bag = inputs[0].repartition(npartitions=max(inputs[0].npartitions, self._partitions))
        elif kind is overrides._Read:
            # Fix 8: one partition per split of the source.
            splits = list(transform.source.split(desired_bundle_size=64 << 20))
            bag = db.from_sequence(splits, npartitions=max(1, len(splits))).map_partitions(_read_splits)
        elif len(inputs) == 1:
            # GroupAlsoByWindow and other pass-throughs of the stock translation.
            bag = inputs[0]
        else:
            raise NotImplementedError(f"{node.full_label}: {kind.__name__} has no Dask translation")
        for pcoll in node.outputs.values():
            self.bags[pcoll] = bag
        self._label_layers(node.full_label, [bag])

    def _group(self, bag: db.Bag) -> db.Bag:
        """GroupByKey on at most ``partitions`` partitions (fix 6), keys hashed by ``stable_key_hash``
        (fix 9), as one P2P shuffle (fix 11)."""
        if bag.npartitions > self._partitions:
            bag = bag.repartition(npartitions=self._partitions)
        return p2p_group(bag, stable_key_hash).map(_group_values)

    def _pardo(self, node: AppliedPTransform, bag: db.Bag) -> None:
        transform: Any = node.transform
        main: Any = next(iter(node.main_inputs.values()))
        views = [(type(si), si._view_options()) for si in node.side_inputs]
        sides = [self._input(si.pvalue) for si in node.side_inputs]
        tagged = len(node.outputs) > 1
        spec = ParDoSpec(
            transform.fn,
            node.full_label,
            _window_fn(main),
            transform.args,
            transform.kwargs,
            views,
            tagged,
            self._topic,
        )
        out = pardo_bag(bag, spec, sides)
        for tag, pcoll in node.outputs.items():
            # Fix 1: each output PCollection is its own tag's elements of the shared bag.
            self.bags[pcoll] = out.filter(functools.partial(_select, tag=tag)).map(_value) if tagged else out


class TrimMemory(WorkerPlugin):
    """A Dask worker plugin: ``trim_heaps`` at most every ``every`` seconds (fix 10).

    It trims after tasks end and on a timer of the same period.

    A task's partition is many small Python objects; once Dask releases it, glibc keeps
    the freed pages inside its heap (``MALLOC_TRIM_THRESHOLD_`` only returns the heap's
    top), the worker's RSS stays at its high-water mark and Dask counts the difference
    as unmanaged memory, pausing the worker at 80% of its limit with little data held.
    Trimming returns those pages (glibc's where libc has ``malloc_trim``; Arrow's always).

    Args:
      every: least seconds between two trims.
    """

    name = "tropemix-trim-memory"

    def __init__(self, every: float = TRIM_SECONDS) -> None:
        super().__init__()
        self.every = every
        self._last = 0.0
        self._trim: Any = None

    def setup(self, worker: Any) -> None:
        import ctypes
        import ctypes.util

        from tornado.ioloop import PeriodicCallback

        try:
            self._trim = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
        except (OSError, AttributeError):
            self._trim = None
        # Also on a timer: a worker paused on unmanaged memory runs no task, so no
        # transition would ever trim it.  Measured at 300k documents (BENCHMARKS.md, Dask):
        # both workers sat paused at 1.7-1.8 GB RSS with 0.25 GB of it live, for good.
        self.teardown(worker)  # a run re-registers the plugin: one timer per worker
        callback = PeriodicCallback(self._maybe_trim, self.every * 1000)
        worker.periodic_callbacks[self.name] = callback
        callback.start()

    def teardown(self, worker: Any) -> None:
        callback = worker.periodic_callbacks.pop(self.name, None)
        if callback is not None:
            callback.stop()

    def transition(self, key: Any, start: str, finish: str, **kwargs: Any) -> None:
        # A task ended (its inputs may now be released) or a result was let go.
        if finish in ("memory", "error", "released", "forgotten"):
            self._maybe_trim()

    def _maybe_trim(self) -> None:
        now = time.monotonic()
        if now - self._last >= self.every:
            self._last = now
            trim_heaps(self._trim)


def trim_heaps(malloc_trim: Any) -> None:
    """Returns the freed pages of Arrow's allocator, then of glibc's heap, to the OS.

    Arrow's default pool (mimalloc in the pyarrow wheels) keeps the pages of every freed
    buffer, such as the P2P shuffles' frames (fix 11), until ``release_unused``:
    measured at 1M documents, 860 MB of a worker's 2,240 MB RSS with nothing allocated,
    which held it paused at 80% of its limit for good.

    Args:
      malloc_trim: libc's ``malloc_trim``, or None where libc has none.
    """
    pa.default_memory_pool().release_unused()
    if malloc_trim is not None:
        malloc_trim(0)


class DaskMetrics(MetricResults):
    """User metrics of a Dask run, from the events its tasks logged (fix 7).

    A task Dask re-runs (its worker died, or its result was lost) logs again, possibly
    on the same worker; only the events of each task's latest attempt (the scheduler's
    ``run_id``) count, so a value is counted once, like a committed metric.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_task: dict[str, tuple[int, list[dict[str, Any]]]] = {}

    def receive(self, event: tuple[float, dict[str, Any]]) -> None:
        """Dask's topic handler: keeps the events of each task's latest attempt.

        Args:
          event: ``(timestamp, message)`` as ``Client.subscribe_topic`` delivers it.
        """
        msg = event[1]
        with self._lock:
            kept = self._by_task.get(msg["task"])
            if kept is not None and msg["attempt"] < kept[0]:
                return  # a stale attempt's event arriving late
            if kept is None or msg["attempt"] > kept[0]:
                kept = self._by_task[msg["task"]] = (msg["attempt"], [])
            kept[1].append(msg)

    def query(self, filter: MetricsFilter | None = None) -> dict[str, list[MetricResult]]:
        counters: dict[MetricKey, int] = {}
        dists: dict[MetricKey, DistributionData] = {}
        with self._lock:
            messages = [m for _, msgs in self._by_task.values() for m in msgs]
        for m in messages:
            for ns, name, value in m["counters"]:
                key = MetricKey(m["step"], MetricName(ns, name))
                counters[key] = counters.get(key, 0) + value
            for ns, name, total, count, low, high in m["distributions"]:
                key = MetricKey(m["step"], MetricName(ns, name))
                data = DistributionData(total, count, low, high)
                dists[key] = dists[key].combine(data) if key in dists else data
        return {
            self.COUNTERS: [MetricResult(k, v, v) for k, v in counters.items() if self.matches(filter, k)],
            self.DISTRIBUTIONS: [
                MetricResult(k, DistributionResult(d), DistributionResult(d))
                for k, d in dists.items()
                if self.matches(filter, k)
            ],
            self.GAUGES: [],
            self.STRINGSETS: [],
            self.BOUNDED_TRIES: [],
        }


class TropemixDaskResult(DaskRunnerResult):
    """The stock result, with metrics, and the client closed once the job is done.

    Args:
      client: the Dask client.
      futures: one future per sink.
      topic: the event topic the run's metrics arrive on.
      collected: where they are gathered.
    """

    missing_metrics = MISSING_METRICS

    def __init__(self, client: Any, futures: Sequence[Any], topic: str, collected: DaskMetrics) -> None:
        super().__init__(client, futures)
        self._topic, self._collected = topic, collected

    def wait_until_finish(self, duration: float | None = None) -> str:
        try:
            state: str = super().wait_until_finish(duration)
        finally:
            if self.state in (
                beam.runners.runner.PipelineState.DONE,
                beam.runners.runner.PipelineState.FAILED,
            ):
                self.client.unsubscribe_topic(self._topic)
                self.client.close()
        return state

    def metrics(self) -> DaskMetrics:
        return self._collected


class TropemixDaskRunner(DaskRunner):
    """Beam's DaskRunner with the fixes listed in this module's docstring."""

    def run_pipeline(self, pipeline: Pipeline, options: PipelineOptions) -> TropemixDaskResult:
        import dask.distributed as ddist

        dask_options = options.view_as(DaskOptions).get_all_options(drop_default=True, current_only=True)
        bag_kwargs = DaskOptions._extract_bag_kwargs(dask_options)
        partitions = bag_kwargs.get("npartitions") or DEFAULT_PARTITIONS
        client = ddist.Client(**dask_options)
        topic = f"tropemix-metrics-{uuid.uuid4().hex}"
        collected = DaskMetrics()
        # Subscribed before the graph is sent, so no task's event can precede it.
        client.subscribe_topic(topic, collected.receive)
        # Fix 10: workers give freed heap pages back to the OS (and to their memory limit).
        trim_every = float(os.environ.get(TRIM_ENV, TRIM_SECONDS))
        if trim_every > 0:
            client.register_plugin(TrimMemory(trim_every), name=TrimMemory.name)
        pipeline.replace_all(overrides.dask_overrides())
        builder = _BagBuilder(bag_kwargs, partitions, topic)
        pipeline.visit(builder)
        # Fix 11: optimized here, so the P2P barriers survive the bag optimizer.
        item = optimized(builder.sinks())
        # Fix 12: the scheduler calls the annotation with each task's key; builtins
        # only, so it needs no tropemix code to unpickle it.  Keys ``compute`` adds
        # (its finalize task, on top of the sinks) rank above the whole graph.
        depths = depth_priorities(item.__dask_graph__())
        depth = defaultdict(functools.partial(int, max(depths.values(), default=0) + 1), depths)
        with dask.annotate(priority=depth.__getitem__):
            futures = [client.compute(item, optimize_graph=False)]
        layers_path = os.environ.get(LAYERS_ENV)
        if layers_path:
            with open(layers_path, "w", encoding="utf-8") as f:
                json.dump(builder.layer_labels, f, indent=0, sort_keys=True)
        return TropemixDaskResult(client, futures, topic, collected)
