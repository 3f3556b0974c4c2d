"""Trope classification with fastText, and the per-narrative and per-label policy.

Per batch: language identification (lid.176) on every document, the AI gate
(``transforms/classify/gate.py``), then one trope-model ``predict`` call over the AI
contexts of the documents that passed both.
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
from typing import Any, NamedTuple

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.utils import shared

from schemas.config import ClassifierConfig, PolicyRule
from schemas.records import Document
from schemas.taxonomy import (
    DEFAULT_TAXONOMY,
    Taxonomy,
    load_taxonomy,
    narrative_from_scores,
    parse_taxonomy,
    scores_from_softmax,
)
from transforms.classify.gate import MAX_WINDOWS, WHOLE_BELOW_CHARS, WINDOW_CHARS, ai_context
from transforms.classify.langid import LID_MODEL_PATH, identify, load_lid
from transforms.logs import stage_logger
from transforms.progress import ProgressTicker
from transforms.report.counts import ledger_drop
from transforms.text import fasttext_text, stable_hash, unit_interval

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


def load_fasttext(model_path: str, allow_unverified: bool = False) -> Any:
    """Loads a fastText model from a local or remote path (see ``localize_model``)."""
    import fasttext

    # fastText prints a deprecation warning to stderr on every load; it is harmless.
    fasttext.FastText.eprint = lambda *args, **kwargs: None
    return fasttext.load_model(localize_model(model_path, allow_unverified))


# fastText reports each label as p + 1e-5 (the smoothing of its log scores); asking
# predict only for p >= PREDICT_FLOOR leaves those out, so predict builds a few label
# strings per text instead of all of them.
PREDICT_FLOOR = 1.5e-5
SCORING = "narrative_softmax"

# Why a document did not reach the trope model (``route`` in counters and the docs).
ROUTE_LANGUAGE = "language"
ROUTE_GATE = "gate"
ROUTE_MODEL = "model"


class ContextParams(NamedTuple):
    """What the trope model reads of a document (``ai_gate.ai_context``), from the model card."""

    whole_below: int = WHOLE_BELOW_CHARS
    window_chars: int = WINDOW_CHARS
    max_windows: int = MAX_WINDOWS


def context_params(card: dict[str, Any]) -> ContextParams:
    """The context the card's model was trained on; the defaults for a card without one."""
    params = card.get("params", {})
    return ContextParams(
        *(params.get(f, d) for f, d in zip(ContextParams._fields, ContextParams(), strict=True))
    )


def check_card(card: dict[str, Any], model_path: str) -> None:
    """Refuses a model whose card does not say it scores narratives the way this code does."""
    if card.get("scoring") != SCORING:
        raise ValueError(
            f"{model_path}: its model card ({model_card_path(model_path)}) does not declare scoring "
            f"{SCORING!r}; retrain it with `tropemix train-classifier` (make model) or use models/tropes-v1.ftz"
        )


# Length buckets of the report's narrative-by-length table (characters).
LENGTH_BUCKETS = ((2000, "<2k"), (8000, "2k-8k"), (32000, "8k-32k"), (float("inf"), ">=32k"))


def length_bucket(chars: int) -> str:
    """The report's length bucket of a document of ``chars`` characters."""
    return next(name for limit, name in LENGTH_BUCKETS if chars < limit)


EXCERPT_CHARS = 400


def excerpt_of(text: str) -> str:
    """What the trope model read of a document (its AI context), else its start, cut at
    ``EXCERPT_CHARS``."""
    return (ai_context(text) or text)[:EXCERPT_CHARS]


class SampleExcerpts(beam.PTransform):
    """Up to ``n`` documents per narrative, chosen by a hash of their id (the same on every run).

    Returns one ``{narrative: [{id, source, excerpt}, ...]}`` dict.

    Args:
      n: excerpts per narrative.
    """

    def __init__(self, n: int) -> None:
        super().__init__()
        self._n = n

    def expand(self, docs: beam.PCollection) -> beam.PCollection:
        # The context is computed for the sampled documents only, not for every one.
        def as_dicts(pairs: list[tuple[str, list[tuple[int, str, str, str]]]]) -> dict[str, Any]:
            return {
                narrative: [{"id": i, "source": s, "excerpt": excerpt_of(t)} for _, i, s, t in sorted(rows)]
                for narrative, rows in sorted(pairs)
            }

        return (
            docs
            | "Key"
            >> beam.Map(
                lambda d: (d["narrative"], (stable_hash("excerpt", d["id"]), d["id"], d["source"], d["text"]))
            )
            | "Smallest" >> beam.combiners.Top.PerKey(self._n, key=lambda row: -row[0])
            | "AllNarratives" >> beam.combiners.ToList()
            | "AsDict" >> beam.Map(as_dicts)
        )


class Scored(NamedTuple):
    """One document's classification before thresholds: language, route and scores."""

    lang: str
    lang_score: float
    route: str
    scores: dict[str, float]


def score_documents(
    model: Any,
    lid: Any,
    texts: Sequence[str],
    languages: Sequence[str],
    context: ContextParams = ContextParams(),
    taxonomy: Taxonomy = DEFAULT_TAXONOMY,
    min_language_score: float = 0.0,
) -> list[Scored]:
    """Language, gate and trope scores of a batch, with one ``predict`` call per model.

    A document in another language, or one where the gate finds no AI mention, gets
    empty scores and its route; the rest go to the trope model through their bounded
    AI context, so the score of a long document does not grow with its length.

    Args:
      model: the trope model (fastText, narrative softmax).
      lid: the language-identification model (``transforms.classify.langid.load_lid``).
      texts: document texts.
      languages: language codes the trope model applies to.
      context: the context the model was trained on (``context_params``).
      taxonomy: trope labels.
      min_language_score: below this lid.176 probability the language counts as other.
    """
    langs = identify(lid, texts)
    out: list[Scored] = []
    todo: list[int] = []
    contexts: list[str] = []
    for i, (text, (lang, p)) in enumerate(zip(texts, langs, strict=True)):
        if lang not in languages or p < min_language_score:
            out.append(Scored(lang, p, ROUTE_LANGUAGE, {}))
            continue
        ctx = ai_context(text, *context)
        if ctx is None:
            out.append(Scored(lang, p, ROUTE_GATE, {}))
            continue
        out.append(Scored(lang, p, ROUTE_MODEL, {}))
        todo.append(i)
        contexts.append(fasttext_text(ctx))
    if contexts:
        labels, probs = model.predict(contexts, k=-1, threshold=PREDICT_FLOOR)
        for i, ls, ps in zip(todo, labels, probs, strict=True):
            raw = {label[len(LABEL_PREFIX) :]: float(p) for label, p in zip(ls, ps, strict=True)}
            out[i] = out[i]._replace(scores=scores_from_softmax(raw, taxonomy))
    return out


def annotate(doc: Document, scored: Scored, thresholds: dict[str, float], taxonomy: Taxonomy) -> Document:
    """Adds ``lang``, ``lang_score``, ``trope_scores``, ``tropes`` and ``narrative``.

    Args:
      doc: the document.
      scored: its language, route and scores (``score_documents``).
      thresholds: label -> threshold, with a ``default`` entry.
      taxonomy: label groups.
    """
    narrative, tropes = narrative_from_scores(scored.scores, thresholds, taxonomy)
    out = dict(doc)
    out["lang"] = scored.lang
    out["lang_score"] = scored.lang_score
    out["trope_scores"] = {k: round(v, 6) for k, v in sorted(scored.scores.items())}
    out["tropes"] = tropes
    out["narrative"] = narrative
    return out  # type: ignore[return-value]


class _Models:
    """Holder for the trope and language models; ``Shared`` needs a weak-referenceable object."""

    def __init__(self, trope: Any, lid: Any) -> None:
        self.trope = trope
        self.lid = lid


class _ClassifyBatchFn(beam.DoFn):
    def __init__(
        self, cfg: ClassifierConfig, taxonomy: Taxonomy | None, progress_dir: str | None = None
    ) -> None:
        self._cfg = cfg
        self._progress = ProgressTicker(progress_dir, "classify") if progress_dir else None
        self._given = taxonomy
        self._taxonomy = DEFAULT_TAXONOMY
        self._shared = shared.Shared()
        self._models: _Models | None = None
        self._thresholds: dict[str, float] = {}
        self._context = ContextParams()
        self._batch = Metrics.distribution(NAMESPACE, "batch_size")
        self._docs = Metrics.counter(NAMESPACE, "docs")
        self._counters: dict[str, Any] = {}

    def setup(self) -> None:
        path, lid_path = self._cfg.model, self._cfg.lid_model or LID_MODEL_PATH
        card = read_model_card(path)
        check_card(card, path)
        self._models = self._shared.acquire(
            lambda: _Models(
                load_fasttext(path, self._cfg.allow_unverified_model), load_lid(localize_model(lid_path))
            ),
            tag=f"{path}|{lid_path}",
        )
        self._thresholds = effective_thresholds(self._cfg, card)
        self._context = context_params(card)
        self._taxonomy = self._given or resolve_taxonomy(self._cfg, card)
        _LOG.info("model loaded", model=path, labels=len(self._models.trope.get_labels()))

    def finish_bundle(self) -> None:
        if self._progress:
            self._progress.flush()

    def process(self, batch: list[Document]) -> Iterator[Document]:
        assert self._models is not None
        self._batch.update(len(batch))
        scored = score_documents(
            self._models.trope,
            self._models.lid,
            [d["text"] for d in batch],
            self._cfg.languages,
            self._context,
            self._taxonomy,
            self._cfg.min_language_score,
        )
        self._docs.inc(len(batch))
        if self._progress:
            self._progress.tick(len(batch))
        for doc, s in zip(batch, scored, strict=True):
            out = annotate(doc, s, self._thresholds, self._taxonomy)
            self._counter(f"route.{s.route}").inc()
            self._counter(f"lang.{s.lang}").inc()
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
    """Adds language, trope scores, fired tropes and a narrative to every document.

    Documents outside ``classifier.languages`` and documents the AI gate stops are
    ``none`` with empty scores, counted as ``route.language`` and ``route.gate``.

    Args:
      cfg: classifier config (model, thresholds, languages, batch size).
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
            # Fail at construction on a bad card or label_policy when the card is local; a
            # remote card is read on the workers only (job submission stays offline).
            card = read_model_card(cfg.model)
            check_card(card, cfg.model)
            self._taxonomy = resolve_taxonomy(cfg, card)
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
