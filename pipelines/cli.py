"""The ``tropemix`` command line.

tropemix run CONFIG.yaml [-- beam options]
tropemix plan CONFIG.yaml [-- beam options]
tropemix validate CONFIG.yaml
tropemix report RUN_DIR
tropemix classify --model M --input GLOB --output DIR [beam options]
tropemix dedup --input GLOB --output DIR [--threshold 0.8] [--max-rounds N] [--previous-index GLOB ...] [beam options]
tropemix train-classifier --data LABELED.jsonl [--params P.yaml] [--taxonomy T.yaml] --output MODEL.ftz
tropemix eval-classifier --model M --data LABELED.jsonl [--pr-curves DIR] [--skip-pages-of TRAIN.jsonl ...]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from apache_beam.io.filesystems import FileSystems

from schemas.config import ConfigError, DedupConfig, MixConfig, load_config
from transforms.logs import configure_logging


def validate_inputs(cfg: MixConfig) -> list[str]:
    """Problems with the paths a config names, without reading any data.

    Args:
      cfg: a config that passed schema validation.
    """
    problems = []
    for i, source in enumerate(cfg.sources):
        for j, pattern in enumerate(source.inputs):
            try:
                matched = FileSystems.match([pattern])[0].metadata_list
            except Exception as err:  # FileSystems raises BeamIOError or a scheme-specific error
                problems.append(f"sources.{i}.inputs.{j}: cannot list {pattern!r}: {err}")
                continue
            if not matched:
                problems.append(
                    f"sources.{i}.inputs.{j}: {pattern!r} matches no file; fix the path or glob (source {source.name!r})"
                )
    for j, pattern in enumerate(cfg.dedup.previous_index):
        if not FileSystems.match([pattern])[0].metadata_list:
            problems.append(
                f"dedup.previous_index.{j}: {pattern!r} matches no file; point it at an earlier run's dedup_index/*.parquet"
            )
    if not FileSystems.exists(cfg.classifier.model) and any(s.classify for s in cfg.sources):
        problems.append(
            f"classifier.model: {cfg.classifier.model!r} does not exist; train one with "
            "`tropemix train-classifier` or point to the shipped models/tropes-v0.ftz"
        )
    return problems


def _checked_config(path: str) -> MixConfig | None:
    """The config at ``path`` when its input paths and model exist; otherwise None, with the problems on stderr."""
    cfg = load_config(path)
    problems = validate_inputs(cfg)
    if problems:
        print("invalid config:\n" + "\n".join(f"  {p}" for p in problems), file=sys.stderr)
        return None
    return cfg


def _cmd_validate(args: argparse.Namespace) -> int:
    cfg = _checked_config(args.config)
    if cfg is None:
        return 2
    print(f"{args.config}: OK ({len(cfg.sources)} sources, output {cfg.output.path})")
    return 0


def _cmd_run(args: argparse.Namespace, beam_args: list[str]) -> int:
    from apache_beam.options.pipeline_options import PipelineOptions

    from pipelines.build_mix import MixOptions, execute, exit_code
    from transforms.blend import PlanError

    cfg = _checked_config(args.config)
    if cfg is None:
        return 2
    run_id = PipelineOptions(beam_args).view_as(MixOptions).run_id
    try:
        return exit_code(lambda: execute(cfg, beam_args, run_id))
    except PlanError as err:
        print(str(err), file=sys.stderr)
        return 3


def _cmd_plan(args: argparse.Namespace, beam_args: list[str]) -> int:
    from pipelines.build_mix import format_plan, run_plan
    from transforms.blend import PlanError

    cfg = _checked_config(args.config)
    if cfg is None:
        return 2
    try:
        plan = run_plan(cfg, beam_args)
    except PlanError as err:
        print(str(err), file=sys.stderr)
        return 3
    print("\n".join(format_plan(plan)))
    print(f"plan written to {cfg.output.path.rstrip('/')}/plan.json (no shards written)")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from pipelines.report import write_report_html

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

    run_classify(
        args.model,
        args.input,
        args.output,
        args.shards,
        beam_args,
        args.id_field,
        args.text_field,
    )
    print(f"classified documents written to {args.output}")
    return 0


def _cmd_dedup(args: argparse.Namespace, beam_args: list[str]) -> int:
    from pipelines.build_mix import exit_code
    from pipelines.stages import run_dedup

    cfg = DedupConfig(
        threshold=args.threshold,
        ngram=args.ngram,
        num_perm=args.num_perm,
        seed=args.seed,
        max_rounds=args.max_rounds,
        previous_index=args.previous_index or [],
    )

    def job() -> int:
        run_dedup(args.input, args.output, cfg, args.shards, beam_args, args.id_field, args.text_field)
        print(f"kept documents and ledger written to {args.output}")
        return 0

    return exit_code(job)


def _cmd_train(args: argparse.Namespace) -> int:
    from pipelines.train_classifier import load_params, train
    from schemas.taxonomy import load_taxonomy

    card = train(
        args.data,
        args.output,
        load_params(args.params),
        load_taxonomy(args.taxonomy),
        eval_data=args.eval_data or (),
        exclude=args.eval_data or (),
    )
    print(
        json.dumps(
            {"model": args.output, "labels": card["labels"], "evaluation": card["evaluation"]}, indent=2
        )
    )
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from pipelines.train_classifier import evaluate, on_unseen_pages, pr_curves, read_labeled
    from schemas.config import ClassifierConfig
    from schemas.taxonomy import label_scores_of
    from transforms.classify import (
        effective_thresholds,
        load_fasttext,
        read_model_card,
        resolve_taxonomy,
        score_documents,
    )

    cfg = ClassifierConfig(model=args.model, taxonomy=args.taxonomy)
    card = read_model_card(args.model)
    thresholds = effective_thresholds(cfg, card)
    taxonomy = resolve_taxonomy(cfg, card)
    model = load_fasttext(args.model)
    records = read_labeled(args.data)
    if args.skip_pages_of:
        records = on_unseen_pages(records, read_labeled(args.skip_pages_of))
    scores = score_documents(
        model, [r["text"] for r in records], cfg.chunk_chars, cfg.aggregate, label_scores_of(card)
    )
    result = evaluate(model, records, thresholds, taxonomy, scores)
    if args.pr_curves:
        result["pr_curves"] = pr_curves(records, scores, thresholds, taxonomy, args.pr_curves)
    print(json.dumps(result, indent=2, sort_keys=True))
    return 0


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="tropemix", description="Measure and rebalance AI-narrative tropes in training mixes."
    )
    sub = top.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="run the full mix DAG; unknown flags are Beam options")
    p.add_argument("config")
    p = sub.add_parser("plan", help="count the sources and print the blend plan; writes no shards")
    p.add_argument("config")
    p = sub.add_parser("validate", help="check a config and its input paths without reading data")
    p.add_argument("config")
    p = sub.add_parser("report", help="regenerate report.html from a run's report.json and manifest.json")
    p.add_argument("run_dir", help="the run's output.path, local or gs://")

    for name, help_text in (("classify", "classify documents only"), ("dedup", "deduplicate documents only")):
        p = sub.add_parser(name, help=help_text)
        p.add_argument(
            "--input", required=True, help="JSONL(.gz/.zst), Parquet, WARC or WET glob, local or gs://"
        )
        p.add_argument("--output", required=True, help="output directory")
        p.add_argument("--shards", type=int, default=1)
        p.add_argument("--id-field", default="id")
        p.add_argument("--text-field", default="text")
        if name == "classify":
            p.add_argument("--model", required=True)
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

    p = sub.add_parser("train-classifier", help="train the fastText trope model")
    p.add_argument("--data", nargs="+", required=True, help="labeled JSONL files")
    p.add_argument("--params", help="YAML hyperparameters (see models/train.yaml)")
    p.add_argument("--output", required=True, help="model path, e.g. models/tropes-v0.ftz")
    p.add_argument("--taxonomy", help="taxonomy YAML (default: the shipped schemas/taxonomy.yaml)")
    p.add_argument(
        "--eval-data", nargs="*", help="held-out labeled JSONL: evaluated after training, never trained on"
    )
    p = sub.add_parser("eval-classifier", help="per-label and per-narrative P/R/F1 as JSON")
    p.add_argument("--model", required=True)
    p.add_argument("--data", nargs="+", required=True)
    p.add_argument("--taxonomy", help="taxonomy YAML (default: the model card's)")
    p.add_argument("--pr-curves", metavar="DIR", help="write one precision-recall PNG per label here")
    p.add_argument(
        "--skip-pages-of",
        nargs="*",
        metavar="TRAIN.jsonl",
        help="score only records whose page (the id before ':') no record of these files has",
    )
    return top


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
    except ConfigError as err:
        print(str(err), file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
