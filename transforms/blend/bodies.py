"""Packed bodies: the fields only a written shard needs, off the documents while they are ranked.

Text, metadata and messages leave the documents after the units are measured
(``split_body``), so both ranking shuffles of ``BlendSources`` move light records; one
join (``BodyJoin``) puts the packed body back on each written copy (``rejoin_bodies``),
and it stays packed through the writer's shuffle until ``with_body`` opens it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, cast

from schemas.records import Document
from transforms.packing import pack, unpack
from transforms.report.conservation import JOIN_LOSS, JoinIntegrityError

BODY_FIELDS = ("text", "meta", "messages")
BODY = "_body"
BODY_KEY = "_body_key"


def body_key(doc: Mapping[str, Any]) -> tuple[str, str, str, int]:
    """Identity of one read record: its source, id and where it was read from."""
    return doc["source"], doc["id"], doc.get("src_path", ""), int(doc.get("src_offset", 0))


def split_body(doc: Mapping[str, Any]) -> tuple[dict[str, Any], bytes]:
    """``(lean document with its body key, packed body fields)`` of a document."""
    lean = {k: v for k, v in doc.items() if k not in BODY_FIELDS}
    lean[BODY_KEY] = body_key(doc)
    return lean, pack({k: doc[k] for k in BODY_FIELDS if k in doc})


def with_body(doc: Mapping[str, Any]) -> Document:
    """A copy from ``BlendSources``'s ``assigned`` output with its body fields unpacked.

    Args:
      doc: a document copy whose ``BODY`` holds packed ``BODY_FIELDS``.
    """
    out = {k: v for k, v in doc.items() if k != BODY}
    if BODY in doc:
        out.update(unpack(doc[BODY]))
    return cast(Document, out)


def rejoin_bodies(item: tuple[Any, dict[str, Any]]) -> Iterator[tuple[int, Document]]:
    """``(shard, copy)`` pairs of one body key's ``BodyJoin`` group, each copy with the packed body.

    Args:
      item: ``(body key, {"copies": [(shard, lean copy)], "body": [packed body]})``.

    Raises:
      JoinIntegrityError: copies met no body (lost in a shuffle).
    """
    key, grouped = item
    bodies = grouped["body"]
    copies = grouped["copies"]
    if copies and not bodies:
        # Every document left its body at SplitBodies, so a copy without one was lost
        # in a shuffle; writing it would make a row without text.
        raise JoinIntegrityError(f"BodyJoin: {len(copies)} copies of {key!r} met no body; {JOIN_LOSS}")
    for shard, lean in copies:
        copy = {k: v for k, v in lean.items() if k != BODY_KEY}
        copy[BODY] = bodies[0]
        yield shard, cast(Document, copy)
