"""Units of a document for blending: documents, UTF-8 bytes or tokens.

Tokens come from a Hugging Face ``tokenizers`` ``tokenizer.json`` that the user
supplies (local or ``gs://``; nothing is ever downloaded), loaded once per worker
process in ``setup`` through ``Shared`` and applied a batch at a time with
``encode_batch`` (native, multi-threaded).  Without a tokenizer, tokens are the
built-in estimate ``estimate_tokens``, whose error against a real byte-level BPE
count on the shared data is recorded in BENCHMARKS.md.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.utils import shared

from schemas.records import Document
from transforms.io.chat import assistant_text

NAMESPACE = "tropemix.units"

# Pieces a GPT-2-style pre-tokenizer splits on: runs of letters, of digits, of other
# symbols.  A BPE vocabulary merges most common pieces into one token and splits rare
# ones (long words cost more, hence the per-byte term).  Least-squares fit on 1,500
# pages of wikipedia/pages-01 against a 32k byte-level BPE trained on pages-00; see
# BENCHMARKS.md for its error on held-out Wikipedia and on the web pages.
_PIECES = re.compile(r"[^\W\d_]+|\d{1,3}|[^\w\s]+|_+", re.UNICODE)
ESTIMATE_TOKENS_PER_PIECE = 1.135
ESTIMATE_TOKENS_PER_BYTE = 0.018


def estimate_tokens(text: str) -> int:
    """Built-in token estimate for users without a ``tokenizer.json``.

    Counts pre-tokenizer pieces (letter runs, digit groups of up to three, symbol
    runs) and scales them; see the module docstring for how far it is from a BPE.

    Args:
      text: document text.
    """
    pieces = len(_PIECES.findall(text))
    return round(ESTIMATE_TOKENS_PER_PIECE * pieces + ESTIMATE_TOKENS_PER_BYTE * len(text.encode("utf-8")))


def load_tokenizer(path: str) -> Any:
    """Loads a Hugging Face ``tokenizer.json`` from a local or remote path.

    Args:
      path: local path or any ``FileSystems`` URL such as ``gs://``.
    """
    from tokenizers import Tokenizer

    with FileSystems.open(path) as f:
        return Tokenizer.from_str(f.read().decode("utf-8"))


def count_units(texts: Sequence[str], unit: str, tokenizer: Any = None) -> list[int]:
    """Units of each text.

    Args:
      texts: document texts.
      unit: ``documents``, ``bytes`` or ``tokens``.
      tokenizer: a loaded ``tokenizers.Tokenizer`` for ``tokens``; None for the estimate.
    """
    if unit == "documents":
        return [1] * len(texts)
    if unit == "bytes":
        return [len(t.encode("utf-8")) for t in texts]
    if tokenizer is None:
        return [estimate_tokens(t) for t in texts]
    return [len(e.ids) for e in tokenizer.encode_batch(list(texts), add_special_tokens=False)]


def chat_token_counts(
    docs: Sequence[Mapping[str, Any]], conversation: Sequence[int] | None, tokenizer: Any
) -> list[tuple[int, int] | None]:
    """``(conversation tokens, assistant tokens)`` per chat document, None for the others.

    Args:
      docs: documents; chat documents carry ``messages``.
      conversation: token counts of each document's text when already known (unit
        ``tokens``), else None to count them here.
      tokenizer: a loaded ``tokenizers.Tokenizer``, or None for the built-in estimate.
    """
    chat = [i for i, d in enumerate(docs) if d.get("messages") is not None]
    out: list[tuple[int, int] | None] = [None] * len(docs)
    if not chat:
        return out
    whole = (
        [conversation[i] for i in chat]
        if conversation is not None
        else count_units([docs[i]["text"] for i in chat], "tokens", tokenizer)
    )
    assistant = count_units([assistant_text(docs[i]["messages"]) for i in chat], "tokens", tokenizer)
    for i, w, a in zip(chat, whole, assistant, strict=True):
        out[i] = (w, a)
    return out


class _LoadedTokenizer:
    """Holder for a tokenizer; ``Shared`` needs a weak-referenceable object."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer


class _UnitsFn(beam.DoFn):
    def __init__(self, unit: str, tokenizer_path: str | None, assistant_only: frozenset[str]) -> None:
        self._unit = unit
        self._path = tokenizer_path
        self._assistant_only = assistant_only
        self._shared = shared.Shared()
        self._tokenizer: Any = None

    def setup(self) -> None:
        if self._unit == "tokens" and self._path:
            path = self._path
            self._tokenizer = self._shared.acquire(
                lambda: _LoadedTokenizer(load_tokenizer(path)), tag=path
            ).tokenizer

    def process(self, batch: list[Document]) -> Iterator[Document]:
        units = count_units([d["text"] for d in batch], self._unit, self._tokenizer)
        chat = chat_token_counts(batch, units if self._unit == "tokens" else None, self._tokenizer)
        for i, (doc, tokens) in enumerate(zip(batch, chat, strict=True)):
            if tokens is not None and self._unit == "tokens" and doc["source"] in self._assistant_only:
                units[i] = tokens[1]
        Metrics.counter(NAMESPACE, self._unit).inc(sum(units))
        for doc, n, tokens in zip(batch, units, chat, strict=True):
            yield {**doc, "units": n} if tokens is None else {**doc, "units": n, "chat_tokens": list(tokens)}


class MeasureUnits(beam.PTransform):
    """Adds ``units`` (documents, bytes or tokens) to every document, a batch at a time.

    Chat documents also get ``chat_tokens``: tokens of the whole rendering and of the
    assistant turns (through the tokenizer, else the estimate, whatever the unit).

    Args:
      unit: ``documents``, ``bytes`` or ``tokens``.
      tokenizer: ``tokenizer.json`` path for ``tokens``; None for the built-in estimate.
      batch_size: documents per ``encode_batch`` call.
      assistant_only: chat sources whose ``tokens`` are their assistant turns alone.
    """

    def __init__(
        self,
        unit: str,
        tokenizer: str | None = None,
        batch_size: int = 256,
        assistant_only: frozenset[str] = frozenset(),
    ) -> None:
        super().__init__()
        self._unit = unit
        self._tokenizer = tokenizer
        self._batch_size = batch_size
        self._assistant_only = assistant_only

    def expand(self, docs: beam.PCollection) -> beam.PCollection:
        return (
            docs
            | "Batch"
            >> beam.BatchElements(min_batch_size=min(8, self._batch_size), max_batch_size=self._batch_size)
            | "Count" >> beam.ParDo(_UnitsFn(self._unit, self._tokenizer, self._assistant_only))
        )
