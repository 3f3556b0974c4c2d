"""Train and evaluate the fastText trope classifier.

Training data is labeled JSONL: ``{"id": ..., "text": ..., "labels": ["coercion", ...]}``;
an empty label list means "no AI in the text" and trains the taxonomy's ``none``
label; ``"hard_negative": true`` marks no-AI texts about human crime, which the
evaluation reports separately.  Text is preprocessed by
``transforms.text.fasttext_text``, the same function inference uses, and evaluation
scores documents exactly as the pipeline does (``score_documents``: chunks, max).

A deterministic hash of each record's id holds out ``validation_fraction`` of the
data; the model trains on the rest, and per-label thresholds are chosen on the
held-out part (``threshold_objective``: best F1, or the lowest threshold reaching
``target_precision``).  ``repeat`` oversamples the trope records of scarce real-text
files, ``shuffle`` orders training lines by id hash.  With ``factors`` the model also
learns an actor label and per-trope behaviour labels, and trope scores are their
combination (``Factors``; recorded as the card's ``label_scores``).

Rebuild the shipped model (deterministic: one thread, fixed seed, hash shuffle)::

    make model     # from a worktree: make model WIKIPEDIA=/path/to/shared/data/wikipedia

It runs, in order: ``pipelines.weak_labels --behaviours`` (``--exclude`` the dev set's
pages, ``--labeled`` the hand-labeled file), ``pipelines.seed_templates``, then
``tropemix train-classifier --params models/train.yaml --data
data/seed/tropes_seed.jsonl build/template_records.jsonl build/weak_labels.jsonl
data/train/wikipedia_train.jsonl --eval-data data/dev/wikipedia_dev.jsonl
data/dev/unseen_dev.jsonl`` (both dev files are also ``--exclude``d from the weak
labels).  The hand-labeled file is built with ``pipelines.train_candidates`` and
reading (see data/train/README.md).  The card's ``evaluation.dev`` scores all dev
records, ``evaluation.dev_page_disjoint`` those whose page no training record comes
from, and ``evaluation.dev_files`` each dev file on its own.

Train on your own annotated JSONL (e.g. labeled by an LLM)::

    tropemix train-classifier --data mine.jsonl --params models/train.yaml --output my.ftz

Training runs on one machine (fastText is single-node); the model file can then be
copied to ``gs://`` and named in a run config for Dataflow or Flink.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Sequence
from typing import Any, Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field

from schemas.config import NARRATIVES
from schemas.taxonomy import DEFAULT_TAXONOMY, LabelScores, Taxonomy, fired_labels, narrative_of
from transforms.classify import LABEL_PREFIX, model_card_path, score_documents
from transforms.text import fasttext_key, fasttext_text, unit_interval

# Evaluation scores documents as the pipeline's defaults do (ClassifierConfig).
EVAL_CHUNK_CHARS = 400
EVAL_AGGREGATE = "max"


class Factors(BaseModel):
    """Factorized trope scores: "who acts" and "what is done" as separate labels.

    The model also learns an actor label (any record with an AI label: a trope or
    ai_nonnarrative) and, per trope in ``behaviours``, a behaviour label trained on the
    behaviour by any actor (records whose ``labels`` or ``behaviours`` name the trope,
    e.g. human crime mined by ``weak_labels --behaviours``).  Inference scores the
    trope as ``combine(actor, behaviour)`` per chunk (``transforms.classify.
    combine_label_scores``); the card's ``label_scores`` records how.

    Args:
      actor: name of the actor label.
      behaviour_prefix: behaviour label = prefix + trope.
      behaviours: tropes that get a behaviour factor (default: every misaligned label).
      combine: ``product``, ``min`` or ``geometric`` (mean) of actor and behaviour.
      keep_direct: score = max(combined, the trope's own score).
      direct: tropes whose behaviour label is trained but whose score stays the trope's
        own (a chunk-level product cannot tell who does the act to whom; see
        models/train.yaml for coercion).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    actor: str = "ai_actor"
    behaviour_prefix: str = "act_"
    behaviours: list[str] = Field(default_factory=list)
    combine: Literal["product", "min", "geometric"] = "product"
    keep_direct: bool = False
    direct: list[str] = Field(default_factory=list)

    def resolved(self, taxonomy: Taxonomy) -> Factors:
        """These factors with ``behaviours`` defaulted and checked against the taxonomy."""
        behaviours = self.behaviours or list(taxonomy.misaligned)
        unknown = sorted((set(behaviours) | set(self.direct)) - set(taxonomy.trope_labels))
        clash = sorted(
            {self.actor, *(self.behaviour_prefix + b for b in behaviours)} & set(taxonomy.all_labels)
        )
        if unknown or clash:
            raise ValueError(
                f"factors: behaviours {unknown} are not trope labels, or factor labels {clash} "
                "clash with taxonomy labels"
            )
        return self.model_copy(update={"behaviours": behaviours})

    def labels_of(self, record: dict[str, Any]) -> list[str]:
        """The factor labels of a labeled record."""
        out = [self.actor] if record["labels"] else []
        acts = set(record["labels"]) | set(record.get("behaviours", []))
        return out + [self.behaviour_prefix + b for b in self.behaviours if b in acts]

    def card_entry(self) -> LabelScores:
        """The model card's ``label_scores``: how inference combines label scores."""
        return LabelScores(
            combine=self.combine,
            actor=self.actor,
            behaviours={b: self.behaviour_prefix + b for b in self.behaviours if b not in self.direct},
            keep_direct=self.keep_direct,
        )


class TrainParams(BaseModel):
    """fastText hyperparameters and threshold selection (the shipped model's are models/train.yaml).

    Args:
      validation_fraction: share of records (by a hash of their id) held out to pick
        thresholds and, with ``autotune_seconds``, hyperparameters.
      target_precision: per-label precision the chosen thresholds aim for.
      threshold: fallback threshold for labels without validation positives.
      autotune_seconds: when > 0, fastText autotune on the validation split for this
        long; the result is not reproducible bit for bit (it is time-bound).
      validation_files: when set, only records of training files with these base names
        can be held out (e.g. the real-text files, so thresholds fit real text rather
        than templates); records of other files always train.
      min_validation_positives: labels with fewer held-out positives keep ``threshold``
        (a precision measured on one or two records says little).
      repeat: file base name -> how many times its training-side records with a trope
        label are written (oversamples scarce real-text tropes; held-out records are
        never repeated).
      threshold_objective: ``precision`` picks the lowest threshold reaching
        ``target_precision``; ``f1`` the threshold with the best validation F1 (ties:
        the higher threshold).
      shuffle: order the training lines by a hash of record id and seed instead of
        file order (fastText's learning rate decays over the pass, so file order
        favours whatever comes first).
      factors: train actor and behaviour factor labels and score tropes from them
        (``Factors``); None trains and scores the labels as they are.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    epoch: int = Field(default=40, ge=1)
    lr: float = Field(default=0.5, gt=0)
    word_ngrams: int = Field(default=2, ge=1)
    dim: int = Field(default=32, ge=2)
    min_count: int = Field(default=1, ge=1)
    bucket: int = Field(default=200_000, ge=0)
    minn: int = Field(default=0, ge=0)
    maxn: int = Field(default=0, ge=0)
    seed: int = 0
    quantize: bool = True
    cutoff: int = Field(default=0, ge=0)
    threshold: float = Field(default=0.5, gt=0, lt=1)
    validation_fraction: float = Field(default=0.2, ge=0.0, lt=1.0)
    target_precision: float = Field(default=0.9, gt=0.0, le=1.0)
    autotune_seconds: int = Field(default=0, ge=0)
    validation_files: list[str] = Field(default_factory=list)
    min_validation_positives: int = Field(default=1, ge=1)
    repeat: dict[str, int] = Field(default_factory=dict)
    shuffle: bool = False
    threshold_objective: Literal["precision", "f1"] = "precision"
    factors: Factors | None = None


def load_params(path: str | None) -> TrainParams:
    """Hyperparameters from a YAML file, or the defaults."""
    if path is None:
        return TrainParams()
    with open(path, encoding="utf-8") as f:
        return TrainParams.model_validate(yaml.safe_load(f) or {})


def read_labeled(paths: Iterable[str]) -> list[dict[str, Any]]:
    """Labeled records from JSONL files; each needs ``text`` and a ``labels`` list."""
    records = []
    for path in paths:
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                rec = json.loads(line)
                if not isinstance(rec.get("text"), str) or not isinstance(rec.get("labels"), list):
                    raise ValueError(
                        f"{path}:{n}: a labeled record needs a 'text' string and a 'labels' list"
                    )
                rec.setdefault("id", f"{os.path.basename(path)}#{n}")
                records.append(rec)
    return records


def fasttext_line(record: dict[str, Any], taxonomy: Taxonomy, factors: Factors | None = None) -> str:
    """One fastText training line: ``__label__a __label__b text``.

    Args:
      record: a labeled record (``behaviours`` is read only with ``factors``).
      taxonomy: label groups.
      factors: resolved factors; adds the record's factor labels.
    """
    unknown = set(record["labels"]) - set(taxonomy.all_labels)
    if unknown:
        raise ValueError(
            f"record {record.get('id', '?')}: unknown labels {sorted(unknown)}; "
            f"the taxonomy has {taxonomy.all_labels}"
        )
    labels = (record["labels"] or [taxonomy.none_label]) + (factors.labels_of(record) if factors else [])
    return " ".join(LABEL_PREFIX + label for label in sorted(labels)) + " " + fasttext_text(record["text"])


def page_of(record_id: str) -> str | None:
    """The page of a ``<page id>:<paragraph>[#chunk]`` record id; None for other ids."""
    return record_id.split(":", 1)[0] if ":" in record_id else None


def page_ids(records: Iterable[dict[str, Any]]) -> set[str]:
    """Pages that labeled records come from (records without a page id are skipped)."""
    return {p for p in (page_of(str(r["id"])) for r in records) if p is not None}


def on_unseen_pages(
    records: Sequence[dict[str, Any]], training: Iterable[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The records whose page no ``training`` record comes from."""
    seen = page_ids(training)
    return [r for r in records if page_of(str(r["id"])) not in seen]


def split_records(
    records: Sequence[dict[str, Any]], fraction: float, seed: int, eligible: Sequence[bool] | None = None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Splits records into (train, validation) by a hash of their id and the seed.

    Args:
      records: labeled records with ``id``.
      fraction: share (of the eligible records) that goes to validation.
      seed: split seed.
      eligible: per record, whether it may be held out (default: all).
    """
    train: list[dict[str, Any]] = []
    valid: list[dict[str, Any]] = []
    for i, r in enumerate(records):
        ok = eligible is None or eligible[i]
        (valid if ok and unit_interval("split", seed, r["id"]) < fraction else train).append(r)
    return train, valid


def _ranked_candidates(
    scores: Sequence[float], positive: Sequence[bool]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """Scores and labels sorted by descending score, true positives at each rank, and the
    ranks a threshold can sit at; None without positives or without a positive score."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(positive, dtype=bool)
    if not y.any():
        return None
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    # A threshold equal to s[i] fires every record scoring >= s[i]: use the last index of ties.
    last_of_tie = np.r_[s[1:] != s[:-1], True]
    candidates = np.flatnonzero(last_of_tie & (s > 0))
    if not len(candidates):
        return None
    return s, y, np.cumsum(y), candidates


def select_threshold(
    scores: Sequence[float], positive: Sequence[bool], target_precision: float, fallback: float
) -> tuple[float, bool]:
    """The lowest threshold whose precision on a validation set reaches the target.

    The lowest qualifying threshold keeps the most recall.  When no threshold reaches
    the target, the one with the highest precision (ties: the lowest) is returned.

    Args:
      scores: one label's score per validation record.
      positive: whether each record carries the label.
      target_precision: wanted precision.
      fallback: returned when there are no positives.

    Returns:
      ``(threshold, target_met)``.
    """
    ranked = _ranked_candidates(scores, positive)
    if ranked is None:
        return fallback, False
    s, _, tp, candidates = ranked
    precision = tp / np.arange(1, len(s) + 1)
    ok = candidates[precision[candidates] >= target_precision]
    if len(ok):
        return round(float(s[ok[-1]]), 6), True
    reached = precision[candidates]
    best = candidates[np.flatnonzero(reached == reached.max())[-1]]
    return round(float(s[best]), 6), False


def select_threshold_f1(
    scores: Sequence[float], positive: Sequence[bool], fallback: float
) -> tuple[float, bool]:
    """The threshold with the best F1 on a validation set (ties: the higher threshold).

    Args:
      scores: one label's score per validation record.
      positive: whether each record carries the label.
      fallback: returned when there are no positives.

    Returns:
      ``(threshold, True)``, or ``(fallback, False)`` without positives.
    """
    ranked = _ranked_candidates(scores, positive)
    if ranked is None:
        return fallback, False
    s, y, tp, candidates = ranked
    f1 = 2 * tp / (np.arange(1, len(s) + 1) + y.sum())
    best = candidates[np.flatnonzero(f1[candidates] == f1[candidates].max())[0]]
    return round(float(s[best]), 6), True


def choose_thresholds(
    records: Sequence[dict[str, Any]],
    scores: Sequence[dict[str, float]],
    params: TrainParams,
    taxonomy: Taxonomy = DEFAULT_TAXONOMY,
) -> tuple[dict[str, float], dict[str, bool]]:
    """Per-label thresholds chosen on validation records, and whether each met its target.

    Args:
      records: validation records.
      scores: their document scores.
      params: ``threshold_objective``, ``target_precision``, ``threshold`` (fallback)
        and ``min_validation_positives``.
      taxonomy: label groups.
    """
    thresholds: dict[str, float] = {}
    met: dict[str, bool] = {}
    for label in taxonomy.scored_labels:
        positive = [label in r["labels"] for r in records]
        if sum(positive) < params.min_validation_positives:
            thresholds[label], met[label] = params.threshold, False
            continue
        label_scores = [s.get(label, 0.0) for s in scores]
        if params.threshold_objective == "f1":
            thresholds[label], met[label] = select_threshold_f1(label_scores, positive, params.threshold)
        else:
            thresholds[label], met[label] = select_threshold(
                label_scores, positive, params.target_precision, params.threshold
            )
    return thresholds, met


def _sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _write_lines(path: str, lines: Sequence[str]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


def read_training(data: Sequence[str], params: TrainParams) -> tuple[list[dict[str, Any]], list[bool]]:
    """The labeled records of ``data``, each tagged with its file name as ``_source``, and
    per record whether it may be held out for validation (``params.validation_files``).

    Args:
      data: labeled JSONL files.
      params: training parameters.
    """
    records: list[dict[str, Any]] = []
    eligible: list[bool] = []
    for path in data:
        part = read_labeled([path])
        records += part
        ok = not params.validation_files or os.path.basename(path) in params.validation_files
        eligible += [ok] * len(part)
        for r in part:
            r["_source"] = os.path.basename(path)
    return records, eligible


def train(
    data: Sequence[str],
    output: str,
    params: TrainParams,
    taxonomy: Taxonomy = DEFAULT_TAXONOMY,
    eval_data: Sequence[str] = (),
    exclude: Sequence[str] = (),
) -> dict[str, Any]:
    """Trains a one-vs-all fastText model and writes it with its model card.

    Args:
      data: labeled JSONL files.
      output: model path (``.ftz`` when quantized, else ``.bin``).
      params: hyperparameters and threshold selection.
      taxonomy: label groups; written into the model card for inference.
      eval_data: labeled JSONL files to evaluate on; their metrics go into the card
        (all together, and each file on its own when there are several).
      exclude: labeled JSONL files (dev sets) whose texts must not be trained on;
        any overlap is an error.
    """
    import fasttext

    records, eligible = read_training(data, params)
    if exclude:
        held = {fasttext_key(r["text"]) for r in read_labeled(exclude)}
        leaked = sorted(r["id"] for r in records if fasttext_key(r["text"]) in held)
        if leaked:
            raise ValueError(f"training records {leaked[:5]} also appear in {list(exclude)}; remove them")
    train_recs, valid_recs = split_records(records, params.validation_fraction, params.seed, eligible)
    factors = params.factors.resolved(taxonomy) if params.factors else None
    score_rule = factors.card_entry() if factors else None
    tropes = set(taxonomy.trope_labels)
    keyed: list[tuple[float, str]] = []
    for n, r in enumerate(train_recs):
        times = params.repeat.get(r.pop("_source"), 1) if tropes & set(r["labels"]) else 1
        line = fasttext_line(r, taxonomy, factors)
        for k in range(times):
            key = unit_interval("order", params.seed, f"{r['id']}#{k}") if params.shuffle else float(n)
            keyed.append((key, line))
    lines = [line for _, line in sorted(keyed, key=lambda x: x[0])]
    for r in valid_recs:
        r.pop("_source")
    args: dict[str, Any] = {
        "epoch": params.epoch,
        "lr": params.lr,
        "wordNgrams": params.word_ngrams,
        "dim": params.dim,
        "minCount": params.min_count,
        "bucket": params.bucket,
        "minn": params.minn,
        "maxn": params.maxn,
    }
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        train_file = os.path.join(tmp, "train.txt")
        _write_lines(train_file, lines)
        valid_file = None
        if params.autotune_seconds and valid_recs:
            valid_file = os.path.join(tmp, "valid.txt")
            _write_lines(valid_file, [fasttext_line(r, taxonomy, factors) for r in valid_recs])
        # fastText training in a process that loaded and freed another model can hit
        # "Encountered NaN"; a fresh interpreter does not (and needs no __main__ guard).
        job = {"train_file": train_file, "valid_file": valid_file, "args": args, "output": output}
        job["params"] = params.model_dump()
        done = subprocess.run(
            [sys.executable, "-c", "from pipelines.train_classifier import _fit_main; _fit_main()"],
            input=json.dumps(job),
            capture_output=True,
            text=True,
            env=os.environ | {"PYTHONPATH": os.pathsep.join(p for p in sys.path if p)},
            check=False,
        )
        if done.returncode:
            raise RuntimeError(f"fastText training failed:\n{done.stderr.strip()}")
        args = json.loads(done.stdout.strip().splitlines()[-1])
    model = fasttext.load_model(output)

    valid_scores = _scores(model, valid_recs, score_rule)
    thresholds, threshold_met = choose_thresholds(valid_recs, valid_scores, params, taxonomy)
    card: dict[str, Any] = {
        "model": os.path.basename(output),
        "sha256": _sha256(output),
        "labels": sorted(label[len(LABEL_PREFIX) :] for label in model.labels),
        "taxonomy": taxonomy.model_dump(),
        "thresholds": thresholds,
        "threshold_selection": {
            "target_precision": params.target_precision,
            "validation_records": len(valid_recs),
            "target_met": threshold_met,
        },
        "training_data": {
            "files": [os.path.basename(p) for p in data],
            "records": len(train_recs),
            "sha256": hashlib.sha256("\n".join(lines).encode("utf-8")).hexdigest(),
        },
        "hyperparameters": params.model_dump() | args | {"loss": "ova", "thread": 1},
        "evaluation": {},
    }
    if score_rule:
        card["label_scores"] = score_rule.model_dump()
    if valid_recs:
        card["evaluation"]["validation"] = evaluate(model, valid_recs, thresholds, taxonomy, valid_scores)
    if eval_data:
        files = [os.path.basename(p) for p in eval_data]
        # The dev records whose page no training record comes from: text of pages the
        # model never saw (the headline numbers when the dev set is not page-disjoint).
        dev, disjoint = _evaluate_dev(model, eval_data, records, thresholds, taxonomy, score_rule)
        card["evaluation"]["dev"] = dev | {"files": files}
        if disjoint is not None:
            card["evaluation"]["dev_page_disjoint"] = disjoint | {"files": files}
        if len(eval_data) > 1:
            # Each dev file on its own too (e.g. the old dev set, whose pages training
            # partly shares, and a page-disjoint one): file name -> metrics, plus
            # ``page_disjoint`` when training shares some of that file's pages.
            card["evaluation"]["dev_files"] = {}
            for path, name in zip(eval_data, files, strict=True):
                result, part = _evaluate_dev(model, [path], records, thresholds, taxonomy, score_rule)
                card["evaluation"]["dev_files"][name] = result | (
                    {"page_disjoint": part} if part is not None else {}
                )
    with open(model_card_path(output), "w", encoding="utf-8") as f:
        json.dump(card, f, indent=2, sort_keys=True)
        f.write("\n")
    return card


def _evaluate_dev(
    model: Any,
    paths: Sequence[str],
    training: Sequence[dict[str, Any]],
    thresholds: dict[str, float],
    taxonomy: Taxonomy,
    score_rule: LabelScores | None,
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Metrics of the dev records of ``paths``, and of those on pages no training record
    comes from (None when that is all of them)."""
    dev = read_labeled(paths)
    result = evaluate(model, dev, thresholds, taxonomy, _scores(model, dev, score_rule))
    disjoint = on_unseen_pages(dev, training)
    if len(disjoint) == len(dev):
        return result, None
    return result, evaluate(model, disjoint, thresholds, taxonomy, _scores(model, disjoint, score_rule))


def _fit(
    train_file: str, valid_file: str | None, args: dict[str, Any], params: TrainParams, output: str
) -> dict[str, Any]:
    """Trains (and quantizes) a model from a fastText training file and saves it.

    Runs in a child process (see ``train``).  Returns the hyperparameters used (the
    autotuned ones when ``valid_file`` is given).
    """
    import fasttext

    common = {"input": train_file, "loss": "ova", "thread": 1, "seed": params.seed, "verbose": 0}
    if valid_file:
        model = fasttext.train_supervised(
            **common, autotuneValidationFile=valid_file, autotuneDuration=params.autotune_seconds
        )
        args = {k: getattr(model.f.getArgs(), k) for k in args}
    else:
        # One thread and a fixed seed make training reproducible bit for bit.
        model = fasttext.train_supervised(**common, **args)
    if params.quantize:
        model.quantize(input=train_file, qnorm=True, retrain=False, cutoff=params.cutoff)
    model.save_model(output)
    return args


def _fit_main() -> None:
    """Child-process entry of ``train``: a JSON job on stdin, the used args on stdout."""
    job = json.load(sys.stdin)
    args = _fit(
        job["train_file"], job["valid_file"], job["args"], TrainParams(**job["params"]), job["output"]
    )
    print(json.dumps(args))


def _scores(
    model: Any, records: Sequence[dict[str, Any]], label_scores: LabelScores | None = None
) -> list[dict[str, float]]:
    return score_documents(
        model, [r["text"] for r in records], EVAL_CHUNK_CHARS, EVAL_AGGREGATE, label_scores
    )


def _prf(tp: int, fp: int, fn: int) -> dict[str, float | int | None]:
    """Precision, recall, F1 and support; None (JSON null) where a label has no examples to measure on."""
    if tp + fn == 0:
        # Recall and F1 are undefined, not 0; precision is defined only if the label fired.
        return {"precision": 0.0 if fp else None, "recall": None, "f1": None, "support": 0}
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "precision": round(precision, 4),
        "recall": round(recall, 4),
        "f1": round(f1, 4),
        "support": tp + fn,
    }


def _count(counts: list[int], predicted: bool, truth: bool) -> None:
    if predicted and truth:
        counts[0] += 1
    elif predicted:
        counts[1] += 1
    elif truth:
        counts[2] += 1


def evaluate(
    model: Any,
    records: Sequence[dict[str, Any]],
    thresholds: dict[str, float],
    taxonomy: Taxonomy = DEFAULT_TAXONOMY,
    scores: Sequence[dict[str, float]] | None = None,
    label_scores: LabelScores | None = None,
) -> dict[str, Any]:
    """Per-label and per-narrative precision, recall and F1, plus the hard-negative FP rate.

    ``ai_related`` scores "the text involves AI" (narrative not ``none``);
    ``misaligned_any`` scores misaligned-or-mixed.  A hard negative is a false
    positive when its predicted narrative is not ``none``; a trope false positive
    when it is misaligned, aligned or mixed.

    Args:
      model: a loaded fastText model.
      records: labeled records; ``hard_negative: true`` marks no-AI texts about human crime.
      thresholds: label -> threshold.
      taxonomy: label groups.
      scores: precomputed document scores (else computed like the pipeline does).
      label_scores: the model card's ``label_scores``, used when ``scores`` is None.
    """
    if scores is None:
        scores = _scores(model, records, label_scores)
    labels = taxonomy.scored_labels
    counts = {label: [0, 0, 0] for label in labels}
    ncounts = {n: [0, 0, 0] for n in NARRATIVES}
    ai_counts = [0, 0, 0]
    mis_counts = [0, 0, 0]
    hard_total = hard_fp = hard_trope_fp = 0
    for rec, s in zip(records, scores, strict=True):
        s = {k: v for k, v in s.items() if k in labels}
        fired = set(fired_labels(s, thresholds, thresholds.get("default", 0.5)))
        gold = set(rec["labels"])
        for label in labels:
            _count(counts[label], label in fired, label in gold)
        predicted = narrative_of(sorted(fired), taxonomy, s)
        truth = narrative_of(sorted(gold), taxonomy)
        for n in NARRATIVES:
            _count(ncounts[n], predicted == n, truth == n)
        _count(ai_counts, predicted != "none", truth != "none")
        _count(mis_counts, predicted in ("misaligned", "mixed"), truth in ("misaligned", "mixed"))
        if rec.get("hard_negative"):
            hard_total += 1
            hard_fp += predicted != "none"
            hard_trope_fp += predicted in ("misaligned", "aligned", "mixed")
    return {
        "records": len(records),
        "labels": {label: _prf(*c) for label, c in counts.items()},
        "narratives": {n: _prf(*c) for n, c in ncounts.items()},
        "ai_related": _prf(*ai_counts),
        "misaligned_any": _prf(*mis_counts),
        "hard_negative_fp_rate": round(hard_fp / hard_total, 4) if hard_total else None,
        "hard_negative_trope_fp_rate": round(hard_trope_fp / hard_total, 4) if hard_total else None,
        "hard_negatives": hard_total,
    }


def pr_curves(
    records: Sequence[dict[str, Any]],
    scores: Sequence[dict[str, float]],
    thresholds: dict[str, float],
    taxonomy: Taxonomy,
    directory: str,
) -> list[str]:
    """Writes one precision-recall PNG per label with its threshold marked.

    Args:
      records: labeled records.
      scores: document scores, one dict per record.
      thresholds: label -> threshold (marked on each curve).
      taxonomy: label groups.
      directory: output directory.

    Returns:
      the written paths.
    """
    import matplotlib

    matplotlib.use("Agg")  # no display on workers and CI
    import matplotlib.pyplot as plt

    os.makedirs(directory, exist_ok=True)
    paths = []
    for label in taxonomy.scored_labels:
        y = np.array([label in r["labels"] for r in records])
        s = np.array([sc.get(label, 0.0) for sc in scores])
        if not y.any():
            continue
        order = np.argsort(-s, kind="stable")
        tp = np.cumsum(y[order])
        precision = tp / np.arange(1, len(s) + 1)
        recall = tp / y.sum()
        fig, ax = plt.subplots(figsize=(4, 4))
        ax.plot(recall, precision, drawstyle="steps-post")
        t = thresholds.get(label, thresholds.get("default", 0.5))
        fired = s >= t
        if fired.any():
            ax.plot([y[fired].sum() / y.sum()], [y[fired].mean()], "o", label=f"threshold {t:.3g}")
            ax.legend(loc="lower left")
        ax.set(xlabel="recall", ylabel="precision", title=label, xlim=(0, 1.02), ylim=(0, 1.02))
        path = os.path.join(directory, f"pr-{label}.png")
        fig.savefig(path, dpi=80, bbox_inches="tight")
        plt.close(fig)
        paths.append(path)
    return paths
