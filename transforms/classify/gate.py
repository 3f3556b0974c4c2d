"""The cheap AI gate and the context the trope model reads.

Most text never mentions an artificial mind.  Two regex searches (``AI_WORDS``, ``AI_ACRONYM``)
decides whether a document can hold an AI narrative at all; documents without a
mention are ``none`` at the cost of that search and never reach fastText.  For the
rest, the trope model reads the text around the mentions (``ai_context``): the
whole document when it is short, else windows around the first mentions, joined.
A long document is therefore read through a bounded context, so its score cannot
grow with its length (a max over every chunk did: issue 20 measured 26.5% of
Wikipedia pages over 32k characters flagged, against 0.3% under 2k).
"""

from __future__ import annotations

import re

# Words that can name an artificial mind.  Deliberately broad ("machine", "program"):
# recall on the annotated AI texts is the gate's target (>= 0.98, in the model card);
# the trope model rejects the other senses.  The words are matched on the lowercased
# text with a case-sensitive pattern: 2.7x faster than re.IGNORECASE on Wikipedia and
# web pages (22.7 against 9.7 MB/s), and a lexicon in a C automaton (pyahocorasick)
# was only 2x faster again with every hit still checked, not worth a dependency.
# "AI" alone is matched case-sensitively on the original text ("ai" is a word in many
# languages); its literal prefix makes that search run at over 1 GB/s.
_WORDS = (
    r"robot\w*|androids?|android-like|gynoids?|cyborg\w*|droids?|artificial(?:ly)?[ -]intelligen\w*|"
    r"artificial (?:minds?|beings?|life|lifeforms?|humans?|persons?|brains?)|(?:super-?)?computers?|"
    r"mainframes?|automat(?:on|ons|a)|machines?|mechas?|mechs?|mechanoids?|"
    r"mechanical (?:m[ae]n|beings?|soldiers?|creatures?)|biomechanical|sentient|self-aware|"
    r"synthetic (?:humans?|beings?|life|lifeforms?|persons?|minds?)|synths?|replicants?|holograms?|"
    r"holographic|nano(?:bots?|machines?)|chat-?bots?|bots?|programs?|software|"
    r"virtual (?:beings?|assistants?|intelligences?)|digital (?:beings?|life|minds?|intelligences?|lifeforms?)|"
    r"uploaded|terminators?|golems?|drones?|neural networks?|machine learning|language models?|chatgpt|"
    r"gpt-\d\w*|skynet|hal 9000"
)
AI_WORDS = re.compile(r"\b(?:" + _WORDS + r")\b")
AI_ACRONYM = re.compile(r"\bA\.I\.|\bAIs?\b")
# The same, without the leading \b: a pattern that starts with a literal is searched at
# over 1 GB/s, one that starts with \b tries every position (165 against ~5 us per
# Wikipedia page); the word start is checked by hand (``acronym_spans``).
_ACRONYM_FROM_LITERAL = re.compile(r"A(?:\.I\.|Is?\b)")
# Every alternative of ``_WORDS`` starts with one of these.  ``str.find`` looks for them
# at C speed and ``AI_WORDS`` is only tried, anchored, where one starts a word: on 3,000
# Wikipedia pages this found the same spans as ``AI_WORDS.finditer`` at several times
# its speed (the scan of the whole text was 96% of the gate's cost; BENCHMARKS.md).
_STEMS = (
    "robot", "android", "gynoid", "cyborg", "droid", "artificial", "super", "comput", "mainframe",
    "automat", "machin", "mech", "biomech", "sentient", "self-aware", "synth", "replicant", "hologra",
    "nano", "chat", "bot", "program", "software", "virtual", "digital", "upload", "terminator", "golem",
    "drone", "neural", "language", "gpt-", "skynet", "hal 9000",
)  # fmt: skip

# Context read by the trope model (chosen on validation, see models/train.yaml).
WHOLE_BELOW_CHARS = 1500
WINDOW_CHARS = 300
MAX_WINDOWS = 4
SEPARATOR = " \u2026 "


def mention_spans(text: str, limit: int = MAX_WINDOWS * 8) -> list[tuple[int, int]]:
    """Character spans of the first ``limit`` AI mentions in ``text``.

    Args:
      text: the document.
      limit: stop after this many mentions (enough to fill ``MAX_WINDOWS`` windows).
    """
    # Lowercasing keeps offsets for all but a few characters (e.g. U+0130 grows by one);
    # a window shifted by a character or two reads the same context.
    spans = word_spans(text.lower()) + acronym_spans(text)
    return sorted(spans)[:limit]


def acronym_spans(text: str) -> list[tuple[int, int]]:
    """The spans ``AI_ACRONYM.finditer(text)`` gives ("AI", "AIs", "A.I." as words).

    Args:
      text: the original (not lowercased) text.
    """
    return [m.span() for m in _ACRONYM_FROM_LITERAL.finditer(text) if _starts_word(text, m.start())]


def _starts_word(low: str, i: int) -> bool:
    return i == 0 or not (low[i - 1].isalnum() or low[i - 1] == "_")


def word_spans(low: str) -> list[tuple[int, int]]:
    """The spans ``AI_WORDS.finditer(low)`` gives, found from the stems' positions.

    Args:
      low: lowercased text.
    """
    found = []
    for stem in _STEMS:
        i = low.find(stem)
        while i >= 0:
            if _starts_word(low, i):
                m = AI_WORDS.match(low, i)
                if m:
                    found.append(m.span())
            i = low.find(stem, i + 1)
    # finditer never returns a match starting inside an earlier one ("chat-bots" holds "bots").
    spans: list[tuple[int, int]] = []
    for start, end in sorted(set(found)):
        if not spans or start >= spans[-1][1]:
            spans.append((start, end))
    return spans


def merge_windows(
    spans: list[tuple[int, int]], length: int, width: int, max_windows: int
) -> list[tuple[int, int]]:
    """Windows of ``width`` characters each side of the spans, merged where they overlap.

    Args:
      spans: mention spans, in text order.
      length: length of the text.
      width: characters kept before and after each mention.
      max_windows: windows kept (the first ones, in text order).
    """
    windows: list[tuple[int, int]] = []
    for start, end in spans:
        lo, hi = max(0, start - width), min(length, end + width)
        if windows and lo <= windows[-1][1]:
            windows[-1] = (windows[-1][0], max(windows[-1][1], hi))
        elif len(windows) == max_windows:
            break
        else:
            windows.append((lo, hi))
    return windows


def ai_context(
    text: str,
    whole_below: int = WHOLE_BELOW_CHARS,
    width: int = WINDOW_CHARS,
    max_windows: int = MAX_WINDOWS,
) -> str | None:
    """The text the trope model reads, or None when the gate finds no AI mention.

    Args:
      text: the document.
      whole_below: documents shorter than this are read whole.
      width: characters each side of a mention in longer documents.
      max_windows: windows read at most; the context is bounded whatever the length.
    """
    spans = mention_spans(text)
    if not spans:
        return None
    if len(text) < whole_below:
        return text
    windows = merge_windows(spans, len(text), width, max_windows)
    return SEPARATOR.join(text[lo:hi] for lo, hi in windows)
