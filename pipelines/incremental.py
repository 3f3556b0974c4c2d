"""Scheduled incremental runs: process only input files that earlier runs did not consume.

With ``output.incremental: true`` the output path is a root that holds

- ``state/inputs.json``: every input file consumed by a completed run, with its
  size, modification time and the run that consumed it;
- ``runs/<run_id>/``: one ordinary run directory per run (shards/, ledger/,
  dedup_index/, ...).

A run lists its sources' files on the driver, keeps those that are new or changed
(different size or mtime) for sources with ``incremental: true`` (curated sources
such as the constitution are always read whole), dedups them against the
``dedup_index/`` of every earlier completed run (a document that collides with an
earlier survivor is dropped as ``earlier_run_duplicate``, the ledger naming the
earlier id), runs the normal DAG into ``runs/<run_id>/``, and records the files in the state only after the run's
conservation check passed.  So a run that fails halfway leaves the state as it was
and can simply be started again; its shards are replaced atomically.  A run with
no new files writes nothing and says so.

    python -m pipelines.run --config mix.yaml --run_id 2026-11-23T06-00
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from apache_beam.io.filesystems import FileSystems

from schemas.config import MixConfig
from transforms.io.write import write_atomically

STATE_PATH = "state/inputs.json"


@dataclass(frozen=True)
class InputFile:
    """One input file as the filesystem lists it."""

    path: str
    size: int
    mtime: float

    def key(self) -> tuple[int, float]:
        return (self.size, round(self.mtime, 3))


def list_inputs(patterns: Sequence[str]) -> list[InputFile]:
    """Files matching ``patterns``, sorted by path.

    Args:
      patterns: globs, local or ``gs://``.
    """
    files: dict[str, InputFile] = {}
    for result in FileSystems.match(list(patterns)):
        for m in result.metadata_list:
            files[m.path] = InputFile(m.path, int(m.size_in_bytes), float(m.last_updated_in_seconds))
    return [files[p] for p in sorted(files)]


def read_state(root: str) -> dict[str, Any]:
    """The state file under ``root``, or an empty state."""
    path = f"{root.rstrip('/')}/{STATE_PATH}"
    if not FileSystems.exists(path):
        return {"files": {}, "runs": []}
    with FileSystems.open(path) as f:
        state: dict[str, Any] = json.loads(f.read().decode("utf-8"))
        return state


def new_files(files: Sequence[InputFile], state: Mapping[str, Any]) -> list[InputFile]:
    """Files that no completed run consumed in their current version.

    Args:
      files: files listed now.
      state: the state file's content.
    """
    seen = state.get("files", {})
    out = []
    for f in files:
        old = seen.get(f.path)
        if old is None or (int(old["size"]), round(float(old["mtime"]), 3)) != f.key():
            out.append(f)
    return out


def record_run(state: Mapping[str, Any], run_id: str, consumed: Sequence[InputFile]) -> dict[str, Any]:
    """The state after ``run_id`` completed having consumed ``consumed``."""
    files = dict(state.get("files", {}))
    for f in consumed:
        files[f.path] = {"size": f.size, "mtime": f.mtime, "run_id": run_id}
    runs = [r for r in state.get("runs", []) if r["run_id"] != run_id]
    runs.append({"run_id": run_id, "files": len(consumed)})
    return {"files": dict(sorted(files.items())), "runs": runs}


@dataclass(frozen=True)
class RunPlan:
    """What an incremental run will read, and where it writes."""

    run_id: str
    config: MixConfig
    consumed: list[InputFile]
    fresh: int


def plan_run(cfg: MixConfig, run_id: str | None) -> RunPlan:
    """Narrows each incremental source to its new files and points the output at ``runs/<run_id>``.

    Args:
      cfg: the config; ``output.path`` is the incremental root.
      run_id: the run's name; defaults to the current UTC time.
    """
    run_id = run_id or time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    root = cfg.output.path.rstrip("/")
    state = read_state(root)
    sources = []
    consumed: list[InputFile] = []
    fresh = 0
    for source in cfg.sources:
        files = list_inputs(source.inputs)
        if source.incremental:
            files = new_files(files, state)
            fresh += len(files)
        consumed.extend(files)
        # An explicit list of paths is a valid list of patterns for ReadSource.
        sources.append(source.model_copy(update={"inputs": [f.path for f in files]}))
    # Earlier completed runs' survivors: new input that repeats them is not new content.
    earlier = [
        f"{root}/runs/{r['run_id']}/dedup_index/*.parquet"
        for r in state.get("runs", [])
        if r["run_id"] != run_id
    ]
    run_cfg = cfg.model_copy(
        update={
            "sources": sources,
            "dedup": cfg.dedup.model_copy(update={"previous_index": [*cfg.dedup.previous_index, *earlier]}),
            "output": cfg.output.model_copy(update={"path": f"{root}/runs/{run_id}"}),
            # A source of a later run may bring nothing new: no new files, or only
            # documents earlier runs already hold (as the curated sources do).
            "blend": cfg.blend.model_copy(update={"allow_empty_sources": True}),
        }
    )
    return RunPlan(run_id=run_id, config=run_cfg, consumed=consumed, fresh=fresh)


def commit_run(root: str, plan: RunPlan) -> None:
    """Records a completed run's files in the state file, atomically."""
    state = record_run(read_state(root), plan.run_id, plan.consumed)
    write_atomically(f"{root.rstrip('/')}/{STATE_PATH}", json.dumps(state, indent=2).encode("utf-8"))
