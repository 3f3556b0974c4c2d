"""The one JSONL reader of training and its benchmarks: gzip or plain, blank lines skipped."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from typing import Any


def numbered_jsonl(path: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, record)`` of every non-blank line of a JSONL file, gzip or plain.

    Args:
      path: a ``.jsonl`` or ``.jsonl.gz`` file; line numbers count from 1 for error messages.
    """
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                yield n, json.loads(line)


def read_jsonl(path: str) -> Iterator[dict[str, Any]]:
    """The records of a JSONL file, gzip or plain (``numbered_jsonl`` without the numbers)."""
    return (record for _, record in numbered_jsonl(path))
