"""Progress of a local run on the terminal: documents read, current rate, elapsed time.

Workers cannot talk to the driver while an in-process job runs, and with
``--direct_running_mode=multi_processing`` they are separate processes.  So the
driver taps the PCollections a DAG watches per stage (``tap_progress``): a side
branch per PCollection (``TickFn``) leaves its running count in a small file of a
local directory (``ProgressTicker``, at most twice a second), and a driver thread
sums those files per stage (``ProgressPrinter``) and redraws one terminal line at
most a few times a second::

    read 16,095 docs | classify 9,984 | dedup 2,048 | 310 docs/s (classify) | 0:01:05

The rate is that of the furthest stage that moved since the last redraw, so the
line stays informative after reading has finished.  It is only switched on for
local runners writing to a terminal.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import IO, Any

import apache_beam as beam

_FLUSH_SECONDS = 0.5
# Pipeline order: the rate shown is that of the furthest stage that moved.
STAGES = ("read", "classify", "dedup", "blend", "write")


class ProgressTicker:
    """Counts documents in one DoFn instance and publishes the count to ``directory``.

    Args:
      directory: local directory shared with the driver.
      stage: one of ``STAGES``.
    """

    def __init__(self, directory: str, stage: str) -> None:
        self._directory = directory
        self._stage = stage
        self._count = 0
        self._written = 0
        self._last = 0.0
        self._name = ""

    def tick(self, n: int = 1) -> None:
        self._count += n
        now = time.monotonic()
        if now - self._last >= _FLUSH_SECONDS:
            self._last = now
            self.flush()

    def flush(self) -> None:
        """Publishes the current count; a no-op when it has not changed."""
        if self._count == self._written:
            return
        if not self._name:
            # One file per DoFn instance in this process: pid plus a random suffix.
            self._name = f"{self._stage}-{os.getpid()}-{uuid.uuid4().hex}.count"
        path = os.path.join(self._directory, self._name)
        tmp = path + ".tmp"
        # The driver may already have removed the directory at the end of the run.
        with contextlib.suppress(OSError):
            with open(tmp, "w", encoding="ascii") as f:
                f.write(str(self._count))
            os.replace(tmp, path)
            self._written = self._count


class TickFn(beam.DoFn):
    """A side branch that ticks ``stage`` once per element (or by ``weight``) and outputs nothing.

    Stages after the plan (blend, write) have no DoFn of their own worth a ticker; this
    one rides along on their output so the progress line keeps moving to the end.

    Args:
      directory: local directory shared with the driver.
      stage: one of ``STAGES``.
      weight: documents an element stands for, e.g. a written file's rows.
    """

    def __init__(self, directory: str, stage: str, weight: Callable[[Any], int] = lambda _: 1) -> None:
        self._directory = directory
        self._stage = stage
        self._weight = weight
        self._ticker: ProgressTicker | None = None

    def setup(self) -> None:
        self._ticker = ProgressTicker(self._directory, self._stage)

    def process(self, element: Any) -> Iterator[Any]:
        assert self._ticker is not None
        self._ticker.tick(self._weight(element))
        return iter(())

    def finish_bundle(self) -> None:
        if self._ticker:
            self._ticker.flush()


def read_progress(directory: str) -> dict[str, int]:
    """Documents per stage: the sum of the counts the tickers published in ``directory``."""
    totals: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for name in os.listdir(directory):
            if name.endswith(".count"):
                stage = name.split("-", 1)[0]
                with contextlib.suppress(OSError, ValueError), open(os.path.join(directory, name)) as f:
                    totals[stage] = totals.get(stage, 0) + int(f.read() or 0)
    return totals


def format_progress(counts: dict[str, int], rate: float, rate_stage: str, elapsed: float) -> str:
    """``read 12,345 docs | classify 9,000 | 1,234 docs/s (classify) | 0:01:05``."""
    whole = int(elapsed)
    parts = [f"read {counts.get('read', 0):,} docs"]
    parts += [f"{stage} {counts[stage]:,}" for stage in STAGES[1:] if counts.get(stage)]
    parts.append(f"{rate:,.0f} docs/s ({rate_stage})")
    parts.append(f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}")
    return " | ".join(parts)


def _terminal_handlers() -> list[logging.Handler]:
    """Root log handlers that write to a terminal."""
    out = []
    for handler in logging.getLogger().handlers:
        stream = getattr(handler, "stream", None)
        isatty = getattr(stream, "isatty", None)
        if isatty is not None and isatty():
            out.append(handler)
    return out


class ProgressPrinter:
    """Driver thread that redraws the progress line; silent unless ``stream`` is a terminal.

    Use as a context manager around the pipeline run.

    Args:
      directory: the tickers' directory.
      stream: the terminal.
      interval: seconds between redraws (at most a few per second).
      local: whether the workers share this machine's disk; off for remote runners.
    """

    def __init__(self, directory: str, stream: IO[str], interval: float = 0.5, local: bool = True) -> None:
        self._directory = directory
        self._stream = stream
        self._interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.enabled = local and stream.isatty()

    def _loop(self) -> None:
        start = last_time = time.monotonic()
        last: dict[str, int] = {}
        rates = dict.fromkeys(STAGES, 0.0)
        shown = STAGES[0]
        while not self._stop.wait(self._interval):
            now = time.monotonic()
            counts = read_progress(self._directory)
            for stage in STAGES:
                instant = (counts.get(stage, 0) - last.get(stage, 0)) / max(now - last_time, 1e-6)
                # Smoothed over the last few redraws, so one slow file does not make it jump.
                rates[stage] = 0.7 * rates[stage] + 0.3 * instant if rates[stage] else instant
                if counts.get(stage, 0) != last.get(stage, 0):
                    shown = stage
            last, last_time = counts, now
            self._stream.write("\r\x1b[2K" + format_progress(counts, rates[shown], shown, now - start))
            self._stream.flush()

    def filter(self, record: logging.LogRecord) -> bool:
        """Clears the progress line before a log line is written to the same terminal."""
        self._stream.write("\r\x1b[2K")
        self._stream.flush()
        return True

    def __enter__(self) -> ProgressPrinter:
        if self.enabled:
            for handler in _terminal_handlers():
                handler.addFilter(self)
            self._thread = threading.Thread(target=self._loop, name="tropemix-progress", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            for handler in _terminal_handlers():
                handler.removeFilter(self)
            self._stream.write("\r\x1b[2K")
            self._stream.flush()


def tap_progress(watched: Mapping[str, Sequence[beam.PCollection]], directory: str) -> None:
    """Ticks the driver's progress line from the PCollections a DAG watches, by stage.

    The driver inserts these taps only for a local run on a terminal, so the stages
    themselves know nothing of progress.  A written shard stands for its rows.

    Args:
      watched: stage -> the PCollections whose elements count for it.
      directory: local directory shared with the driver's ``ProgressPrinter``.
    """
    for stage, pcolls in watched.items():
        weight = _shard_rows if stage == "write" else _one
        for i, pcoll in enumerate(pcolls):
            _ = pcoll | f"Progress[{stage}][{i}]" >> beam.ParDo(TickFn(directory, stage, weight))


def _one(_: Any) -> int:
    return 1


def _shard_rows(stats: Mapping[str, Any]) -> int:
    return int(stats["rows"])
