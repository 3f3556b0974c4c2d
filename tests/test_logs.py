"""Structured logs: stage on every line, explicit fields only, credentials redacted."""

from __future__ import annotations

import io
import logging

import pytest

from transforms.logs import configure_logging, redact, stage_logger


@pytest.mark.parametrize(
    ("line", "secret"),
    [
        (
            "path=https://storage.googleapis.com/b/o.jsonl?X-Goog-Algorithm=GOOG4&X-Goog-Credential=sa%40p.iam"
            "&X-Goog-Signature=abcdef0123456789",
            "abcdef0123456789",
        ),
        ("url=https://s3.amazonaws.com/b/k?X-Amz-Signature=deadbeefcafe&X-Amz-Expires=60", "deadbeefcafe"),
        ("proxy=http://alice:hunter2@proxy.local:3128/", "hunter2"),
        ("header=Authorization: Bearer ya29.a0AfH6SMBxyz", "ya29.a0AfH6SMBxyz"),
        ("url=https://api.example.com/v1?key=AIzaSyA1234567890abcdefghijklmnopqrstuv", "AIzaSyA1234567890"),
        ("env AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE", "AKIAIOSFODNN7EXAMPLE"),
        ("cfg password=s3cr3t token=t0k3n", "s3cr3t"),
    ],
)
def test_redact_masks_credentials(line: str, secret: str) -> None:
    masked = redact(line)
    assert secret not in masked
    assert "***" in masked


def test_redact_leaves_ordinary_paths_alone() -> None:
    line = "path=gs://bucket/data/pages-00.jsonl.gz rows=10 monkey=1"
    assert redact(line) == line


def test_every_line_names_its_stage() -> None:
    stream = io.StringIO()
    handler = configure_logging(stream=stream)
    try:
        stage_logger("dedup").info("clusters", count=3, path="gs://u:p@b/x y")
        logging.getLogger("apache_beam.runners.test").warning("runner says %s", "hi")
        stage_logger("read").debug("dead letter", offset=7)  # below INFO: not written
    finally:
        logging.getLogger().removeHandler(handler)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[0].endswith('INFO stage=dedup event=clusters count=3 path="gs://***@b/x y"')
    assert lines[1].endswith('WARNING stage=runner event="runner says hi"')


def test_configure_logging_twice_keeps_one_handler() -> None:
    first = configure_logging(stream=io.StringIO())
    second = configure_logging(stream=io.StringIO())
    try:
        ours = [h for h in logging.getLogger().handlers if getattr(h, "_tropemix", False)]
        assert ours == [second]
        assert first not in logging.getLogger().handlers
    finally:
        logging.getLogger().removeHandler(second)
