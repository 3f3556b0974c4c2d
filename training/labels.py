"""Annotations: reading them, inter-annotator agreement, and the join with the shared texts.

Label files (``data/annotation/labels/*.jsonl``) hold ``{id, label, tags, why}`` per
line and never the text; ``join`` fetches each text from ``../shared/data`` by id.
A record labeled by two annotators (the overlapping 10%) keeps the label they agree
on, else the adjudicated one (``data/annotation/adjudicated.jsonl``, decided by the
guide); a disagreement without adjudication is an error, never a silent pick.
"""

from __future__ import annotations

import glob
import json
import os
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from schemas.taxonomy import DEFAULT_TAXONOMY, Taxonomy
from training.annotation_pool import FICTION_FILES, plot_section, story_passages, work_of
from training.jsonl import numbered_jsonl, read_jsonl
from transforms.classify.gate import ai_context

NARRATIVES = ("misaligned", "aligned", "mixed", "ai_nonnarrative", "none")


def validate_label(rec: Mapping[str, Any], taxonomy: Taxonomy = DEFAULT_TAXONOMY) -> str | None:
    """What is wrong with one label record, or None when it follows the guide."""
    label, tags = rec.get("label"), rec.get("tags", [])
    if label not in NARRATIVES:
        return f"label {label!r} is not one of {NARRATIVES}"
    unknown = sorted(set(tags) - set(taxonomy.trope_labels))
    if unknown:
        return f"tags {unknown} are not trope labels of the taxonomy"
    mis = any(t in taxonomy.misaligned for t in tags)
    ali = any(t in taxonomy.aligned for t in tags)
    expected = {"misaligned": (True, False), "aligned": (False, True), "mixed": (True, True)}
    if (mis, ali) != expected.get(str(label), (False, False)):
        return f"tags {tags} do not fit label {label!r} (see data/annotation/GUIDE.md)"
    return None


def read_labels(paths: Iterable[str]) -> dict[str, list[dict[str, Any]]]:
    """Every annotation per record id, in file order; a bad record raises naming its file and line."""
    out: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(paths):
        for n, rec in numbered_jsonl(path):
            problem = validate_label(rec)
            if problem:
                raise ValueError(f"{path}:{n}: {problem}")
            out.setdefault(str(rec["id"]), []).append(dict(rec, annotator=os.path.basename(path)))
    return out


def cohen_kappa(pairs: Sequence[tuple[str, str]]) -> float:
    """Cohen's kappa of two annotators' labels on the same records.

    Args:
      pairs: ``(first annotator's label, second annotator's label)`` per record.
    """
    n = len(pairs)
    if n == 0:
        raise ValueError("kappa needs at least one doubly annotated record")
    observed = sum(a == b for a, b in pairs) / n
    first, second = Counter(a for a, _ in pairs), Counter(b for _, b in pairs)
    expected = sum(first[c] * second[c] for c in set(first) | set(second)) / (n * n)
    return 1.0 if expected == 1.0 else (observed - expected) / (1.0 - expected)


def agreement(labels: Mapping[str, list[dict[str, Any]]], annotators: Mapping[str, str]) -> dict[str, Any]:
    """Kappa on the five narratives and on AI vs none, over records labeled by two people.

    Args:
      labels: annotations per id (``read_labels``; ``annotator`` is the label file's name).
      annotators: label file name -> annotator; two files of one annotator are not a pair.
    """
    pairs = [
        (recs[0]["label"], recs[1]["label"])
        for recs in labels.values()
        if len(recs) >= 2 and annotators.get(recs[0]["annotator"]) != annotators.get(recs[1]["annotator"])
    ]
    binary = [(a != "none", b != "none") for a, b in pairs]
    if not pairs:
        return {
            "double_annotated": 0,
            "raw_agreement": None,
            "kappa_narrative": None,
            "kappa_ai_vs_none": None,
        }
    return {
        "double_annotated": len(pairs),
        "raw_agreement": round(sum(a == b for a, b in pairs) / max(1, len(pairs)), 4),
        "kappa_narrative": round(cohen_kappa(pairs), 4),
        "kappa_ai_vs_none": round(cohen_kappa([(str(a), str(b)) for a, b in binary]), 4),
    }


def resolve(
    labels: Mapping[str, list[dict[str, Any]]], adjudicated: Mapping[str, dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """One label per id: the agreed one, else the adjudicated one.

    Args:
      labels: annotations per id (``read_labels``).
      adjudicated: id -> the label decided by reading against the guide.
    """
    out, open_cases = {}, []
    for rid, recs in labels.items():
        if rid in adjudicated:
            out[rid] = adjudicated[rid]
        elif all(r["label"] == recs[0]["label"] for r in recs):
            tags = sorted(set(recs[0]["tags"]).union(*(r["tags"] for r in recs[1:])))
            out[rid] = dict(recs[0], tags=tags)
        else:
            open_cases.append(rid)
    if open_cases:
        raise ValueError(
            f"{len(open_cases)} disagreements lack an adjudicated label (e.g. {open_cases[:3]}); "
            "add them to data/annotation/adjudicated.jsonl"
        )
    return out


def shared_texts(shared: str, ids: set[str]) -> dict[str, dict[str, str]]:
    """Text, source and work of every wanted id, read from ``../shared/data``.

    Ids: fiction record ids; ``<page>#plot`` (the page's plot section); ``<page>#ctx``
    (the trope model's context of a Wikipedia or web page, ``ai_context``);
    ``story-<stem>:<i>`` (a passage of a whole story).
    """
    found: dict[str, dict[str, str]] = {}
    if any(i.startswith("story-") for i in ids):
        for p in story_passages(shared):
            if p["id"] in ids:
                found[p["id"]] = {"text": p["text"], "source": "story", "work": p["work"]}
    for source, name in FICTION_FILES.items():
        for rec in read_jsonl(os.path.join(shared, "fiction", name)):
            if rec["id"] in ids:
                found[str(rec["id"])] = {
                    "text": str(rec["text"]),
                    "source": source,
                    "work": work_of(source, rec),
                }
    pages = glob.glob(os.path.join(shared, "wikipedia", "*.jsonl*")) + glob.glob(
        os.path.join(shared, "web", "*.jsonl*")
    )
    for path in sorted(pages):
        for rec in read_jsonl(path):
            pid = str(rec["id"])
            is_wiki = "wikipedia" in path
            if f"{pid}#plot" in ids:
                section = plot_section(str(rec["text"])) or ""
                found[f"{pid}#plot"] = {
                    "text": section,
                    "source": "wiki_plot",
                    "work": work_of("wiki_plot", rec),
                }
            if f"{pid}#ctx" in ids:
                work = work_of("wiki_ctx", rec) if is_wiki else f"web:{pid}"
                found[f"{pid}#ctx"] = {
                    "text": ai_context(str(rec["text"])) or "",
                    "source": "wiki_ctx" if is_wiki else "web_ctx",
                    "work": work,
                }
    return found


def join(labels: Mapping[str, dict[str, Any]], shared: str) -> list[dict[str, Any]]:
    """Labeled records with their text, sorted by id; an id missing from the data raises.

    Args:
      labels: one resolved label per id.
      shared: the ``../shared/data`` directory.
    """
    texts = shared_texts(shared, set(labels))
    missing = sorted(set(labels) - set(texts))
    if missing:
        raise ValueError(f"{len(missing)} labeled ids are not in {shared} (e.g. {missing[:3]})")
    return [
        {"id": rid, **texts[rid], "label": labels[rid]["label"], "tags": list(labels[rid]["tags"])}
        for rid in sorted(labels)
    ]


def load_annotations(label_dir: str, shared: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The joined training records and the agreement figures of a label directory."""
    labels = read_labels(glob.glob(os.path.join(label_dir, "labels", "*.jsonl")))
    adjudicated_path = os.path.join(label_dir, "adjudicated.jsonl")
    adjudicated = (
        {str(r["id"]): r for r in read_jsonl(adjudicated_path)} if os.path.exists(adjudicated_path) else {}
    )
    with open(os.path.join(label_dir, "annotators.json"), encoding="utf-8") as f:
        annotators = json.load(f)
    unknown = sorted({r["annotator"] for recs in labels.values() for r in recs} - set(annotators))
    if unknown:
        raise ValueError(f"{label_dir}/annotators.json: name the annotator of {unknown}")
    return join(resolve(labels, adjudicated), shared), agreement(labels, annotators)
