"""How tropemix meets a Beam runner: options, local-runner fixes, and errors unwrapped by type.

Every tropemix pipeline takes its options from ``pipeline_options``, so the fixes a
local runner needs are applied in one place.  Two reach into Beam's or glibc's
internals; each says why, and ``tests/test_private_apis.py`` fails when the Beam pin moves.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from collections.abc import Sequence
from typing import Any, NoReturn

from apache_beam.options.pipeline_options import (
    GoogleCloudOptions,
    PipelineOptions,
    StandardOptions,
    TestOptions,
)

from pipelines.checks import check_beam_flags

DEFAULT_RUNNER = "apache_beam.runners.portability.fn_api_runner.FnApiRunner"
# ``--runner=dask``: Beam's DaskRunner with the fixes tropemix needs (pipelines/dask_runner.py).
DASK_RUNNER = "pipelines.dask_runner.TropemixDaskRunner"


def pipeline_options(beam_args: Sequence[str]) -> PipelineOptions:
    """Beam options from the command line, defaulting to the in-process FnApiRunner.

    Every tropemix pipeline takes its options from here, so a local runner is also
    prepared here: capped malloc arenas and no timed runner flushes (both below).

    Raises:
      UsageError: a flag no Beam options class defines (a typo Beam would only warn about).
    """
    check_beam_flags(beam_args)
    options = PipelineOptions(list(beam_args))
    standard = options.view_as(StandardOptions)
    if not standard.runner:
        standard.runner = DEFAULT_RUNNER
    elif standard.runner.lower() == "dask":
        standard.runner = DASK_RUNNER
    if is_local(options):
        limit_malloc_arenas()
        untime_runner_flushes()
    return options


# glibc's mallopt parameter number for the arena cap.
_M_ARENA_MAX = -8


def limit_malloc_arenas(arenas: int = 2) -> None:
    """Caps glibc malloc arenas in this process and in the SDK worker processes it starts.

    glibc gives each new thread its own arena (up to eight per core), and the runner's
    gRPC threads keep the multi-megabyte element buffers they freed mapped in theirs, so
    resident memory grows with the data moved, not with the data held.  Measured on the
    10k benchmark corpus: total peak RSS 2.94 -> 2.50 GB, CPU per document unchanged
    (BENCHMARKS.md).  An explicit ``MALLOC_ARENA_MAX`` in the environment wins.

    Args:
      arenas: the cap when the environment sets none.
    """
    # Worker processes read it from the environment they inherit.
    value = int(os.environ.setdefault("MALLOC_ARENA_MAX", str(arenas)))
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(_M_ARENA_MAX, value)
    except (OSError, AttributeError):
        # Not glibc (macOS, musl): nothing to cap.
        return


def untime_runner_flushes() -> None:
    """Stops the in-process runner's timed flush of bundle inputs, which loses data in Beam 2.77.

    The FnApiRunner streams every bundle input to an SDK worker through a
    ``TimeBasedBufferingClosableOutputStream`` with a 1 s periodic flush
    (``worker_handlers.DATA_BUFFER_TIME_LIMIT_MS``).  The flush reads the buffer, sends it
    and clears it while the runner's thread keeps writing, so chunks written in between
    are dropped: whole ~10 MB runs of records, silently.  At 100k documents it lost up to
    82% of a run (BENCHMARKS.md; ``benchmarks/flush_race.py`` reproduces it with Beam's
    own classes).  A batch runner gains nothing from the timer: each input stream is
    closed, and so sent, as soon as it is written.
    """
    from apache_beam.runners.portability.fn_api_runner import worker_handlers

    worker_handlers.DATA_BUFFER_TIME_LIMIT_MS = 0


def is_local(options: PipelineOptions) -> bool:
    """Whether workers run on this machine (the progress files need a shared disk)."""
    runner = str(options.view_as(StandardOptions).runner or "")
    return runner.endswith(
        ("FnApiRunner", "DirectRunner", "BundleBasedDirectRunner", "SwitchingDirectRunner")
    )


def waits_for_result(options: PipelineOptions) -> bool:
    """False when the runner only builds a job graph or a template instead of running the job."""
    if options.view_as(TestOptions).dry_run:
        return False
    return not options.view_as(GoogleCloudOptions).template_location


class MixOptions(PipelineOptions):
    """The job's own options; they are real pipeline options so templates can expose them."""

    @classmethod
    def _add_argparse_args(cls, parser: Any) -> None:
        parser.add_argument("--config", default=None, help="YAML run config, local or gs://")
        parser.add_argument(
            "--run_id",
            default=None,
            help="name of a scheduled incremental run; letters, digits, '-' and '_'",
        )
        parser.add_argument(
            "--overwrite",
            action="store_true",
            help="replace a non-empty output.path that holds no finished run",
        )
        parser.add_argument(
            "--allow_empty_source",
            action="store_true",
            help="let a source bring no documents (incremental runs); the others share the mix",
        )


def raise_unwrapped(err: BaseException, *errors: type[Exception]) -> None:
    """Re-raises the first of ``errors`` that a runner wrapped in ``err``, with its own message.

    Matched by type, never by message wording.  The in-process runner re-raises a
    DoFn's exception as its own type with `` [while running 'Step']`` appended; the
    portable runners (multi-process workers, Prism, Dataflow) raise a ``RuntimeError``
    that carries the worker's traceback as text, whose exception line reads
    ``package.module.Error: message``.  Returns when ``err`` wraps none of them.

    Args:
      err: what the runner raised.
      errors: the tropemix error types to surface.
    """
    cause: BaseException | None = err
    while cause is not None:
        if isinstance(cause, errors):
            _raise(type(cause), str(cause), err)
        cause = cause.__cause__ or cause.__context__
    text = str(err)
    for error in errors:
        marker = f"{error.__module__}.{error.__qualname__}: "
        if marker in text:
            _raise(error, text[text.index(marker) + len(marker) :], err)


def _raise(error: type[Exception], message: str, err: BaseException) -> NoReturn:
    # Runners append the failing step after the message.
    raise error(message.split(" [while running")[0].strip()) from err
