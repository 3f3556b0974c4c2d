"""The runner fixes that reach into Beam's internals fail here first when the Beam pin moves."""

from __future__ import annotations

import re
from pathlib import Path

import apache_beam
from apache_beam.runners.portability.fn_api_runner import worker_handlers
from apache_beam.runners.worker import data_plane

SETUP = Path(__file__).resolve().parents[1] / "setup.py"


def test_beam_is_the_version_the_runner_fixes_were_measured_on() -> None:
    # pipelines/runner.py:untime_runner_flushes works around a data-plane race measured on
    # this version (benchmarks/flush_race.py); on another one, measure it again and move the pin.
    (pinned,) = set(re.findall(r'"apache-beam(?:\[\w+\])?==([\d.]+)"', SETUP.read_text()))
    assert apache_beam.version.__version__ == pinned


def test_the_private_flush_timer_the_runner_fix_sets_still_exists() -> None:
    assert isinstance(worker_handlers.DATA_BUFFER_TIME_LIMIT_MS, int)
    assert issubclass(data_plane.TimeBasedBufferingClosableOutputStream, data_plane.ClosableOutputStream)
