"""The classifier's policy: keep, drop, downsample or tag documents by narrative and label.

Downsampling is decided by a hash of the rule's key, the seed and the document id, so
the same documents are kept on every run, runner and worker count.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NamedTuple

import apache_beam as beam
from apache_beam.metrics import Metrics

from schemas.config import ClassifierConfig, PolicyRule
from schemas.records import Document
from transforms.report.counts import ledger_drop
from transforms.text import unit_interval

NAMESPACE = "tropemix.policy"
DROPPED = "dropped"


class PolicyResult(NamedTuple):
    """What ``ApplyPolicy`` returns: ``kept`` documents and ``dropped`` ledger rows."""

    kept: beam.PCollection
    dropped: beam.PCollection


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
        Metrics.counter(NAMESPACE, f"action.{rule.action}").inc()
        applied, reason = decide(doc, self._cfg)
        for action, name in applied:
            Metrics.counter(NAMESPACE, f"rule.{action}.{name}").inc()
        if reason is None:
            Metrics.counter(NAMESPACE, "kept").inc()
            yield doc
        else:
            Metrics.counter(NAMESPACE, f"dropped.{reason}").inc()
            yield beam.pvalue.TaggedOutput(DROPPED, ledger_drop(doc, "policy", reason))


class ApplyPolicy(beam.PTransform):
    """Keeps, drops, downsamples or only tags documents by narrative and by fired label.

    Returns a ``PolicyResult``: the ``kept`` documents and the ledger rows of the
    ``dropped`` ones with the reason (``narrative_<n>``, ``downsampled_<n>``,
    ``label_<l>``, ``downsampled_label_<l>``).

    Args:
      cfg: classifier config holding the policies and their seed.
    """

    def __init__(self, cfg: ClassifierConfig) -> None:
        super().__init__()
        self._cfg = cfg

    def expand(self, docs: beam.PCollection) -> PolicyResult:
        outputs = docs | "Decide" >> beam.ParDo(_PolicyFn(self._cfg)).with_outputs(DROPPED, main="kept")
        return PolicyResult(outputs.kept, outputs[DROPPED])
