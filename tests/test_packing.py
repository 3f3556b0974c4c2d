"""Packed bodies: exact round trips, smaller shuffles, and the blend copies that carry them."""

from __future__ import annotations

import os
import subprocess
import sys

from transforms.blend.bodies import BODY, split_body, with_body
from transforms.packing import pack, unpack


def test_pack_round_trips_exactly_and_shrinks_text() -> None:
    body = {
        "text": "Die KI weigerte sich. 🤖 " * 400,
        "meta": {"quality": 0.5, "tags": ["a", "b"], "n": None},
    }
    packed = pack(body)
    assert isinstance(packed, bytes)
    assert unpack(packed) == body
    assert len(packed) < len(body["text"].encode()) / 10


def test_blend_copies_carry_packed_bodies_until_the_writer_opens_them() -> None:
    doc = {"id": "web/1", "source": "web", "text": "an AI story", "meta": {"k": 1}, "units": 1}
    lean, body = split_body(doc)
    assert "text" not in lean and "meta" not in lean
    copy = {**{k: v for k, v in lean.items() if k != "_body_key"}, "epoch": 0, BODY: body}
    assert with_body(copy) == {**doc, "epoch": 0}


def _arena_cap(env: dict[str, str]) -> str:
    code = "import os; from pipelines.runner import limit_malloc_arenas; limit_malloc_arenas(); print(os.environ['MALLOC_ARENA_MAX'])"
    return subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout.strip()


def test_local_runs_cap_malloc_arenas_unless_the_environment_sets_them() -> None:
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    assert _arena_cap(env) == "2"
    assert _arena_cap({**env, "MALLOC_ARENA_MAX": "4"}) == "4"
