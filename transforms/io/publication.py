"""Atomic publication of a run directory: stage, mark complete, then rename into place.

A run writes everything into a hidden staging sibling of ``output.path``
(``<parent>/.<name>.staging``).  Only when every file, the report included, is
written does ``publish`` write the completion marker ``_COMPLETE`` (the manifest's
sha256 and the list of files) into the staging directory and move it to
``output.path``.  A directory holding ``_COMPLETE`` whose digest matches its
``manifest.json`` is a finished run; anything else is not, and nothing in tropemix
(``dedup.previous_index`` included) accepts it.

Locally the move is one directory rename, so a kill leaves either the old run, no
run, or the new one.  On object stores (``gs://``) there are no directories: the
old marker goes first, then the old files, then the staged files are renamed
(copied) one by one and the marker is written last, so the marker never sits next
to a mix of old and new files.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from transforms.io.write import write_atomically
from transforms.logs import stage_logger

MARKER = "_COMPLETE"
# What ``tropemix plan`` leaves in an output path; a run may replace it.
_OWN_LEFTOVERS = frozenset({"plan.json"})
_LOG = stage_logger("publish")


class OutputError(RuntimeError):
    """An output path that a run may not write to, or a run directory that is not finished."""


def _is_remote(path: str) -> bool:
    return "://" in path


def _split(path: str) -> tuple[str, str]:
    parent, _, name = path.rstrip("/").rpartition("/")
    if not parent or not name or name in (".", ".."):
        raise OutputError(f"output.path {path!r} needs a parent directory; use e.g. out/{name or 'run'}")
    return parent, name


def staging_dir(final: str) -> str:
    """The hidden sibling a run writes into before it is published.

    Args:
      final: the run's ``output.path``.
    """
    parent, name = _split(_absolute(final))
    return f"{parent}/.{name}.staging"


def _replaced_dir(final: str) -> str:
    parent, name = _split(_absolute(final))
    return f"{parent}/.{name}.replaced"


def _absolute(path: str) -> str:
    return path.rstrip("/") if _is_remote(path) else os.path.abspath(path)


def list_files(directory: str) -> list[str]:
    """Paths of the files under ``directory`` (two levels: run files and their folders), relative, sorted.

    Args:
      directory: local or remote directory.
    """
    base = directory.rstrip("/")
    if not _is_remote(base):
        if not os.path.isdir(base):
            return []
        found = []
        for root, _, files in os.walk(base):
            found += [os.path.relpath(os.path.join(root, f), base) for f in files]
        return sorted(found)
    results = FileSystems.match([f"{base}/*", f"{base}/*/*"])
    return sorted({m.path[len(base) + 1 :] for r in results for m in r.metadata_list})


def dir_exists(directory: str) -> bool:
    """Whether ``directory`` exists; on an object store, whether any file lies under it."""
    if _is_remote(directory):
        return bool(list_files(directory))
    return os.path.isdir(directory)


def remove_dir(directory: str) -> None:
    """Deletes ``directory`` and everything under it, if it exists (object stores: the prefix)."""
    if dir_exists(directory):
        # A trailing slash makes Beam's GCS filesystem delete the whole prefix.
        FileSystems.delete([directory.rstrip("/") + ("/" if _is_remote(directory) else "")])


def _read(path: str) -> bytes | None:
    if not FileSystems.exists(path):
        return None
    with FileSystems.open(path) as f:
        data: bytes = f.read()
        return data


def completion(run_dir: str) -> dict[str, Any] | None:
    """The completion marker of a finished run, or None when ``run_dir`` is not one.

    The marker must parse and its digest must match ``manifest.json`` (when it records one).

    Args:
      run_dir: local or remote run directory.
    """
    base = run_dir.rstrip("/")
    data = _read(f"{base}/{MARKER}")
    if data is None:
        return None
    try:
        marker: dict[str, Any] = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    want = marker.get("manifest_sha256")
    if want is not None:
        manifest = _read(f"{base}/manifest.json")
        if manifest is None or hashlib.sha256(manifest).hexdigest() != want:
            return None
    return marker


def prepare_output(final: str, overwrite: bool) -> str:
    """Checks that a run may publish to ``final`` and clears stale staging; returns the staging directory.

    Args:
      final: the run's ``output.path``.
      overwrite: replace a non-empty ``final`` that is not a finished run.

    Raises:
      OutputError: ``final`` holds files but no completion marker, and ``overwrite`` is false.
    """
    check_output(final, overwrite)
    staging = staging_dir(final)
    if completion(final) is None and FileSystems.exists(f"{staging}/{MARKER}"):
        # An interrupted publication of ours: its half-copied files go with it.
        _LOG.info("unfinished publication removed", path=final)
        remove_dir(final)
    for stale in (staging, _replaced_dir(final)):
        if dir_exists(stale):
            _LOG.info("stale directory removed", path=stale)
            remove_dir(stale)
    return staging


def check_output(final: str, overwrite: bool) -> None:
    """Raises ``OutputError`` when ``final`` holds files that are not a finished run and ``overwrite`` is false.

    A finished run (marker present) is replaced; so is what an interrupted
    publication left (the staging directory holds a marker).

    Args:
      final: the run's ``output.path``.
      overwrite: allow replacing anything.
    """
    if overwrite or completion(final) is not None:
        return
    files = [f for f in list_files(final) if f not in _OWN_LEFTOVERS]
    if not files or FileSystems.exists(f"{staging_dir(final)}/{MARKER}"):
        return
    raise OutputError(
        f"output.path {final} holds {len(files)} files (e.g. {files[0]}) but no {MARKER} marker: a failed or "
        "killed run, or not a tropemix run. Delete it, choose another output.path, or pass --overwrite."
    )


def mark_complete(staging: str) -> dict[str, Any]:
    """Writes the completion marker into ``staging``: the manifest digest and the file list.

    Args:
      staging: the fully written run directory.
    """
    files = [f for f in list_files(staging) if f != MARKER and not f.rsplit("/", 1)[-1].startswith(".tmp-")]
    manifest = _read(f"{staging.rstrip('/')}/manifest.json")
    marker = {
        "manifest_sha256": hashlib.sha256(manifest).hexdigest() if manifest is not None else None,
        "files": files,
    }
    write_atomically(f"{staging.rstrip('/')}/{MARKER}", json.dumps(marker, indent=2, sort_keys=True).encode())
    return marker


def publish(staging: str, final: str, overwrite: bool) -> None:
    """Marks ``staging`` complete and moves it to ``final``; safe to repeat after a retry.

    Args:
      staging: the fully written run directory.
      final: the run's ``output.path``.
      overwrite: replace a non-empty ``final`` that is not a finished run.
    """
    staged_marker = _read(f"{staging}/{MARKER}")
    if staged_marker is None and not dir_exists(staging) and completion(final) is not None:
        return  # A retried bundle: an earlier attempt published already.
    check_output(final, overwrite)
    if staged_marker is None:
        mark_complete(staging)
    if _is_remote(final):
        _publish_remote(staging, final)
    else:
        _publish_local(staging, _absolute(final))
    _LOG.info("run published", path=final)


def _publish_local(staging: str, final: str) -> None:
    # A directory rename is atomic: readers see the old run, no run, or the new one.
    if os.path.exists(final):
        replaced = _replaced_dir(final)
        shutil.rmtree(replaced, ignore_errors=True)
        os.rename(final, replaced)
        shutil.rmtree(replaced)
    os.makedirs(os.path.dirname(final), exist_ok=True)
    os.rename(staging, final)


def _publish_remote(staging: str, final: str) -> None:
    # The old marker goes first, so a half-replaced directory never looks finished.
    if FileSystems.exists(f"{final}/{MARKER}"):
        FileSystems.delete([f"{final}/{MARKER}"])
    old = list_files(final)
    if old:
        FileSystems.delete([f"{final}/{f}" for f in old])
    files = [f for f in list_files(staging) if f != MARKER]
    if files:
        FileSystems.rename([f"{staging}/{f}" for f in files], [f"{final}/{f}" for f in files])
    marker = _read(f"{staging}/{MARKER}")
    assert marker is not None
    write_atomically(f"{final}/{MARKER}", marker)
    remove_dir(staging)


def replace_files(final: str, files: dict[str, bytes]) -> None:
    """Replaces files of a published run, staging each first, so a kill leaves no debris in ``final``.

    Used for what the driver adds after publication (runner metrics in the report).

    Args:
      final: the published run directory.
      files: relative name -> new content.
    """
    staging = staging_dir(final)
    names = sorted(files)
    for name in names:
        write_atomically(f"{staging}/{name}", files[name])
    FileSystems.rename([f"{staging}/{n}" for n in names], [f"{final.rstrip('/')}/{n}" for n in names])
    remove_dir(staging)


def require_complete(patterns: Sequence[str], what: str = "dedup.previous_index") -> None:
    """Fails unless every file matched by ``patterns`` lies in a finished run directory.

    The run directory of ``<run>/dedup_index/index-*.parquet`` is ``<run>``.

    Args:
      patterns: globs of files inside earlier runs.
      what: the config field, for the message.

    Raises:
      OutputError: a matched file's run has no valid completion marker.
    """
    for pattern in patterns:
        for result in FileSystems.match([pattern]):
            for meta in result.metadata_list:
                run_dir = meta.path.rsplit("/", 2)[0]
                if completion(run_dir) is None:
                    raise OutputError(
                        f"{what}: {meta.path} belongs to {run_dir}, which has no valid {MARKER} marker "
                        "(a failed, killed or unfinished run); rerun it or remove it from the list"
                    )


class _PublishFn(beam.DoFn):
    """Finishes the staging directory with ``finish``, then publishes it; passes the report on."""

    def __init__(self, staging: str, final: str, overwrite: bool, finish: Callable[[str], Any]) -> None:
        self._staging = staging
        self._final = final
        self._overwrite = overwrite
        self._finish = finish

    def process(self, report: dict[str, Any]) -> Iterator[dict[str, Any]]:
        # A retry after publication finds no staging directory and nothing left to finish.
        if dir_exists(self._staging):
            self._finish(self._staging)
        publish(self._staging, self._final, self._overwrite)
        yield report


class Publish(beam.PTransform):
    """Publishes the staged run once its report exists: the last step of the DAG.

    It runs inside the pipeline, so a runner without a waiting driver (a Dataflow
    template) publishes too.

    Args:
      staging: where the run wrote.
      final: ``output.path``.
      overwrite: replace a non-empty ``final`` that is not a finished run.
      finish: writes the last staged files (report.html) before the marker.
    """

    def __init__(
        self,
        staging: str,
        final: str,
        overwrite: bool = False,
        finish: Callable[[str], Any] = lambda staging: None,
    ) -> None:
        super().__init__()
        self._fn = _PublishFn(staging, final, overwrite, finish)

    def expand(self, report: beam.PCollection) -> beam.PCollection:
        return report | "PublishRun" >> beam.ParDo(self._fn)
