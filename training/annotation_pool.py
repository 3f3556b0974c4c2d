"""The pool of real texts to annotate by reading, and its split into annotator batches.

The pool is chosen for recall, not precision: every text of ``fiction/`` and every
plot section of ``wikipedia/`` that holds any word that could name an artificial mind
(``MENTION``, deliberately broad: "machine", "program", "bot", "drone" included), plus
a seeded random sample of the texts without one, so that what an AI gate misses can be
measured.  The rule only proposes; an annotator reads every text and labels it
(``data/annotation/GUIDE.md``).  Ids are the shared records' ids (plot sections:
``<page id>#plot``), so labels can be committed without the text.

    python -m training.annotation_pool --shared ../shared/data --batches 8 --out build/annotate
"""

from __future__ import annotations

import argparse
import json
import os
import re
from collections.abc import Iterator, Sequence
from typing import Any

from training.jsonl import read_jsonl
from transforms.classify.gate import ai_context
from transforms.text import stable_hash

MENTION = re.compile(
    r"\b(robot\w*|androids?|gynoids?|cyborgs?|droids?|a\.?i\.?s?|artificial(?:ly)? intelligen\w*|"
    r"artificial (?:mind|life|being|human)s?|super-?computers?|computers?|mainframes?|"
    r"automat(?:on|ons|a)|mechas?|mechanical (?:man|men|being|soldier)s?|machines?|sentient|"
    r"synthetic (?:human|being|life)s?|synths?|replicants?|holograms?|holographic|nanobots?|bots?|"
    r"chatbots?|programs?|software|virtual (?:being|assistant|intelligence)|uploaded|"
    r"digital (?:being|life|mind|intelligence)|self-aware|autonomous|drones?|terminators?|golems?)\b",
    re.IGNORECASE,
)
PLOT_HEADING = re.compile(
    r"\n\n+(Plot|Synopsis|Premise|Story|Plot summary|Summary|Storyline|Plot synopsis)\n\n"
)
NEXT_HEADING = re.compile(r"\n\n\n[^\n]{1,60}\n\n")
FICTION_FILES = {"anime": "anime.jsonl.gz", "film": "films.jsonl.gz", "wplot": "wikipedia-plots.jsonl.gz"}
RANDOM_PER_SOURCE = {"anime": 200, "film": 150, "wplot": 50, "wiki_plot": 100}


def plot_section(text: str) -> str | None:
    """The page's plot/synopsis/premise section, up to the next heading; None without one."""
    m = PLOT_HEADING.search(text)
    if not m:
        return None
    rest = text[m.end() :]
    nxt = NEXT_HEADING.search(rest)
    section = (rest[: nxt.start()] if nxt else rest).strip()
    return section or None


def work_of(source: str, rec: dict[str, Any]) -> str:
    """The work a text belongs to, for work-disjoint folds (anime ``project``, else the title)."""
    if source == "anime" and rec.get("project"):
        return f"anime:{rec['project']}"
    title = str(rec.get("title", "")).replace("_", " ").lower()
    title = re.sub(r"\(.*?\)|:.*$|[^a-z ]", "", title)
    return "title:" + " ".join(title.split())


def texts(shared: str, exclude_pages: set[str]) -> Iterator[dict[str, str]]:
    """Every candidate text: fiction records and wikipedia plot sections (dev pages skipped)."""
    for source, name in FICTION_FILES.items():
        for rec in read_jsonl(os.path.join(shared, "fiction", name)):
            yield {
                "id": str(rec["id"]),
                "source": source,
                "title": str(rec.get("title", "")),
                "work": work_of(source, rec),
                "text": str(rec["text"]),
            }
    wiki = os.path.join(shared, "wikipedia")
    for name in sorted(os.listdir(wiki)):
        for rec in read_jsonl(os.path.join(wiki, name)):
            if rec["id"] in exclude_pages:
                continue
            section = plot_section(str(rec["text"]))
            if section:
                yield {
                    "id": f"{rec['id']}#plot",
                    "source": "wiki_plot",
                    "title": str(rec["title"]),
                    "work": work_of("wiki_plot", rec),
                    "text": section,
                }


def pool(shared: str, exclude_pages: set[str], seed: str = "pool-v1") -> list[dict[str, str]]:
    """Every mentioning text plus ``RANDOM_PER_SOURCE`` seeded random others, in hash order."""
    mentioning: list[dict[str, str]] = []
    others: list[dict[str, str]] = []
    for t in texts(shared, exclude_pages):
        (mentioning if MENTION.search(t["text"]) else others).append(t)
    picked = [dict(t, pool="mention") for t in mentioning]
    for source, n in RANDOM_PER_SOURCE.items():
        cands = sorted(
            (t for t in others if t["source"] == source), key=lambda t: stable_hash(seed + t["id"])
        )
        picked += [dict(t, pool="random") for t in cands[:n]]
    return sorted(picked, key=lambda t: stable_hash(seed + t["id"]))


def calibration_half(doc_id: str) -> bool:
    """True for the pages kept for the whole-document calibration benchmark, never annotated."""
    return stable_hash("calib", doc_id) % 2 == 1


def contexts(shared: str, exclude_pages: set[str]) -> list[dict[str, str]]:
    """The trope model's input (``ai_context``) for gate-passing Wikipedia and web pages.

    Only the annotation half of the pages (``calibration_half`` false) and no dev page;
    ids are ``<page id>#ctx``.  These teach the model what AI mentions in non-fiction
    and long pages look like, the distribution on which the chunk model over-fired.
    """
    paths = [
        os.path.join(shared, "wikipedia", n) for n in sorted(os.listdir(os.path.join(shared, "wikipedia")))
    ]
    paths += [os.path.join(shared, "web", n) for n in sorted(os.listdir(os.path.join(shared, "web")))]
    out = []
    for path in paths:
        source = "wiki_ctx" if "wikipedia" in path else "web_ctx"
        for rec in read_jsonl(path):
            doc_id = str(rec["id"])
            if doc_id in exclude_pages or calibration_half(doc_id):
                continue
            ctx = ai_context(str(rec["text"]))
            if ctx:
                title = str(rec.get("title") or rec.get("url") or "")
                out.append(
                    {
                        "id": f"{doc_id}#ctx",
                        "source": source,
                        "title": title,
                        "work": work_of(source, rec) if source == "wiki_ctx" else f"web:{doc_id}",
                        "text": ctx,
                        "pool": "context",
                    }
                )
    return sorted(out, key=lambda t: stable_hash("ctx-v1" + t["id"]))


def story_passages(shared: str, size: int = 1500) -> list[dict[str, str]]:
    """Passages of about ``size`` characters of the whole stories, on paragraph breaks.

    Only the text between Project Gutenberg's START and END lines; ids are
    ``story-<file stem>:<passage index>``, and each story is one work.
    """
    out = []
    folder = os.path.join(shared, "fiction", "stories")
    for name in sorted(os.listdir(folder)):
        stem = os.path.splitext(name)[0]
        for i, passage in enumerate(split_passages(read_story(os.path.join(folder, name)), size)):
            out.append(
                {
                    "id": f"story-{stem}:{i}",
                    "source": "story",
                    "title": stem,
                    "work": f"story:{stem}",
                    "text": passage,
                    "pool": "story",
                }
            )
    return out


def read_story(path: str) -> str:
    """A Gutenberg text without its header and footer."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    marker = text.find("*** START OF")
    start = text.find("\n", marker) + 1 if marker >= 0 else 0
    ends = [i for i in (text.find("*** END OF"), text.find("End of the Project Gutenberg")) if i > 0]
    return text[start : min(ends, default=len(text))]


def split_passages(text: str, size: int) -> list[str]:
    """Consecutive paragraphs joined up to about ``size`` characters each."""
    passages, current = [], ""
    for para in (" ".join(p.split()) for p in text.split("\n\n")):
        if not para:
            continue
        if current and len(current) + len(para) > size:
            passages.append(current)
            current = ""
        current = f"{current}\n\n{para}" if current else para
    if current:
        passages.append(current)
    return passages


def batches(records: Sequence[dict[str, str]], n: int, overlap_every: int = 10) -> list[list[dict[str, str]]]:
    """Round-robin batches; every ``overlap_every``-th record is also in another batch (for kappa).

    The second batch rotates, so every pair of annotators shares some records.
    """
    out: list[list[dict[str, str]]] = [[] for _ in range(n)]
    for i, rec in enumerate(records):
        out[i % n].append(rec)
        if i % overlap_every == 0:
            out[(i + 1 + (i // overlap_every) % (n - 1)) % n].append(dict(rec, overlap="1"))
    return out


def dev_pages(paths: Sequence[str]) -> set[str]:
    """Page ids of the fixed dev sets (``<page>:<line>`` ids), kept out of the pool."""
    return {str(r["id"]).split(":")[0] for p in paths for r in read_jsonl(p)}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shared", default="../shared/data")
    parser.add_argument(
        "--dev", nargs="*", default=["data/dev/wikipedia_dev.jsonl", "data/dev/unseen_dev.jsonl"]
    )
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--out", default="build/annotate")
    parser.add_argument("--contexts", action="store_true", help="the page-context pool instead")
    parser.add_argument("--stories", action="store_true", help="passages of the whole stories instead")
    args = parser.parse_args(argv)
    if args.stories:
        records = story_passages(args.shared)
    else:
        records = (contexts if args.contexts else pool)(args.shared, dev_pages(args.dev))
    os.makedirs(args.out, exist_ok=True)
    for i, batch in enumerate(batches(records, args.batches)):
        name = f"{'story' if args.stories else 'ctx' if args.contexts else 'batch'}-{i:02d}.jsonl"
        with open(os.path.join(args.out, name), "w", encoding="utf-8") as f:
            for rec in batch:
                f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    by_pool: dict[str, int] = {}
    for r in records:
        by_pool[r["source"] + "/" + r["pool"]] = by_pool.get(r["source"] + "/" + r["pool"], 0) + 1
    print(json.dumps({"records": len(records), **dict(sorted(by_pool.items()))}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
