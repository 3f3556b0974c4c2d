"""Up-front checks of what a command is given: Beam flags, input globs, model paths.

Each check fails with one line that names the flag or field and the fix, before any
pipeline is built, so a typo never surfaces as a runner traceback or a silent warning.
Listing a remote path (``gs://``) runs under a short timeout: without network or
credentials the Cloud Storage client retries for minutes.
"""

from __future__ import annotations

import contextlib
import difflib
import os
import threading
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions, _BeamArgumentParser

# Seconds a remote listing may take before a check gives up with a message.
REMOTE_TIMEOUT = 20.0
T = TypeVar("T")


class UsageError(ValueError):
    """A command-line argument that cannot work; the message names it and the fix."""


def _options_parser() -> _BeamArgumentParser:
    # The parser Beam's own ``get_all_options`` builds: every registered options class.
    # An options class registers when its module is imported; the Dask runner's
    # (``--dask_client_address``, ``--dask_npartitions``) needs the optional dask extra.
    with contextlib.suppress(ImportError):
        import apache_beam.runners.dask.dask_runner  # noqa: F401
    parser = _BeamArgumentParser(allow_abbrev=False)
    for cls in {str(c): c for c in PipelineOptions.__subclasses__()}.values():
        cls._add_argparse_args(parser)
    return parser


def unknown_beam_flags(args: Sequence[str]) -> list[str]:
    """The ``--flags`` in ``args`` that no registered ``PipelineOptions`` class defines.

    Args:
      args: Beam pipeline arguments.
    """
    _, unknown = _options_parser().parse_known_args(list(args))
    return [a for a in unknown if a.startswith("-")]


def check_beam_flags(args: Sequence[str]) -> None:
    """Rejects Beam arguments no options class knows, suggesting the closest known flag.

    Args:
      args: Beam pipeline arguments.

    Raises:
      UsageError: naming each unknown flag.
    """
    unknown = unknown_beam_flags(args)
    if not unknown:
        return
    known = [opt for action in _options_parser()._actions for opt in action.option_strings]
    hints = []
    for flag in unknown:
        close = difflib.get_close_matches(flag.split("=", 1)[0], known, n=1)
        hints.append(f"{flag} (did you mean {close[0]}?)" if close else flag)
    raise UsageError(f"unknown Beam option {', '.join(hints)}; fix the spelling (Beam options go after `--`)")


def with_timeout(fn: Callable[[], T], seconds: float, what: str) -> T:
    """Runs ``fn`` in a daemon thread and gives up after ``seconds``.

    Args:
      fn: the call, e.g. a remote listing.
      seconds: how long to wait.
      what: what is being done, for the message.

    Raises:
      UsageError: ``fn`` did not return in time.
    """
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except Exception as err:  # re-raised in the caller's thread
            box["error"] = err

    # A daemon thread: a listing stuck in retries must not keep the process alive.
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise UsageError(
            f"{what}: no answer within {seconds:g} s; check the network and credentials "
            "(e.g. `gcloud auth application-default login`)"
        )
    if "error" in box:
        raise box["error"]
    value: T = box["value"]
    return value


def match_files(pattern: str, what: str, timeout: float = REMOTE_TIMEOUT) -> list[str]:
    """Files matching ``pattern``; fails when it matches nothing or matches a directory.

    Args:
      pattern: a local or remote glob.
      what: the flag or config field, for the message.
      timeout: seconds a remote listing may take.

    Raises:
      UsageError: no match, a directory, an unreachable store, or a listing error.
    """

    def listing() -> list[str]:
        return [m.path for m in FileSystems.match([pattern])[0].metadata_list]

    try:
        paths = (
            with_timeout(listing, timeout, f"{what}: listing {pattern!r}") if "://" in pattern else listing()
        )
    except UsageError:
        raise
    except Exception as err:  # FileSystems raises BeamIOError or a scheme-specific error
        raise UsageError(f"{what}: cannot list {pattern!r}: {str(err).splitlines()[0]}") from None
    if not paths:
        raise UsageError(f"{what}: {pattern!r} matches no file; fix the path or glob")
    dirs = [p for p in paths if "://" not in p and os.path.isdir(p)]
    if dirs:
        raise UsageError(
            f"{what}: {pattern!r} matches the directory {dirs[0]!r}; name its files, e.g. '{dirs[0].rstrip('/')}/*.jsonl'"
        )
    return paths


def check_exists(path: str, what: str, fix: str, timeout: float = REMOTE_TIMEOUT) -> None:
    """Fails unless ``path`` is an existing file.

    Args:
      path: local or remote path.
      what: the flag or config field.
      fix: what to do instead, for the message.
      timeout: seconds a remote check may take.
    """

    def exists() -> bool:
        return bool(FileSystems.exists(path))

    found = with_timeout(exists, timeout, f"{what}: checking {path!r}") if "://" in path else exists()
    if not found or ("://" not in path and os.path.isdir(path)):
        raise UsageError(f"{what}: {path!r} is not a file; {fix}")
