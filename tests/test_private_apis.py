"""Private Beam APIs tropemix relies on: this fails when the pin moves or they disappear.

- transforms/io/storage.py pre-fills Beam's per-process credential cache
  (``apache_beam.internal.gcp.auth._Credentials``) when a GCS emulator is set, and it
  runs on every import of ``transforms``.
- pipelines/runner.py:untime_runner_flushes sets the in-process runner's private flush
  timer (``worker_handlers.DATA_BUFFER_TIME_LIMIT_MS``) to 0: Beam 2.77's timed flush
  drops data (benchmarks/flush_race.py measures it).

A Beam upgrade must re-check that code, so the pinned version and the private
attributes it writes are asserted here.  (datasketch's private ``_optimal_param`` has
its own pin test in tests/test_minhash.py.)
"""

from __future__ import annotations

import re

import apache_beam

from .conftest import REPO


def _pinned_beam() -> str:
    pins = set(
        re.findall(r"apache-beam(?:\[[a-z,]+\])?==([0-9][0-9A-Za-z.]*)", (REPO / "setup.py").read_text())
    )
    assert len(pins) == 1, f"setup.py pins apache-beam at several versions: {sorted(pins)}"
    return pins.pop()


def test_beam_is_the_pinned_version() -> None:
    # A new Beam may rename the credential cache or fix the flush race: re-check
    # transforms/io/storage.py and benchmarks/flush_race.py, then move the pin.
    assert apache_beam.version.__version__ == _pinned_beam()


def test_beam_credential_cache_has_the_attributes_storage_writes() -> None:
    from apache_beam.internal.gcp import auth

    for name in ("_credentials_lock", "_credentials", "_credentials_init"):
        assert hasattr(auth._Credentials, name), f"apache_beam.internal.gcp.auth._Credentials.{name} is gone"
    with auth._Credentials._credentials_lock:  # a lock, as storage.py uses it
        pass


def test_the_private_flush_timer_the_runner_fix_sets_still_exists() -> None:
    from apache_beam.runners.portability.fn_api_runner import worker_handlers
    from apache_beam.runners.worker import data_plane

    assert isinstance(worker_handlers.DATA_BUFFER_TIME_LIMIT_MS, int)
    assert issubclass(data_plane.TimeBasedBufferingClosableOutputStream, data_plane.ClosableOutputStream)
