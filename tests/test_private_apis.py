"""Private Beam APIs tropemix relies on: this fails when the pin moves or they disappear.

transforms/io/storage.py pre-fills Beam's per-process credential cache
(``apache_beam.internal.gcp.auth._Credentials``) when a GCS emulator is set, and it
runs on every import of ``transforms``.  A Beam upgrade must re-check that code, so
the pinned version and the private attributes it writes are asserted here.
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
    # A new Beam may rename the credential cache: re-check transforms/io/storage.py, then move the pin.
    assert apache_beam.version.__version__ == _pinned_beam()


def test_beam_credential_cache_has_the_attributes_storage_writes() -> None:
    from apache_beam.internal.gcp import auth

    for name in ("_credentials_lock", "_credentials", "_credentials_init"):
        assert hasattr(auth._Credentials, name), f"apache_beam.internal.gcp.auth._Credentials.{name} is gone"
    with auth._Credentials._credentials_lock:  # a lock, as storage.py uses it
        pass
