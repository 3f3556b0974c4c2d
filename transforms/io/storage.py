"""Cloud Storage set-up: anonymous credentials for the GCS emulator, and only for it.

Beam's GCS filesystem asks ``google.auth.default()`` for credentials once per
process, with retries; on a machine without credentials or a metadata server that
costs about 24 s before it falls back to an anonymous client.  Against an emulator
(``STORAGE_EMULATOR_HOST`` set, as ``google-cloud-storage`` defines it) there is
nothing to authenticate, so ``use_emulator_credentials`` records "no credentials"
in Beam's per-process credential cache.  Beam's ``create_storage_client`` then
builds ``storage.Client.create_anonymous_client()``, which ``google-cloud-storage``
points at the emulator.  Without ``STORAGE_EMULATOR_HOST`` nothing changes, so real
``gs://`` runs authenticate as usual.
"""

from __future__ import annotations

import os

EMULATOR_ENV = "STORAGE_EMULATOR_HOST"


def use_emulator_credentials() -> bool:
    """Makes Beam's GCS client anonymous in this process when ``STORAGE_EMULATOR_HOST`` is set.

    Idempotent and cheap; returns whether the emulator set-up applies.
    """
    if not os.environ.get(EMULATOR_ENV):
        return False
    try:
        from apache_beam.internal.gcp import auth
    except ImportError:  # Beam without the gcp extra has no GCS filesystem to configure.
        return False
    # Beam caches the credential lookup per process; pre-filling the cache with
    # "none found" is exactly the state its own lookup ends in, minus the wait.
    # Private API: tests/test_private_apis.py fails when the Beam pin moves or these attributes go.
    with auth._Credentials._credentials_lock:
        auth._Credentials._credentials = None
        auth._Credentials._credentials_init = True
    return True


def reset_credentials() -> None:
    """Forgets the cached credential lookup, so the next GCS client looks again."""
    from apache_beam.internal.gcp import auth

    with auth._Credentials._credentials_lock:
        auth._Credentials._credentials = None
        auth._Credentials._credentials_init = False
