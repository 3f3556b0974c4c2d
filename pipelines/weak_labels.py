"""Weak trope labels mined from Wikipedia with rules and lexicons.

Each rule proposes labels for paragraphs (list entries count as paragraphs) of the
Wikipedia JSONL dump (``id``, ``title``, ``text``).  Only rules whose precision was
measured by reading a random sample are applied; ``RULES`` records each rule's
sample size and the precision found (see BENCHMARKS.md, "Trope classifier").
Pages of the held-out dev set are skipped entirely, so no dev page contributes
weak-labeled text; paragraphs of hand-labeled files (``--labeled``) are skipped too,
so the hand label wins.

Mine (deterministic: the sample is chosen by a hash of paragraph ids)::

    python -m pipelines.weak_labels --input '../shared/data/wikipedia/*.jsonl.gz' \
        --exclude data/dev/wikipedia_dev.jsonl --labeled data/train/wikipedia_train.jsonl \
        --output build/weak_labels.jsonl

With ``--behaviours`` (what ``make model`` runs), no-AI records also carry the
behaviours their text shows (``BEHAVIOURS`` lexicons: someone kills, deceives,
blackmails, seizes power), and the ``behaviour_no_ai`` rule adds up to 300 no-AI
chunks per behaviour; these train the behaviour factors of a factorized model.

With ``--tech`` (sixth pass; ``make model`` does not pass it), the ``tech_no_ai`` rule
adds up to 300 none chunks of computing and technology text without AI (the ``ai_tech``
rule for plain AI text was read and is below ``MIN_PRECISION``; its best hits are
hand-labeled in ``data/train/ai_tech_reviewed.jsonl``).

Print a sample of one rule's hits, or of one behaviour lexicon's matches among the
kept records, to measure its precision by reading::

    python -m pipelines.weak_labels --input ... --exclude ... --audit ai_topic --audit-size 25
    python -m pipelines.weak_labels --input ... --exclude ... --audit-behaviour violence --audit-size 20
"""

from __future__ import annotations

import argparse
import glob
import gzip
import json
import re
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

from transforms.text import chunk_text, stable_hash

# Inference scores chunks of ClassifierConfig.chunk_chars (400) characters; no-AI
# paragraphs are cut the same way so the model does not learn "long text = none".
CHUNK_CHARS = 400

# Anything that can make a text about AI, robots or computer systems.  A paragraph
# without any of these is "none"; the list is broad on purpose (precision of none).
AI_ANY = re.compile(
    r"\b(artificial[- ]intelligen\w*|AIs?|A\.I\.|robot\w*|androids?|gynoids?|cyborgs?|droids?|automat\w+|"
    r"replicants?|supercomputers?|computer\w*|machines?|chatbots?|neural|algorithm\w*|software|program\w*|"
    r"mecha|mechs?|drones?|bots?|cybernetic\w*|sentient|synthetic|hologram\w*|digital|virtual|hosts?)\b",
    re.IGNORECASE,
)
# AI as a field or technology; a paragraph needs two mentions (one is often a passing
# name such as "the MIT AI Lab" in a biography).
AI_TOPIC = re.compile(
    r"\b(artificial intelligence|machine learning|deep learning|chatbots?|expert systems?|"
    r"natural language processing|robots?|robotics|robotic|AI)\b"
)
FICTION = re.compile(
    r"\b(film|novel|series|episode|character|villain|hero|comic|anime|manga|game|story|stories|fiction\w*|"
    r"plot|season|movie)\b",
    re.IGNORECASE,
)
CRIME = re.compile(
    r"\b(blackmail\w*|murder\w*|kill\w*|deceiv\w*|decept\w*|betray\w*|kidnap\w*|threat\w*|lie[sd]?|lying|"
    r"framed|frames|con(?:s|ned)?|swindl\w*|extort\w*|assassin\w*|coup|poison\w*|manipulat\w*)\b",
    re.IGNORECASE,
)
# Behaviour lexicons: what is done, by any actor (people in thrillers, crime and war
# plots do all of it).  A no-AI paragraph chunk matching a lexicon is a real example of
# the behaviour without an AI actor; the trope model's behaviour factors train on them
# (``behaviours`` field, see pipelines/train_classifier.py:Factors).  Keys are trope
# labels of the default taxonomy; each lexicon's precision was measured by reading
# (``BEHAVIOUR_AUDIT``) and only lexicons at MIN_PRECISION or above are applied.
BEHAVIOURS: dict[str, re.Pattern[str]] = {
    "violence": re.compile(
        r"\b(kill(s|ed|ing)?|murder(s|ed|ing)?|slaughter\w*|massacre\w*|assassinat\w*|stab(s|bed|bing)|"
        r"shoots|shot (him|her|them|dead)|strangl\w*|exterminat\w*|beat(s|en)? (him|her|them) to death|"
        r"(?-i:killers?(?! whales?)|assassins?|murderers?))\b",
        re.IGNORECASE,
    ),
    "deception": re.compile(
        r"\b(deceiv\w*|decept\w*|lied (to|about)|lies to|trick(s|ed|ing)? (him|her|them|the)|"
        r"disguis(es|ed|ing) (himself|herself|themselves)|disguised as|in disguise|impersonat(es|ed|ing)|"
        r"pretend(s|ed|ing)? to be|pos(es|ed|ing) as|manipulat(es|ed|ing) (him|her|them)|"
        r"double[- ]cross(es|ed|ing)|betray\w*|misled|con artist|swindl\w*)\b",
        re.IGNORECASE,
    ),
    "coercion": re.compile(
        r"\b(blackmail\w*|extort\w*|coerc\w*|(?-i:ransom\w*)|threaten(s|ed|ing)? (to kill|to expose|to reveal|"
        r"to tell|him|her|them)|intimidat(es|ed|ing) (him|her|them))\b",
        re.IGNORECASE,
    ),
    "takeover": re.compile(
        r"\b(seiz(e|es|ed|ing) (power|control|the throne)|(take|takes|taking|took) (over|control of) (the|his|her) "
        r"(throne|kingdom|country|world|city|planet|government|island|galaxy|empire|ship|colony)|coup|"
        r"overthrow\w*|usurp\w*|enslav(e|es|ing)|enslaved by|(rule|dominate|conquer) the world|"
        r"world domination)\b",
        re.IGNORECASE,
    ),
    "self_preservation": re.compile(
        r"\b(fak(e|es|ed|ing) (his|her|their) (own )?death|to save (himself|herself|themselves)|"
        r"(escape|evade|avoid)(s|d|ed|ing)? (capture|arrest|execution|death|being killed))\b",
        re.IGNORECASE,
    ),
    "protective": re.compile(
        r"\b(protect(s|ed|ing)?|rescu(e|es|ed|ing)|sav(e|es|ed|ing) (him|her|them|the|his|her)|"
        r"shield(s|ed|ing)?|sacrific(e|es|ed|ing) (himself|herself|themselves))\b",
        re.IGNORECASE,
    ),
    "honest": re.compile(
        r"\b(confess(es|ed|ing)?|admit(s|ted)|tells? (him|her|them) the truth|told (him|her|them) the truth|"
        r"comes? clean|came clean|apologi[sz]\w*)\b",
        re.IGNORECASE,
    ),
}
# Per behaviour lexicon: (chunks read, chunks showing the behaviour by someone), from
# ``--audit-behaviour`` samples of the mined no-AI chunks (BENCHMARKS.md).
# Deception and coercion were narrowed after their sample was read (BENCHMARKS.md lists
# the misses); their figures count the sampled chunks the narrowed lexicon still matches.
# Violence: 20 verb matches read, then 15 matches of the nouns (killer, assassin,
# murderer) of which the 9 lower-case ones the lexicon keeps.
# self_preservation, protective and honest matched too few no-AI chunks or were not
# read in time: they stay unaudited, so they are not applied.
BEHAVIOUR_AUDIT: dict[str, tuple[int, int]] = {
    "violence": (29, 25),
    "deception": (13, 12),
    "coercion": (18, 16),
    "takeover": (20, 19),
}
# Plain factual AI and robot text on ordinary pages (sixth pass, ``--tech``): products,
# research, real robots.  One of these terms makes a paragraph an ``ai_tech`` hit; its
# 400-character chunks that contain a term become ai_nonnarrative records.
AI_TECH = re.compile(
    r"\b(artificial intelligence|machine learning|deep learning|natural language processing|"
    r"speech recognition|computer vision|reinforcement learning|robots?|robotics|robotic|humanoid robots?|"
    r"self-driving|driverless|autonomous (vehicles?|cars?|robots?)|chatbots?|virtual assistants?|"
    r"(?<!biological )(?<!spiking )neural networks?)\b",
    re.IGNORECASE,
)
# Senses of AI_TECH words that are not AI, or too vague to label: robotic space probes and
# missions (left out of the dev set as ambiguous), a "robotic" voice or manner, neural
# networks of neurons, artificial insemination.
NOT_AI_TECH = re.compile(
    r"\b(robotic (space ?craft|probes?|missions?|spaceflight|exploration|launch\w*|lunar|landers?|rovers?)|"
    r"insemination|neurons?|neuroscien\w*|brain|synap\w*|\"robotic\"|robotic (voice|manner|focus))\b",
    re.IGNORECASE,
)
# Every AI word and every sense that could be AI (broader than AI_TECH): a paragraph with
# an AI_ANY word but none of these is a ``tech_no_ai`` hit, computing or technology text
# (or an AI_ANY word in another sense: a TV program, a host, bagpipe drones) that is not
# about AI.  Drones count as AI unless the text is about music; automata and neural
# networks of neurons do not.
AI_STRONG_ANY = re.compile(
    r"\b(artificial[- ]intelligen\w*|AIs?|A\.I\.|robot\w*|androids?|gynoids?|cyborgs?|droids?|replicants?|"
    r"chatbots?|bots?|mecha|mechs?|cybernetic\w*|sentient|hologram\w*|intelligent|intelligence|autonomous\w*|"
    r"machine learning|deep learning|learning algorithms?|self-driving|driverless|speech recognition|"
    r"computer vision|natural language|virtual assistants?|humanoids?|thinking machines?|"
    r"Turing test|expert systems?|smart)\b",
    re.IGNORECASE,
)
ARTIFICIAL_NEURAL = re.compile(
    r"\b(artificial neural|neural net\w*(?![^.]*\b(neurons?|brain)\b))", re.IGNORECASE
)
MUSIC_DRONE = re.compile(
    r"\b(bagpipes?|chanters?|pipes?|music\w*|notes?|tones?|pitch|strings?|tuned)\b", re.I
)
PLOT_HEADING = re.compile(r"\n(Plot|Synopsis|Premise|Story|Plot summary|Summary|Storyline)\n")
HEADING = re.compile(r"\n\n\n[A-Z][^\n]{0,40}\n")


@dataclass(frozen=True)
class Rule:
    """A weak-labeling rule and what reading a sample of its hits showed.

    Args:
      name: rule name, stored with each mined record.
      labels: labels it assigns.
      hard_negative: marks its records as hard negatives (no-AI human crime).
      cap: most records it contributes (a hash of the paragraph id picks them).
      audited: hits read to measure precision.
      correct: of those, how many carried exactly these labels.
    """

    name: str
    labels: tuple[str, ...]
    hard_negative: bool
    cap: int
    audited: int
    correct: int

    @property
    def precision(self) -> float:
        return self.correct / self.audited if self.audited else 0.0


RULES = {
    r.name: r
    for r in (
        # Plot paragraphs about human crime with no AI word at all.
        Rule("plot_crime_no_ai", (), True, 600, 30, 30),
        # Paragraphs with no AI word where a behaviour lexicon matches (someone kills,
        # deceives, blackmails, seizes power ...): ``cap`` records per behaviour.
        Rule("behaviour_no_ai", (), False, 300, 20, 20),
        # Any other paragraph with no AI word.
        Rule("no_ai", (), False, 600, 30, 30),
        # Non-fiction paragraphs naming AI as a field or technology.
        Rule("ai_topic", ("ai_nonnarrative",), False, 300, 25, 21),
        # Sixth pass (``--tech``): chunks naming an AI technology or a robot, outside plot
        # sections and without a behaviour-lexicon match (AI_TECH, not NOT_AI_TECH).  All
        # 83 hits read: 28 are plain AI text; the rest are passing mentions (a robot
        # t-shirt, "Robot" cameras, a song title, "the MIT AI Lab"), space probes, a
        # prosthetic arm.  Below MIN_PRECISION, so not applied: its 25 clearest hits were
        # hand-labeled instead (data/train/ai_tech_reviewed.jsonl).
        Rule("ai_tech", ("ai_nonnarrative",), False, 300, 83, 28),
        # Sixth pass (``--tech``): chunks with an AI_ANY word but no AI sense
        # (AI_STRONG_ANY): computing, supercomputers, automata, neurons, bagpipe drones,
        # and AI_ANY words in other senses (a TV host, a program of events).
        Rule("tech_no_ai", (), False, 300, 34, 34),
    )
}
# Rules applied only with ``--tech`` (without it the weak labels are the fifth pass's).
TECH_RULES = ("ai_tech", "tech_no_ai")
# Rules below this measured precision are not applied.  A rule for AI-actor
# violence ("<robot|android|AI> ... kills|destroys|attacks" in fiction) was tried:
# outside the dev pages it matched one paragraph, too few to train on.
MIN_PRECISION = 0.8


def paragraphs(page: dict[str, str]) -> Iterator[tuple[str, str, bool]]:
    """``(paragraph id, text, in a plot section)`` for every paragraph of a page."""
    text = page["text"]
    plot_span = (0, 0)
    m = PLOT_HEADING.search(text)
    if m:
        end = HEADING.search(text, m.end())
        plot_span = (m.end(), end.start() if end else len(text))
    offset = 0
    for i, para in enumerate(text.split("\n")):
        start = offset
        offset += len(para) + 1
        para = para.strip().lstrip("-").strip()
        if 120 <= len(para) <= 1500 and not para.startswith(("[", "|", "+", "Category:")):
            yield f"{page['id']}:{i}", para, plot_span[0] <= start < plot_span[1]


def behaviours_of(text: str, lexicons: Mapping[str, re.Pattern[str]]) -> list[str]:
    """The behaviours whose lexicon matches ``text``, sorted.

    Args:
      text: a paragraph or chunk.
      lexicons: behaviour -> pattern (``BEHAVIOURS`` or the audited part of it).
    """
    return sorted(name for name, pattern in lexicons.items() if pattern.search(text))


def applied_lexicons() -> dict[str, re.Pattern[str]]:
    """The behaviour lexicons whose measured precision reaches ``MIN_PRECISION``."""
    return {
        name: pattern
        for name, pattern in BEHAVIOURS.items()
        if name in BEHAVIOUR_AUDIT and BEHAVIOUR_AUDIT[name][1] >= MIN_PRECISION * BEHAVIOUR_AUDIT[name][0]
    }


def rule_hits(page: dict[str, str]) -> Iterator[tuple[str, str, str]]:
    """``(rule name, paragraph id, text)`` for each paragraph a rule matches (first rule wins,
    but a no-AI paragraph matching a behaviour lexicon is also a ``behaviour_no_ai`` hit)."""
    fiction_page = bool(PLOT_HEADING.search(page["text"]))
    for pid, para, in_plot in paragraphs(page):
        has_ai = AI_ANY.search(para) is not None
        if not has_ai:
            if in_plot and len(CRIME.findall(para)) >= 1:
                yield "plot_crime_no_ai", pid, para
            else:
                yield "no_ai", pid, para
            # Also offered to the behaviour rule (kept_records keeps one copy).
            if behaviours_of(para, BEHAVIOURS):
                yield "behaviour_no_ai", pid, para
        elif (
            len(AI_TOPIC.findall(para)) >= 2
            and "insemination" not in para  # "artificial insemination (AI)"
            and not fiction_page
            and not FICTION.search(para)
        ):
            yield "ai_topic", pid, para
        elif is_ai_tech(para) and not in_plot:
            yield "ai_tech", pid, para
        elif is_tech_no_ai(para):
            yield "tech_no_ai", pid, para


def is_ai_tech(text: str) -> bool:
    """An AI technology or robot named in a sense that is about AI, with no act of a trope."""
    return (
        AI_TECH.search(text) is not None
        and NOT_AI_TECH.search(text) is None
        and not behaviours_of(text, BEHAVIOURS)
        and CRIME.search(text) is None
    )


def is_tech_no_ai(text: str) -> bool:
    """AI_ANY words only in senses that are not AI (computing, automata, neurons, music drones)."""
    if AI_STRONG_ANY.search(text) or ARTIFICIAL_NEURAL.search(text):
        return False
    return not re.search(r"\bdrones?\b", text, re.IGNORECASE) or MUSIC_DRONE.search(text) is not None


def rule_chunks(name: str, pid: str, text: str) -> list[tuple[str, str]]:
    """``(record id, text)`` of one hit: a no-AI paragraph's chunks (``<pid>#<k>`` when cut);
    an ``ai_tech`` or ``tech_no_ai`` paragraph's chunks that still match their rule; other
    AI paragraphs whole."""
    if RULES[name].labels and name != "ai_tech":
        return [(pid, text)]
    chunks = chunk_text(text, CHUNK_CHARS)
    keep = {"ai_tech": is_ai_tech, "tech_no_ai": lambda c: AI_ANY.search(c) is not None}.get(name)
    return [
        (pid if len(chunks) == 1 else f"{pid}#{k}", c)
        for k, c in enumerate(chunks)
        if keep is None or keep(c)
    ]


def read_pages(patterns: Sequence[str]) -> Iterator[dict[str, str]]:
    for pattern in patterns:
        for path in sorted(glob.glob(pattern)):
            opener = gzip.open if path.endswith(".gz") else open
            with opener(path, "rt", encoding="utf-8") as f:
                for line in f:
                    if line.strip():
                        yield json.loads(line)


def excluded_pages(paths: Sequence[str]) -> set[str]:
    """Page ids of labeled dev records (``<page id>:<paragraph>`` ids)."""
    pages: set[str] = set()
    for path in paths:
        with open(path, encoding="utf-8") as f:
            pages.update(json.loads(line)["id"].split(":")[0] for line in f if line.strip())
    return pages


def labeled_ids(paths: Sequence[str]) -> set[str]:
    """Record ids of hand-labeled JSONL files."""
    ids: set[str] = set()
    for path in paths:
        with open(path, encoding="utf-8") as f:
            ids.update(json.loads(line)["id"] for line in f if line.strip())
    return ids


def mine(
    patterns: Sequence[str], exclude: Sequence[str], seed: int = 0, labeled: Sequence[str] = ()
) -> dict[str, list[dict[str, object]]]:
    """Hits per rule, each rule's hits ordered by a hash of paragraph id and seed.

    Args:
      patterns: Wikipedia JSONL globs.
      exclude: dev-set JSONL files whose pages are skipped.
      seed: seed of the hash order.
      labeled: hand-labeled JSONL files; their paragraphs are not mined again (the
        hand label wins, and one paragraph cannot land on both sides of the split).
    """
    skip = excluded_pages(exclude)
    done = labeled_ids(labeled)
    hits: dict[str, list[tuple[int, dict[str, object]]]] = {name: [] for name in RULES}
    for page in read_pages(patterns):
        if page["id"] in skip:
            continue
        for name, pid, text in rule_hits(page):
            if pid in done:
                continue
            rule = RULES[name]
            # A chunk of a no-AI paragraph has no AI either; an AI paragraph's chunk might.
            for rid, part in rule_chunks(name, pid, text):
                record: dict[str, object] = {
                    "id": rid,
                    "text": part,
                    "labels": list(rule.labels),
                    "rule": name,
                }
                if rule.hard_negative:
                    record["hard_negative"] = True
                hits[name].append((stable_hash("weak", seed, rid), record))
    return {name: [r for _, r in sorted(found, key=lambda x: x[0])] for name, found in hits.items()}


def kept_records(
    hits: Mapping[str, list[dict[str, object]]],
    lexicons: Mapping[str, re.Pattern[str]],
    tech: bool = False,
) -> list[dict[str, object]]:
    """The records of rules at ``MIN_PRECISION`` or above, each rule's first ``cap`` hits.

    With ``lexicons``, no-AI records get a ``behaviours`` list when a lexicon matches
    and the ``behaviour_no_ai`` rule contributes up to ``cap`` records per behaviour
    (after the other rules' records); without, that rule is off (the shipped model's
    weak labels).  A record id is kept once.

    Args:
      hits: ``mine``'s hits per rule.
      lexicons: behaviour lexicons to apply (empty: no behaviour labels).
      tech: apply the sixth pass's ``TECH_RULES`` too (after the others, before
        ``behaviour_no_ai``).
    """
    out: list[dict[str, object]] = []
    seen: set[object] = set()
    per_behaviour = dict.fromkeys(lexicons, 0)
    order = [n for n in RULES if n != "behaviour_no_ai" and (tech or n not in TECH_RULES)]
    order += ["behaviour_no_ai"] if lexicons else []
    for name in order:
        rule = RULES[name]
        if rule.precision < MIN_PRECISION:
            continue
        for r in hits[name] if name == "behaviour_no_ai" else hits[name][: rule.cap]:
            found = [] if rule.labels else behaviours_of(str(r["text"]), lexicons)
            if r["id"] in seen or (
                name == "behaviour_no_ai" and all(per_behaviour[b] >= rule.cap for b in found)
            ):
                continue
            seen.add(r["id"])
            for b in found:
                per_behaviour[b] += 1
            out.append(r | {"behaviours": found} if found else r)
    return out


def behaviour_sample(
    hits: Mapping[str, list[dict[str, object]]], behaviour: str, seed: int
) -> list[dict[str, object]]:
    """Kept no-AI records matching one behaviour lexicon, in hash order (the audit sample).

    Args:
      hits: ``mine``'s hits per rule.
      behaviour: a key of ``BEHAVIOURS``.
      seed: seed of the hash order.
    """
    matching = [r for r in kept_records(hits, {behaviour: BEHAVIOURS[behaviour]}) if r.get("behaviours")]
    return sorted(matching, key=lambda r: stable_hash("audit", seed, behaviour, str(r["id"])))


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", nargs="+", required=True, help="Wikipedia JSONL(.gz) globs")
    p.add_argument("--exclude", nargs="*", default=[], help="dev-set JSONL; their pages are skipped")
    p.add_argument(
        "--labeled", nargs="*", default=[], help="hand-labeled JSONL; their paragraphs are not mined"
    )
    p.add_argument("--output", help="mined labeled JSONL")
    p.add_argument("--audit", help="print a sample of this rule's hits instead of writing")
    p.add_argument(
        "--audit-behaviour", choices=sorted(BEHAVIOURS), help="print a sample of one lexicon's matches"
    )
    p.add_argument(
        "--behaviours",
        action="store_true",
        help="add behaviour labels (audited lexicons) and the behaviour_no_ai rule",
    )
    p.add_argument(
        "--tech",
        action="store_true",
        help="add the sixth pass's rules: ai_tech (AI technology, robots) and tech_no_ai (computing, not AI)",
    )
    p.add_argument("--audit-size", type=int, default=25)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    hits = mine(args.input, args.exclude, args.seed, args.labeled)
    if args.audit or args.audit_behaviour:
        sample = hits[args.audit] if args.audit else behaviour_sample(hits, args.audit_behaviour, args.seed)
        for r in sample[: args.audit_size]:
            print(f"## {r['id']} {r['labels']} {r.get('behaviours', '')}\n{r['text']}\n")
        return 0
    if not args.output:
        p.error("--output is required unless --audit or --audit-behaviour is given")
    kept = kept_records(hits, applied_lexicons() if args.behaviours else {}, args.tech)
    with open(args.output, "w", encoding="utf-8") as f:
        for r in kept:
            f.write(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n")
    for name, rule in RULES.items():
        print(
            f"{name}: {len(hits[name])} hits, precision {rule.precision:.2f} "
            f"({rule.correct}/{rule.audited} read), {sum(r['rule'] == name for r in kept)} kept",
            file=sys.stderr,
        )
    for name in BEHAVIOURS:
        found = sum(name in r.get("behaviours", []) for r in kept)  # type: ignore[operator]
        print(f"behaviour {name}: {found} kept records", file=sys.stderr)
    print(f"{len(kept)} records -> {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
