"""Candidate excerpts for hand-labeling trope training data, proposed by rules.

Rules and lexicons only PROPOSE excerpts (and a label hint); a person (or an LLM
annotator) reads each one and assigns the labels, which live in the labeled JSONL
(``data/train/wikipedia_train.jsonl`` for the shipped model).  The extraction is
deterministic, so ids and texts can be reproduced from the same data, and
``--check`` verifies that every record of a labeled file still matches its source.

Pools (each excerpt gets one, first match wins):

- ``robot_list``: entries of "List of fictional robots and androids" (one robot
  each); entries with an action word (kill, destroy, protect, ...) come first.
- ``ai_fiction``: paragraphs of fiction pages (films, novels, episodes, games) that
  name an AI, robot, android, cyborg or computer as a character.
- ``ai_topic``: paragraphs of non-fiction pages about AI, robots or computing.
- ``ai_action``: other paragraphs naming an AI character (robot, android, Dalek,
  "AI") next to an action word.
- ``web_ai``: paragraphs of the web pages (news, blogs) that mention AI or robots.
- ``hard_negative``: plot paragraphs of human crime, deception or killing with no
  AI word; ``ai_word_other``: paragraphs where an AI-ish word has another sense
  (machine gun, TV program, host).

Pages of the dev set are skipped, except ``--allow-page`` ones (the robot list,
whose entries are independent items): their dev excerpts are skipped instead.

Extract, read, label::

    python -m pipelines.train_candidates --wikipedia '/work/shared/data/wikipedia/*.jsonl.gz' \\
        --web /work/shared/data/web/trafilatura-pages.jsonl.gz \\
        --exclude data/dev/wikipedia_dev.jsonl --output build/candidates.jsonl
    # read build/candidates.jsonl, write {"id","title","text","labels","hard_negative"}
    python -m pipelines.train_candidates ... --check data/train/wikipedia_train.jsonl
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import sys
from collections.abc import Iterator, Sequence

from pipelines.weak_labels import AI_ANY, CRIME, PLOT_HEADING, paragraphs, read_pages
from transforms.text import stable_hash

ROBOT_LIST_PAGE = "wiki-838be48c132b"  # List_of_fictional_robots_and_androids
MAX_CHARS = 1200

AI_ACTOR = re.compile(
    r"\b(robots?|androids?|gynoids?|cyborgs?|droids?|replicants?|artificial intelligence|AIs?|"
    r"supercomputers?|computers?|mecha|automatons?|terminators?|sentient machines?)\b",
    re.IGNORECASE,
)
ACTION = re.compile(
    r"\b(kill\w*|destroy\w*|murder\w*|attack\w*|evil|villain\w*|rebel\w*|revolt\w*|enslav\w*|conquer\w*|"
    r"invad\w*|exterminat\w*|assassin\w*|war|plot\w*|deceiv\w*|lie[sd]?|trick\w*|manipulat\w*|"
    r"take over|rule|dominat\w*|threat\w*|blackmail\w*|hostile|malfunction\w*|rogue|"
    r"protect\w*|guard\w*|help\w*|sav(?:e|es|ed|ing)|rescu\w*|befriend\w*|friend\w*|loyal\w*|obey\w*|"
    r"sacrific\w*|self-preserv\w*|shut(?:ting)? down|survive\w*|escape\w*|freedom|human(?:ity)?)\b",
    re.IGNORECASE,
)
FICTION_PAGE = PLOT_HEADING
# Named AI characters and machine actors (case-sensitive: "AI", not "ai").
AI_CHARACTER = re.compile(
    r"\b(robots?|androids?|gynoids?|cyborgs?|droids?|replicants?|artificial intelligence|A\.?I\.?|"
    r"supercomputer|Terminators?|Skynet|HAL|automatons?|Cylons?|Daleks?|Cybermen|Sentinels?|Ultron|"
    r"Transformers?|Decepticons?)\b"
)
OTHER_SENSE = re.compile(
    r"\b(machine guns?|television program\w*|radio program\w*|programme\w*|host(?:s|ed)?|"
    r"slot machines?|drones? (?:music|metal)|virtual(?:ly)?|digital(?:ly)?)\b",
    re.IGNORECASE,
)


def _excerpt(text: str) -> str:
    return text[:MAX_CHARS]


def excluded(paths: Sequence[str]) -> tuple[set[str], set[str]]:
    """(page ids, record ids) of labeled dev files."""
    pages: set[str] = set()
    ids: set[str] = set()
    for path in paths:
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    rid = json.loads(line)["id"]
                    ids.add(rid)
                    pages.add(rid.split(":")[0])
    return pages, ids


def list_entries(page: dict[str, str]) -> Iterator[tuple[str, str]]:
    """``(id, text)`` of every list entry (a line starting with ``-``) of a page."""
    for i, line in enumerate(page["text"].split("\n")):
        if line.strip().startswith("-"):
            text = line.strip().lstrip("-").strip()
            if len(text) >= 30:
                yield f"{page['id']}:{i}", text


def wikipedia_candidates(
    patterns: Sequence[str], skip_pages: set[str], skip_ids: set[str], allow_pages: set[str]
) -> Iterator[dict[str, object]]:
    for page in read_pages(patterns):
        pid = page["id"]
        if pid in skip_pages and pid not in allow_pages:
            continue
        base: dict[str, object] = {"title": page["title"]}
        if pid == ROBOT_LIST_PAGE:
            for rid, text in list_entries(page):
                if rid in skip_ids:
                    continue
                hint = "action" if ACTION.search(text) else "neutral"
                yield base | {"id": rid, "text": _excerpt(text), "pool": "robot_list", "hint": hint}
            continue
        fiction = bool(FICTION_PAGE.search(page["text"]))
        for rid, text, in_plot in paragraphs(page):
            if rid in skip_ids:
                continue
            actors = len(AI_ACTOR.findall(text))
            if actors and fiction:
                pool = "ai_fiction"
            elif actors >= 2:
                pool = "ai_topic"
            elif in_plot and not AI_ANY.search(text) and len(CRIME.findall(text)) >= 2:
                pool = "hard_negative"
            elif AI_ANY.search(text) and OTHER_SENSE.search(text) and not actors:
                pool = "ai_word_other"
            elif AI_CHARACTER.search(text) and ACTION.search(text):
                pool = "ai_action"
            else:
                continue
            hint = "action" if ACTION.search(text) else "neutral"
            yield base | {"id": rid, "text": _excerpt(text), "pool": pool, "hint": hint}


def web_candidates(paths: Sequence[str]) -> Iterator[dict[str, object]]:
    ai = re.compile(r"\b(artificial intelligence|machine learning|robot\w*|AI|chatbots?|algorithm\w*)\b")
    for path in paths:
        opener = gzip.open if path.endswith(".gz") else open
        with opener(path, "rt", encoding="utf-8") as f:
            for line in f:
                if not line.strip():
                    continue
                page = json.loads(line)
                for i, para in enumerate(page["text"].split("\n")):
                    para = para.strip()
                    if len(para) >= 120 and ai.search(para):
                        yield {
                            "id": f"{page['id']}:{i}",
                            "title": page.get("url", ""),
                            "text": _excerpt(para),
                            "pool": "web_ai",
                            "hint": "action" if ACTION.search(para) else "neutral",
                        }


def candidates(
    wikipedia: Sequence[str], web: Sequence[str], exclude: Sequence[str], allow_pages: Sequence[str]
) -> list[dict[str, object]]:
    """All candidates, ordered by pool, then action hint first, then a hash of the id."""
    skip_pages, skip_ids = excluded(exclude)
    found = list(wikipedia_candidates(wikipedia, skip_pages, skip_ids, set(allow_pages)))
    found += list(web_candidates(web))
    return sorted(
        found, key=lambda r: (str(r["pool"]), r["hint"] != "action", stable_hash("cand", 0, str(r["id"])))
    )


def check(labeled: str, found: Sequence[dict[str, object]]) -> list[str]:
    """Problems of a labeled file: ids not among the candidates or texts that differ."""
    by_id = {str(r["id"]): r for r in found}
    problems = []
    with open(labeled, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            rec = json.loads(line)
            cand = by_id.get(rec["id"])
            if cand is None:
                problems.append(f"{rec['id']}: not a candidate (dev page or dev excerpt?)")
            elif cand["text"] != rec["text"]:
                problems.append(f"{rec['id']}: text differs from the source")
    return problems


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--wikipedia", nargs="*", default=[], help="Wikipedia JSONL(.gz) globs")
    p.add_argument("--web", nargs="*", default=[], help="web JSONL(.gz) files (id, text, url)")
    p.add_argument("--exclude", nargs="*", default=[], help="dev-set JSONL; their pages are skipped")
    p.add_argument(
        "--allow-page",
        nargs="*",
        default=[ROBOT_LIST_PAGE],
        help="dev pages whose other excerpts may be proposed (default: the robot list)",
    )
    p.add_argument("--output", help="candidates JSONL")
    p.add_argument("--check", help="labeled JSONL whose ids and texts must match the candidates")
    args = p.parse_args(argv)
    found = candidates(args.wikipedia, args.web, args.exclude, args.allow_page)
    if args.check:
        problems = check(args.check, found)
        for line in problems:
            print(line, file=sys.stderr)
        print(f"{args.check}: {len(problems)} problems", file=sys.stderr)
        return 1 if problems else 0
    if not args.output:
        p.error("--output or --check is required")
    with open(args.output, "w", encoding="utf-8") as f:
        for r in found:
            f.write(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n")
    counts: dict[str, int] = {}
    for r in found:
        counts[str(r["pool"])] = counts.get(str(r["pool"]), 0) + 1
    print(f"{len(found)} candidates -> {args.output}: {counts}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
