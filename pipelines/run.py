"""Runs the mix: ``tropemix run`` and ``python -m pipelines.run --config FILE [beam options]``.

Builds the DAG (``pipelines/mix.py``) on the runner the options name
(``pipelines/runner.py``), waits, surfaces a stage's own error, adds the runner's
metrics to the published report and prints the summary.  Incremental runs consume
only the input files no finished run has read (``pipelines/incremental.py``).

On the in-process runner (the default; the plain DirectRunner would try to download
the Prism runner first)::

    python -m pipelines.run --config examples/demo.yaml
    python -m pipelines.run --config examples/demo.yaml --direct_num_workers=2 \
        --direct_running_mode=multi_processing

On Dataflow (paths in the config must be ``gs://``)::

    python -m pipelines.run --config gs-config.yaml --runner=DataflowRunner \
        --project=PROJECT --region=REGION --temp_location=gs://BUCKET/tmp \
        --setup_file=./setup.py

On a Dask distributed cluster (see deploy/dask/README.md)::

    python -m pipelines.run --config examples/demo.yaml --runner=dask \
        --dask_client_address=SCHEDULER_HOST:8786

On Flink, through the Beam Flink job server::

    python -m pipelines.run --config examples/demo.yaml --runner=FlinkRunner \
        --flink_master=localhost:8081 --environment_type=LOOPBACK

Everything after ``--config FILE`` is a Beam pipeline option.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from pipelines.checks import UsageError
from pipelines.mix import BuildMix, PlanMix
from pipelines.runner import MixOptions, is_local, pipeline_options, raise_unwrapped, waits_for_result
from pipelines.summary import summary_lines
from schemas.config import MixConfig
from schemas.loading import allowing_empty_sources, load_config
from transforms.blend.plan_model import PlanError
from transforms.blocks import ComponentsNotConverged
from transforms.io.ids import DuplicateIdError
from transforms.io.publication import OutputError, prepare_output, replace_files, staging_dir
from transforms.logs import configure_logging, stage_logger
from transforms.progress import ProgressPrinter, tap_progress
from transforms.report.conservation import ConservationError, JoinIntegrityError
from transforms.report.html import render_html, write_report_html
from transforms.report.metrics import augment_report, collect_metrics, stage_busy_seconds
from transforms.report.records import read_json

_LOG = stage_logger("run")
# The errors a stage raises on purpose, with a message meant for the user.
STAGE_ERRORS = (PlanError, DuplicateIdError, JoinIntegrityError, ComponentsNotConverged)


def read_report(output: str) -> dict[str, Any]:
    """Reads ``report.json`` of a finished run."""
    return read_json(f"{output.rstrip('/')}/report.json")


def run_plan(cfg: MixConfig, beam_args: Sequence[str] = ()) -> dict[str, Any]:
    """Runs the counting pass and returns the plan (also left in ``output.path/plan.json``).

    Args:
      cfg: a validated config.
      beam_args: Beam pipeline options.

    Raises:
      PlanError: the targets cannot be met; the message gives the numbers.
    """
    try:
        with beam.Pipeline(options=pipeline_options(beam_args)) as p:
            _ = p | "PlanMix" >> PlanMix(cfg)
    except Exception as err:
        raise_unwrapped(err, PlanError, DuplicateIdError)
        raise
    with FileSystems.open(f"{cfg.output.path.rstrip('/')}/plan.json") as f:
        plan: dict[str, Any] = json.loads(f.read().decode("utf-8"))
        return plan


def run(cfg: MixConfig, beam_args: Sequence[str] = (), overwrite: bool = False) -> dict[str, Any] | None:
    """Runs the mix, adds the runner's metrics to its published report, rewrites ``report.html``.

    Returns the report, or None when only a graph or template was built.

    Args:
      cfg: a validated config.
      beam_args: Beam pipeline options.
      overwrite: replace a non-empty ``output.path`` that is not a finished run.

    Raises:
      OutputError: ``output.path`` holds files that are not a finished run.
      ConservationError: documents were lost; ``report.json`` and ``report.html``
        are written to the unpublished staging directory and the message names
        the stage, the difference and the report.
    """
    options = pipeline_options(beam_args)
    out = cfg.output.path.rstrip("/")
    runs = waits_for_result(options)
    staged = prepare_output(out, overwrite) if runs else staging_dir(out)
    with tempfile.TemporaryDirectory(prefix="tropemix-progress-") as progress_dir:
        printer = ProgressPrinter(progress_dir, sys.stdout, local=runs and is_local(options))
        p = beam.Pipeline(options=options)
        mix = p | "BuildMix" >> BuildMix(cfg, overwrite)
        if printer.enabled:
            tap_progress(mix.watched, progress_dir)
        _LOG.info("run started", run_name=cfg.run_name, output=out, sources=len(cfg.sources))
        start = time.monotonic()
        try:
            with printer:
                result = p.run()
                if not runs:
                    return None
                result.wait_until_finish()
        except Exception as err:
            raise_unwrapped(err, *STAGE_ERRORS)
            # A failed run is never published: its report stays in the staging directory.
            report_path = f"{staged}/report.json"
            if not FileSystems.exists(report_path) or read_report(staged)["conservation"]["ok"]:
                raise
            write_report_html(staged)
            failed = read_report(staged)["conservation"]
            _LOG.error("conservation failed", summary=failed["summary"])
            raise ConservationError(
                "\n".join(
                    [
                        failed["summary"],
                        *(line for line in failed["lines"] if "MISMATCH" in line),
                        f"report (not published): {staged}/report.html",
                    ]
                )
            ) from err
        wall = time.monotonic() - start
    busy = stage_busy_seconds(result, [s.name for s in cfg.sources])
    report = augment_report(read_report(out), collect_metrics(result), busy, wall)
    data = json.dumps(report, indent=2, sort_keys=True).encode()
    # Rendered from the JSON, as `tropemix report` does, so both give the same page.
    page = render_html(json.loads(data), read_json(f"{out}/manifest.json")).encode("utf-8")
    # Staged and renamed in: a kill here leaves the published report as it was, and no temp file.
    replace_files(out, {"report.json": data, "report.html": page})
    _LOG.info("run finished", run_name=cfg.run_name, wall_seconds=round(wall, 1), status=report["status"])
    return report


def execute(
    cfg: MixConfig, beam_args: Sequence[str], run_id: str | None = None, overwrite: bool = False
) -> int:
    """Runs a config (incrementally when ``output.incremental``), prints the summary, returns the exit code.

    Args:
      cfg: a validated config.
      beam_args: Beam pipeline options.
      run_id: name of an incremental run; defaults to the current UTC time.
      overwrite: replace a non-empty output directory that holds no finished run.
    """
    plan = None
    if cfg.output.incremental:
        from pipelines.incremental import commit_run, plan_run

        plan = plan_run(cfg, run_id)
        if plan.fresh == 0:
            print(f"no new input files under {cfg.output.path} since the last completed run; nothing to do")
            return 0
        print(f"incremental run {plan.run_id}: {plan.fresh} new input files -> {plan.config.output.path}")
    run_cfg = plan.config if plan else cfg
    report = run(run_cfg, beam_args, overwrite)
    if report is None:
        print("job graph built; nothing was run (dry run or template creation)")
        return 0
    print("\n".join(summary_lines(run_cfg, report)))
    if not report["conservation"]["ok"]:
        return 1
    if plan:
        commit_run(cfg.output.path, plan)
    return 0


def exit_code(job: Callable[[], int]) -> int:
    """Runs ``job``; a failed conservation or clustering check (1) or an unusable output path (2)
    becomes an exit code.

    The message goes to stderr.
    """
    try:
        return job()
    except (ConservationError, ComponentsNotConverged) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except (OutputError, DuplicateIdError, UsageError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    mix = PipelineOptions(argv).view_as(MixOptions)
    if not mix.config:
        print("python -m pipelines.run: --config is required", file=sys.stderr)
        return 2
    configure_logging()
    cfg = allowing_empty_sources(load_config(mix.config), mix.allow_empty_source)
    return exit_code(lambda: execute(cfg, argv, mix.run_id, mix.overwrite))


if __name__ == "__main__":
    sys.exit(main())
