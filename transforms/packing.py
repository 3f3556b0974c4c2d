"""Packed bodies: a document's large fields as one compressed ``bytes`` value in shuffles.

Every shuffle encodes, copies and decodes what it moves; on the in-process runner the
driver also decodes every grouped value into Python objects and holds them until the
next stage runs.  Text is most of a document, and it crosses three shuffles (dedup's
``DocJoin``, blend's ``BodyJoin``, the shard writer's ``GroupByFile``).  Packed, a body
is an opaque ``bytes`` that coders copy without per-field work, at about 1/2.4 of its
size on the benchmark corpus (zstd level 1), which shrinks shuffle bytes on Dataflow
and Flink and the driver's memory on the in-process runner alike.

Packed values never reach an output file, so the compressed bytes need not be stable
across library versions; only the unpacked values are, and they are exact.
"""

from __future__ import annotations

import pickle
import threading
from typing import Any

import zstandard

# Level 1: ~50 us to pack an 11 KB body; higher levels cost more and gain little on text.
LEVEL = 1

_local = threading.local()


def _codecs() -> tuple[zstandard.ZstdCompressor, zstandard.ZstdDecompressor]:
    # zstd contexts are not thread-safe and cost more to make than to use once.
    codecs = getattr(_local, "codecs", None)
    if codecs is None:
        codecs = _local.codecs = (zstandard.ZstdCompressor(level=LEVEL), zstandard.ZstdDecompressor())
    return codecs


def pack(value: Any) -> bytes:
    """``value`` pickled and zstd-compressed (the frame records its size).

    Args:
      value: any picklable value, typically a dict of document fields.
    """
    return _codecs()[0].compress(pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL))


def unpack(data: bytes) -> Any:
    """The value ``pack`` packed into ``data``.

    Args:
      data: output of ``pack`` from this pipeline (never untrusted input: it unpickles).
    """
    return pickle.loads(_codecs()[1].decompress(data))
