"""Trope classification with fastText, and the per-narrative and per-label policy.

Documents are classified in batches: each batch's chunks go to one ``predict`` call.
The model loads once per worker process in ``setup`` through ``Shared``, so the
threads of a process share one copy; a ``gs://`` model is copied to local disk once
and checked against the sha256 of its model card.  The taxonomy comes from
``classifier.taxonomy``, else from the model card, else the shipped default.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.utils import shared

from schemas.config import ClassifierConfig, PolicyRule
from schemas.records import Document
from schemas.taxonomy import (
    DEFAULT_TAXONOMY,
    LabelScores,
    Taxonomy,
    fired_labels,
    label_scores_of,
    load_taxonomy,
    narrative_of,
    parse_taxonomy,
)
from transforms.accounting import ledger_drop
from transforms.logs import stage_logger
from transforms.progress import ProgressTicker
from transforms.text import chunk_text, fasttext_text, unit_interval

NAMESPACE = "tropemix.classify"
POLICY_NAMESPACE = "tropemix.policy"
DROPPED = "dropped"
LABEL_PREFIX = "__label__"
_LOG = stage_logger("classify")


class ModelChecksumError(RuntimeError):
    """The model file does not match the sha256 in its model card."""


def model_card_path(model_path: str) -> str:
    """``models/tropes.ftz`` -> ``models/tropes.card.json``."""
    stem, _ = os.path.splitext(model_path)
    return stem + ".card.json"


def _sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_model_card(model_path: str) -> dict[str, Any]:
    """The model card next to ``model_path``, or an empty dict when there is none."""
    card_path = model_card_path(model_path)
    if not FileSystems.exists(card_path):
        return {}
    with FileSystems.open(card_path) as f:
        card: dict[str, Any] = json.loads(f.read().decode("utf-8"))
        return card


def effective_thresholds(cfg: ClassifierConfig, card: dict[str, Any]) -> dict[str, float]:
    """Per-label thresholds: the model card's, overridden by the config's.

    Args:
      cfg: classifier config; its ``thresholds`` win, ``default`` covers unlisted labels.
      card: the model card (may be empty).
    """
    merged = dict(card.get("thresholds", {}))
    merged.update(cfg.thresholds)
    merged.setdefault("default", 0.5)
    return merged


def resolve_taxonomy(cfg: ClassifierConfig, card: dict[str, Any]) -> Taxonomy:
    """The taxonomy a run uses: the config's file, else the model card's, else the default.

    Labels named by ``cfg.label_policy`` must exist in it.

    Args:
      cfg: classifier config.
      card: the model card (may be empty).
    """
    if cfg.taxonomy:
        taxonomy = load_taxonomy(cfg.taxonomy)
    elif "taxonomy" in card:
        taxonomy = parse_taxonomy(card["taxonomy"], model_card_path(cfg.model))
    else:
        taxonomy = DEFAULT_TAXONOMY
    unknown = sorted(set(cfg.label_policy) - set(taxonomy.scored_labels))
    if unknown:
        raise ValueError(
            f"classifier.label_policy: unknown label(s) {unknown}; use labels of the taxonomy "
            f"{taxonomy.scored_labels}"
        )
    return taxonomy


class UnverifiedModelError(ValueError):
    """A remote model without a model card checksum, used without ``--allow-unverified-model``."""


def model_cache_dir() -> str:
    """This user's model cache, ``$XDG_CACHE_HOME/tropemix/models`` (``~/.cache`` by default), mode 0700.

    A shared, predictable directory such as ``/tmp/tropemix-models`` would let another
    user plant a model there; this one belongs to the user and nobody else can enter it.

    Raises:
      PermissionError: the directory exists but belongs to another user.
    """
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    path = os.path.join(base, "tropemix", "models")
    os.makedirs(path, mode=0o700, exist_ok=True)
    info = os.stat(path)
    if info.st_uid != os.getuid():
        raise PermissionError(
            f"model cache {path} belongs to another user; set XDG_CACHE_HOME to your own directory"
        )
    if info.st_mode & 0o077:
        os.chmod(path, 0o700)
    return path


def localize_model(model_path: str, allow_unverified: bool = False) -> str:
    """Returns a local path of the model, copying a remote one once per machine and user.

    The copy is verified against the ``sha256`` of the model card; a remote model
    without one is refused unless ``allow_unverified``.

    Args:
      model_path: local path or any ``FileSystems`` URL such as ``gs://``.
      allow_unverified: use a remote model whose card gives no checksum.

    Raises:
      UnverifiedModelError: a remote model without a card checksum.
      ModelChecksumError: the model does not match its card.
    """
    expected = read_model_card(model_path).get("sha256")
    if "://" in model_path:
        if not expected and not allow_unverified:
            raise UnverifiedModelError(
                f"classifier.model {model_path} has no model card with a sha256 ({model_card_path(model_path)}); "
                "add the card written by `tropemix train-classifier`, or pass --allow-unverified-model"
            )
        # The card's checksum is part of the cache key: a new model at the same path is a new copy.
        digest = hashlib.sha256(f"{model_path}#{expected or ''}".encode()).hexdigest()[:16]
        local = os.path.join(model_cache_dir(), f"{digest}-{os.path.basename(model_path)}")
        if not os.path.exists(local) or (expected and _sha256_file(local) != expected):
            tmp = f"{local}.{os.getpid()}.part"
            with FileSystems.open(model_path) as src, open(tmp, "wb") as dst:
                for block in iter(lambda: src.read(1 << 20), b""):
                    dst.write(block)
            os.replace(tmp, local)
    else:
        local = model_path
    if expected and _sha256_file(local) != expected:
        raise ModelChecksumError(
            f"{model_path} does not match sha256 {expected} in {model_card_path(model_path)}"
        )
    return local


class _LoadedModel:
    """Holder for a fastText model; ``Shared`` needs a weak-referenceable object."""

    def __init__(self, model: Any) -> None:
        self.model = model


def load_fasttext(model_path: str, allow_unverified: bool = False) -> Any:
    """Loads a fastText model from a local or remote path (see ``localize_model``)."""
    import fasttext

    # fastText prints a deprecation warning to stderr on every load; it is harmless.
    fasttext.FastText.eprint = lambda *args, **kwargs: None
    return fasttext.load_model(localize_model(model_path, allow_unverified))


# fastText reports each label as p + 1e-5 (the smoothing of its log scores), so a label
# it gives no weight comes back as 1e-5.  Asking predict only for p >= PREDICT_FLOOR
# leaves those out: they score 0 instead of 1e-5, far below any usable threshold, and
# predict builds ~4 label strings per chunk instead of all 17 (15% less CPU per chunk).
PREDICT_FLOOR = 1.5e-5


def _score_matrix(model: Any, texts: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """Label names and a ``(texts, labels)`` probability matrix, from one ``predict`` call."""
    names = [label[len(LABEL_PREFIX) :] for label in model.get_labels()]
    column = {LABEL_PREFIX + name: j for j, name in enumerate(names)}
    matrix = np.zeros((len(texts), len(names)), dtype=np.float64)
    if texts:
        labels, probs = model.predict([fasttext_text(t) for t in texts], k=-1, threshold=PREDICT_FLOOR)
        # One scatter for the batch: per chunk, numpy's fancy indexing cost more than predict's output.
        rows = np.repeat(np.arange(len(texts)), [len(ls) for ls in labels])
        cols = [column[label] for ls in labels for label in ls]
        matrix[rows, cols] = np.concatenate(probs)
    return names, matrix


def combine_label_scores(
    names: list[str], matrix: np.ndarray, label_scores: LabelScores | None
) -> tuple[list[str], np.ndarray]:
    """Label scores from factor scores, per chunk, as the model card's ``label_scores`` says.

    A factorized model also predicts an actor factor ("an AI, robot or computer system
    acts") and one behaviour factor per trope ("someone does this", any actor).  Each
    factorized trope's score becomes ``combine(actor, behaviour)`` (``product``,
    ``min`` or ``geometric`` mean), or its maximum with the trope's own score when
    ``keep_direct``; the factor columns are then dropped.  Without ``label_scores`` (a
    card without the field) the scores are returned unchanged.

    Args:
      names: label names, one per column.
      matrix: ``(chunks, labels)`` probabilities.
      label_scores: the card's ``label_scores`` (``schemas.taxonomy.label_scores_of``).
    """
    if label_scores is None:
        return names, matrix
    column = {name: j for j, name in enumerate(names)}
    behaviours = label_scores.behaviours
    factors = {label_scores.actor, *behaviours.values()}
    missing = sorted((factors | set(behaviours)) - set(column))
    if missing:
        raise ValueError(f"the model card's label_scores names labels {missing} the model lacks")
    actor = matrix[:, column[label_scores.actor]]
    keep = [j for j, name in enumerate(names) if name not in factors]
    out = matrix[:, keep]
    position = {names[j]: i for i, j in enumerate(keep)}
    for label, factor in behaviours.items():
        behaviour = matrix[:, column[factor]]
        if label_scores.combine == "min":
            combined = np.minimum(actor, behaviour)
        elif label_scores.combine == "geometric":
            combined = np.sqrt(actor * behaviour)
        else:
            combined = actor * behaviour
        if label_scores.keep_direct:
            combined = np.maximum(combined, matrix[:, column[label]])
        out[:, position[label]] = combined
    return [names[j] for j in keep], out


def _as_dicts(names: list[str], matrix: np.ndarray) -> list[dict[str, float]]:
    return [dict(zip(names, row, strict=True)) for row in matrix.tolist()]


def predict_scores(
    model: Any, texts: Sequence[str], label_scores: LabelScores | None = None
) -> list[dict[str, float]]:
    """Probability of every label for each text, with one ``predict`` call.

    Args:
      model: a loaded fastText model.
      texts: raw texts; preprocessed here with the training preprocessing.
      label_scores: the model card's ``label_scores`` (see ``combine_label_scores``).
    """
    return _as_dicts(*combine_label_scores(*_score_matrix(model, texts), label_scores))


def score_documents(
    model: Any,
    texts: Sequence[str],
    chunk_chars: int,
    aggregate: str,
    label_scores: LabelScores | None = None,
) -> list[dict[str, float]]:
    """Scores documents chunk by chunk and aggregates chunk scores per document.

    All chunks of the batch go to one ``predict`` call; factor scores are combined per
    chunk (``label_scores``), then the per-document maximum or mean is one numpy
    ``reduceat`` over the chunk matrix.

    Args:
      model: a loaded fastText model.
      texts: document texts.
      chunk_chars: chunk size in characters.
      aggregate: ``max`` or ``mean`` over a document's chunks.
      label_scores: the model card's ``label_scores`` (see ``combine_label_scores``);
        None scores labels as predicted.
    """
    if not texts:
        return []
    chunks: list[str] = []
    starts: list[int] = []
    for text in texts:
        starts.append(len(chunks))
        chunks.extend(chunk_text(text, chunk_chars))
    names, matrix = combine_label_scores(*_score_matrix(model, chunks), label_scores)
    if aggregate == "max":
        per_doc = np.maximum.reduceat(matrix, starts, axis=0)
    else:
        counts = np.diff([*starts, len(chunks)])
        per_doc = np.add.reduceat(matrix, starts, axis=0) / counts[:, None]
    return _as_dicts(names, per_doc)


def annotate(
    doc: Document, scores: dict[str, float], thresholds: dict[str, float], taxonomy: Taxonomy
) -> Document:
    """Adds ``trope_scores``, ``tropes`` and ``narrative`` to a document.

    Args:
      doc: the document.
      scores: label -> probability, from the model (``trope_scores`` keeps the taxonomy's labels).
      thresholds: label -> threshold, with a ``default`` entry.
      taxonomy: label groups.
    """
    fired = fired_labels(scores, thresholds, thresholds.get("default", 0.5))
    # Only the taxonomy's labels: the model's helper labels (behaviour factors such as
    # ``act_coercion``) and ``none`` are inputs to the scores, not scores of the document.
    labels = set(taxonomy.scored_labels)
    scored = {k: round(v, 6) for k, v in sorted(scores.items()) if k in labels}
    out = dict(doc)
    out["trope_scores"] = scored
    out["tropes"] = [label for label in fired if label in taxonomy.trope_labels]
    out["narrative"] = narrative_of(fired, taxonomy, scores)
    return out  # type: ignore[return-value]


class _ClassifyBatchFn(beam.DoFn):
    def __init__(
        self, cfg: ClassifierConfig, taxonomy: Taxonomy | None, progress_dir: str | None = None
    ) -> None:
        self._cfg = cfg
        self._progress = ProgressTicker(progress_dir, "classify") if progress_dir else None
        self._given = taxonomy
        self._taxonomy = DEFAULT_TAXONOMY
        self._shared = shared.Shared()
        self._model: Any = None
        self._thresholds: dict[str, float] = {}
        self._label_scores: LabelScores | None = None
        self._batch = Metrics.distribution(NAMESPACE, "batch_size")
        self._docs = Metrics.counter(NAMESPACE, "docs")
        self._counters: dict[str, Any] = {}

    def setup(self) -> None:
        path = self._cfg.model
        allow = self._cfg.allow_unverified_model
        self._model = self._shared.acquire(lambda: _LoadedModel(load_fasttext(path, allow)), tag=path).model
        card = read_model_card(path)
        self._thresholds = effective_thresholds(self._cfg, card)
        self._label_scores = label_scores_of(card, model_card_path(path))
        self._taxonomy = self._given or resolve_taxonomy(self._cfg, card)
        _LOG.info("model loaded", model=path, labels=len(self._model.get_labels()))

    def finish_bundle(self) -> None:
        if self._progress:
            self._progress.flush()

    def process(self, batch: list[Document]) -> Iterator[Document]:
        self._batch.update(len(batch))
        scores = score_documents(
            self._model,
            [d["text"] for d in batch],
            self._cfg.chunk_chars,
            self._cfg.aggregate,
            self._label_scores,
        )
        self._docs.inc(len(batch))
        if self._progress:
            self._progress.tick(len(batch))
        for doc, s in zip(batch, scores, strict=True):
            out = annotate(doc, s, self._thresholds, self._taxonomy)
            self._counter(f"narrative.{out['narrative']}").inc()
            for label in out["tropes"]:
                self._counter(f"label.{label}").inc()
            yield out

    def _counter(self, name: str) -> Any:
        # Metrics.counter builds a new metric name on every call; one per document adds up.
        if name not in self._counters:
            self._counters[name] = Metrics.counter(NAMESPACE, name)
        return self._counters[name]


class ClassifyDocuments(beam.PTransform):
    """Adds trope scores, fired tropes and a narrative to every document.

    Args:
      cfg: classifier config (model, thresholds, batch size, chunking).
      taxonomy: label groups; by default ``resolve_taxonomy`` of the config and model card.
      progress_dir: local directory for the terminal progress line (``transforms/progress.py``).
    """

    def __init__(
        self, cfg: ClassifierConfig, taxonomy: Taxonomy | None = None, progress_dir: str | None = None
    ) -> None:
        super().__init__()
        self._cfg = cfg
        self._taxonomy = taxonomy
        if taxonomy is None and "://" not in cfg.model:
            # Fail at construction on a bad label_policy when the card is local; a
            # remote card is read on the workers only (job submission stays offline).
            self._taxonomy = resolve_taxonomy(cfg, read_model_card(cfg.model))
        self._progress_dir = progress_dir

    def expand(self, docs: beam.PCollection) -> beam.PCollection:
        return (
            docs
            | "Batch" >> beam.BatchElements(min_batch_size=8, max_batch_size=self._cfg.batch_size)
            | "Predict" >> beam.ParDo(_ClassifyBatchFn(self._cfg, self._taxonomy, self._progress_dir))
        )


def policy_decision(
    doc_id: str, key: str, rule: PolicyRule, seed: int, kind: str = "narrative"
) -> str | None:
    """Returns the drop reason of one policy rule for a document, or None when it keeps it.

    Downsampling keeps a document when a hash of the rule's key, the seed and the id
    falls under the rate, so the decision is the same on every run, runner and worker
    count, and rules of different keys sample independently.

    Args:
      doc_id: stable document id.
      key: the narrative or label the rule is for.
      rule: the policy rule.
      seed: classifier seed.
      kind: ``narrative`` or ``label``; prefixes the reason of a label rule.
    """
    name = key if kind == "narrative" else f"label_{key}"
    if rule.action == "drop":
        return f"narrative_{key}" if kind == "narrative" else name
    if rule.action == "downsample" and unit_interval("policy", seed, kind, key, doc_id) >= (rule.rate or 0.0):
        return f"downsampled_{name}"
    return None


def decide(doc: Document, cfg: ClassifierConfig) -> tuple[list[tuple[str, str]], str | None]:
    """Applies the narrative rule and the rules of every fired label to a document.

    Every rule is evaluated so each one is counted; the first drop reason (narrative
    first, then labels by name) is the document's.

    Args:
      doc: a classified document.
      cfg: classifier config with ``policy``, ``label_policy`` and ``seed``.

    Returns:
      ``(action, counter name)`` per applied rule, and the drop reason or None.
    """
    narrative = doc["narrative"]
    rules = [("narrative", narrative, cfg.rule(narrative))]
    rules += [
        ("label", label, cfg.label_policy[label])
        for label in doc.get("tropes", [])
        if label in cfg.label_policy
    ]
    applied: list[tuple[str, str]] = []
    reason: str | None = None
    for kind, key, rule in rules:
        applied.append((rule.action, f"{kind}.{key}"))
        drop = policy_decision(doc["id"], key, rule, cfg.seed, kind)
        if reason is None:
            reason = drop
    return applied, reason


class _PolicyFn(beam.DoFn):
    def __init__(self, cfg: ClassifierConfig) -> None:
        self._cfg = cfg

    def process(self, doc: Document) -> Iterable[Any]:
        rule = self._cfg.rule(doc["narrative"])
        Metrics.counter(POLICY_NAMESPACE, f"action.{rule.action}").inc()
        applied, reason = decide(doc, self._cfg)
        for action, name in applied:
            Metrics.counter(POLICY_NAMESPACE, f"rule.{action}.{name}").inc()
        if reason is None:
            Metrics.counter(POLICY_NAMESPACE, "kept").inc()
            yield doc
        else:
            Metrics.counter(POLICY_NAMESPACE, f"dropped.{reason}").inc()
            yield beam.pvalue.TaggedOutput(DROPPED, ledger_drop(doc, "policy", reason))


class ApplyPolicy(beam.PTransform):
    """Keeps, drops, downsamples or only tags documents by narrative and by fired label.

    Returns a ``DoOutputsTuple``: kept documents on the main output, ledger rows
    of dropped documents on ``dropped`` with the reason (``narrative_<n>``,
    ``downsampled_<n>``, ``label_<l>``, ``downsampled_label_<l>``).

    Args:
      cfg: classifier config holding the policies and their seed.
    """

    def __init__(self, cfg: ClassifierConfig) -> None:
        super().__init__()
        self._cfg = cfg

    def expand(self, docs: beam.PCollection) -> beam.pvalue.DoOutputsTuple:
        return docs | "Decide" >> beam.ParDo(_PolicyFn(self._cfg)).with_outputs(DROPPED, main="kept")
