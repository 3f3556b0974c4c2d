"""The ``tropemix`` command line.

tropemix run CONFIG.yaml [-- beam options]
tropemix plan CONFIG.yaml [-- beam options]
tropemix validate CONFIG.yaml
tropemix report RUN_DIR
tropemix classify --model M --input GLOB --output DIR [beam options]
tropemix dedup --input GLOB --output DIR [--threshold 0.8] [--max-rounds N] [--previous-index GLOB ...] [beam options]
tropemix train-classifier --labels data/annotation --shared ../shared/data [--params P.yaml] --output MODEL.ftz
tropemix eval-classifier --model M --data LABELED.jsonl [...]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence

from apache_beam.io.filesystems import FileSystems

from pipelines.checks import (
    REMOTE_TIMEOUT,
    UsageError,
    check_beam_flags,
    check_exists,
    match_files,
    with_timeout,
)
from schemas.config import ConfigError, DedupConfig, MixConfig
from schemas.loading import allowing_empty_sources, allowing_unverified_model, load_config
from transforms.io.publication import OutputError, require_complete
from transforms.logs import configure_logging


def validate_inputs(cfg: MixConfig, timeout: float = REMOTE_TIMEOUT) -> list[str]:
    """Problems with the paths a config names, without reading any data.

    Args:
      cfg: a config that passed schema validation.
      timeout: seconds each remote (``gs://``) check may take.
    """
    problems: list[str] = []
    for i, source in enumerate(cfg.sources):
        for j, pattern in enumerate(source.inputs):
            problems += _problem(
                match_files, pattern, f"sources.{i}.inputs.{j} (source {source.name!r})", timeout
            )
        if source.chat is not None and source.chat.template is not None:
            fix = "point chat.template at a tokenizer_config.json or a Jinja template file"
            problems += _problem(
                check_exists, source.chat.template, f"sources.{i}.chat.template", fix, timeout
            )
    for j, eval_set in enumerate(cfg.decontaminate.evals if cfg.decontaminate else []):
        problems += _problem(match_files, eval_set.path, f"decontaminate.evals.{j}.path", timeout)
    for j, pattern in enumerate(cfg.dedup.previous_index):
        problems += _problem(match_files, pattern, f"dedup.previous_index.{j}", timeout)
        problems += _problem(require_complete, [pattern], f"dedup.previous_index.{j}")
    if any(s.classify for s in cfg.sources):
        problems += _problem(check_exists, cfg.classifier.model, "classifier.model", _MODEL_FIX, timeout)
        problems += _problem(check_model_card, cfg.classifier.model, cfg.classifier.allow_unverified_model)
    return problems


def check_model_card(model: str, allow_unverified: bool) -> None:
    """Fails early for a remote model whose card gives no sha256, unless allowed (see ``localize_model``)."""
    from transforms.classify.model import read_model_card

    if "://" in model and not allow_unverified and not read_model_card(model).get("sha256"):
        raise UsageError(
            f"classifier.model: {model} has no model card with a sha256; add the card written by "
            "`tropemix train-classifier` next to it, or pass --allow-unverified-model"
        )


def _problem(check: Callable[..., object], *args: object) -> list[str]:
    """``check(*args)``'s message as a one-item list, or nothing when it passes."""
    try:
        check(*args)
    except (UsageError, OutputError) as err:
        return [str(err)]
    return []


_MODEL_FIX = "train one with `tropemix train-classifier` or use the shipped models/tropes-v1.ftz"


def _checked_config(args: argparse.Namespace) -> MixConfig | None:
    """The config of ``args.config`` when its input paths and model exist; otherwise None, with the problems on stderr.

    Args:
      args: the command's arguments; ``--allow-empty-source`` and ``--allow-unverified-model``
        set the matching config fields.
    """
    path = args.config
    # Reading a gs:// config without network would retry for minutes.
    cfg = (
        with_timeout(lambda: load_config(path), REMOTE_TIMEOUT, f"config {path}")
        if "://" in path
        else load_config(path)
    )
    cfg = allowing_empty_sources(cfg, getattr(args, "allow_empty_source", False))
    cfg = allowing_unverified_model(cfg, getattr(args, "allow_unverified_model", False))
    problems = validate_inputs(cfg)
    if problems:
        print("invalid config:\n" + "\n".join(f"  {p}" for p in problems), file=sys.stderr)
        return None
    return cfg


def _cmd_validate(args: argparse.Namespace) -> int:
    cfg = _checked_config(args)
    if cfg is None:
        return 2
    print(f"{args.config}: OK ({len(cfg.sources)} sources, output {cfg.output.path})")
    return 0


def _cmd_run(args: argparse.Namespace, beam_args: list[str]) -> int:
    from apache_beam.options.pipeline_options import PipelineOptions

    from pipelines.run import execute, exit_code
    from pipelines.runner import MixOptions
    from transforms.blend.plan_model import PlanError

    cfg = _checked_config(args)
    if cfg is None:
        return 2
    run_id = PipelineOptions(beam_args).view_as(MixOptions).run_id
    try:
        return exit_code(lambda: execute(cfg, beam_args, run_id, args.overwrite))
    except PlanError as err:
        print(str(err), file=sys.stderr)
        return 3


def _cmd_plan(args: argparse.Namespace, beam_args: list[str]) -> int:
    from pipelines.run import run_plan
    from pipelines.summary import format_plan
    from transforms.blend.plan_model import PlanError
    from transforms.io.ids import DuplicateIdError

    cfg = _checked_config(args)
    if cfg is None:
        return 2
    try:
        plan = run_plan(cfg, beam_args)
    except PlanError as err:
        print(str(err), file=sys.stderr)
        return 3
    except DuplicateIdError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print("\n".join(format_plan(plan)))
    print(f"plan written to {cfg.output.path.rstrip('/')}/plan.json (no shards written)")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from transforms.report.html import write_report_html

    run_dir = args.run_dir.rstrip("/")
    if not FileSystems.exists(f"{run_dir}/report.json"):
        print(
            f"{run_dir}/report.json does not exist; is {run_dir!r} a tropemix run directory?", file=sys.stderr
        )
        return 2
    print(write_report_html(run_dir))
    return 0


def _cmd_classify(args: argparse.Namespace, beam_args: list[str]) -> int:
    from pipelines.stages import run_classify

    match_files(args.input, "--input")
    check_exists(args.model, "--model", _MODEL_FIX)
    check_model_card(args.model, args.allow_unverified_model)

    run_classify(
        args.model,
        args.input,
        args.output,
        args.shards,
        beam_args,
        args.id_field,
        args.text_field,
        args.overwrite,
        args.allow_unverified_model,
    )
    print(f"classified documents written to {args.output}")
    return 0


def _cmd_dedup(args: argparse.Namespace, beam_args: list[str]) -> int:
    from pipelines.run import exit_code
    from pipelines.stages import run_dedup

    match_files(args.input, "--input")
    for pattern in args.previous_index or []:
        match_files(pattern, "--previous-index")
        require_complete([pattern], "--previous-index")

    cfg = DedupConfig(
        threshold=args.threshold,
        ngram=args.ngram,
        num_perm=args.num_perm,
        seed=args.seed,
        max_rounds=args.max_rounds,
        previous_index=args.previous_index or [],
    )

    def job() -> int:
        run_dedup(
            args.input,
            args.output,
            cfg,
            args.shards,
            beam_args,
            args.id_field,
            args.text_field,
            args.overwrite,
        )
        print(f"kept documents and ledger written to {args.output}")
        return 0

    return exit_code(job)


def _cmd_train(args: argparse.Namespace) -> int:
    from training.train import load_params, train

    for path in (args.labels, args.shared, *(args.dev or [])):
        check_exists(
            path,
            "--labels/--shared/--dev",
            "give the annotation directory, ../shared/data and dev JSONL files",
        )
    card = train(args.labels, args.shared, args.output, load_params(args.params), dev=args.dev or ())
    cv = card["evaluation"]["cross_validation"]
    summary = {
        view: {"model": cv["model"][view]["f1"], "keyword_baseline": cv["keyword_baseline"][view]["f1"]}
        for view in ("misaligned", "aligned", "mixed", "any_ai")
    }
    print(
        json.dumps(
            {"model": args.output, "data": card["data"]["labels"], "f1_out_of_fold": summary}, indent=2
        )
    )
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from training.train import evaluate_model

    check_exists(args.model, "--model", _MODEL_FIX)
    for path in args.data:
        check_exists(path, "--data", "give labeled JSONL files")
    print(
        json.dumps(
            evaluate_model(args.model, args.data, args.allow_unverified_model), indent=2, sort_keys=True
        )
    )
    return 0


_BEAM_EPILOG = """Beam pipeline options go after `--`, for example:
  tropemix run mix.yaml -- --direct_num_workers=2 --direct_running_mode=multi_processing
  tropemix run mix.yaml -- --runner=DataflowRunner --project=P --region=R \\
      --temp_location=gs://B/tmp --setup_file=./setup.py
An option Beam does not know is rejected before anything runs."""


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("tropemix")
    except PackageNotFoundError:  # running from a checkout that was never installed
        return "unknown"


_UNVERIFIED_HELP = "use a remote model whose model card gives no sha256"
_ALLOW_EMPTY_HELP = "let a source bring no documents (incremental runs); the others share the mix"


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="tropemix", description="Measure and rebalance AI-narrative tropes in training mixes."
    )
    top.add_argument("--version", action="version", version=f"tropemix {_version()}")
    sub = top.add_subparsers(dest="command", required=True)
    _add_mix_commands(sub)
    _add_stage_commands(sub)
    _add_training_commands(sub)
    return top


def _add_mix_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``run``, ``plan``, ``validate`` and ``report``: the mix and its outputs."""
    p = sub.add_parser(
        "run",
        help="run the full mix DAG; Beam options go after --",
        epilog=_BEAM_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("config")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a non-empty output.path that holds no finished run (a failed or killed one)",
    )
    p.add_argument("--allow-empty-source", action="store_true", help=_ALLOW_EMPTY_HELP)
    p.add_argument("--allow-unverified-model", action="store_true", help=_UNVERIFIED_HELP)
    p = sub.add_parser(
        "plan",
        help="count the sources and print the blend plan; writes no shards",
        epilog=_BEAM_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("config")
    p.add_argument("--allow-empty-source", action="store_true", help=_ALLOW_EMPTY_HELP)
    p.add_argument("--allow-unverified-model", action="store_true", help=_UNVERIFIED_HELP)
    p = sub.add_parser("validate", help="check a config and its input paths without reading data")
    p.add_argument("config")
    p = sub.add_parser("report", help="regenerate report.html from a run's report.json and manifest.json")
    p.add_argument("run_dir", help="the run's output.path, local or gs://")


def _add_stage_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``classify`` and ``dedup``: one stage over a glob of documents."""
    for name, help_text in (("classify", "classify documents only"), ("dedup", "deduplicate documents only")):
        p = sub.add_parser(name, help=help_text)
        p.add_argument(
            "--input", required=True, help="JSONL(.gz/.zst), Parquet, WARC or WET glob, local or gs://"
        )
        p.add_argument("--output", required=True, help="output directory")
        p.add_argument("--shards", type=int, default=1)
        p.add_argument("--id-field", default="id")
        p.add_argument("--text-field", default="text")
        p.add_argument(
            "--overwrite", action="store_true", help="replace a non-empty output that holds no finished run"
        )
        if name == "classify":
            p.add_argument("--model", required=True)
            p.add_argument("--allow-unverified-model", action="store_true", help=_UNVERIFIED_HELP)
        else:
            p.add_argument("--threshold", type=float, default=0.8)
            p.add_argument("--ngram", type=int, default=5)
            p.add_argument("--num-perm", type=int, default=128)
            p.add_argument("--seed", type=int, default=1)
            p.add_argument(
                "--max-rounds",
                type=int,
                default=DedupConfig.model_fields["max_rounds"].default,
                help="large-star/small-star rounds unrolled for the clusters (dedup.max_rounds); "
                "the job fails, naming it, when they are not enough",
            )
            p.add_argument(
                "--previous-index",
                nargs="*",
                help="dedup_index/*.parquet globs of earlier runs; colliding documents are dropped",
            )


def _add_training_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``train-classifier`` and ``eval-classifier``: the offline classifier tooling."""
    p = sub.add_parser("train-classifier", help="cross-validate and train the trope model on the annotations")
    p.add_argument("--labels", default="data/annotation", help="annotation directory (labels/*.jsonl)")
    p.add_argument("--shared", default="../shared/data", help="the texts the labels join with")
    p.add_argument("--params", help="YAML training parameters (see models/train.yaml)")
    p.add_argument("--output", required=True, help="model path, e.g. models/tropes-v1.ftz")
    p.add_argument("--dev", nargs="*", help="fixed dev sets, scored once with the trained model")
    p = sub.add_parser(
        "eval-classifier",
        help="P/R/F1 with 95%% intervals per narrative, next to a keyword baseline, as JSON",
    )
    p.add_argument("--model", required=True)
    p.add_argument("--allow-unverified-model", action="store_true", help=_UNVERIFIED_HELP)
    p.add_argument(
        "--data", nargs="+", required=True, help="JSONL of {id, text, label} or {id, text, labels}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1 :]
    else:
        extra = []
    args, beam_args = parser().parse_known_args(argv)
    beam_args += extra
    configure_logging()
    try:
        if args.command in ("run", "plan", "classify", "dedup"):
            check_beam_flags(beam_args)
        if args.command == "validate":
            return _cmd_validate(args)
        if args.command == "report":
            return _cmd_report(args)
        if args.command == "run":
            return _cmd_run(args, beam_args)
        if args.command == "plan":
            return _cmd_plan(args, beam_args)
        if args.command == "classify":
            return _cmd_classify(args, beam_args)
        if args.command == "dedup":
            return _cmd_dedup(args, beam_args)
        if args.command == "train-classifier":
            return _cmd_train(args)
        return _cmd_eval(args)
    except (ConfigError, OutputError, UsageError) as err:
        print(str(err), file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
