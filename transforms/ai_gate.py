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
AI_WORDS = re.compile(r"\b(?=[abcdghlmnprstuv])(?:" + _WORDS + r")\b")
AI_ACRONYM = re.compile(r"\bA\.I\.|\bAIs?\b")

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
    spans = []
    for pattern, haystack in ((AI_WORDS, text.lower()), (AI_ACRONYM, text)):
        for m in pattern.finditer(haystack):
            spans.append(m.span())
            if len(spans) >= limit:
                break
    return sorted(spans)[:limit]


def has_mention(text: str) -> bool:
    """True when ``text`` holds a word that can name an artificial mind (the gate)."""
    return AI_ACRONYM.search(text) is not None or AI_WORDS.search(text.lower()) is not None


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
