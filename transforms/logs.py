"""Structured logs: one ``key=value`` line per event, the stage in every line, secrets redacted.

Stages log through ``stage_logger(stage)``, which only ever emits an event name and
the fields it is given, so document text never reaches a log line by accident.
``StructuredFormatter`` puts ``stage=`` on every line (``stage=runner`` for Beam's
own loggers) and passes the whole line through ``redact``, which masks credentials
and signed-URL parameters wherever they appear.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from typing import IO, Any

ROOT = "tropemix"

# What a credential looks like in a log line; each match keeps its key and masks the value.
_SECRET_PATTERNS = (
    # user:password@ in a URL.
    (re.compile(r"(?P<keep>[A-Za-z][A-Za-z0-9+.-]*://)[^/\s:@]+:[^/\s@]+@"), r"\g<keep>***@"),
    # Signed URLs (GCS, S3) and token-like query or key=value parameters.
    (
        re.compile(
            r"(?P<keep>\b(?:X-(?:Goog|Amz)-[A-Za-z-]+|Signature|sig|access_token|refresh_token|id_token|token"
            r"|api_?key|key|password|passwd|secret|client_secret|credential|credentials)=)[^&\s\"']+",
            re.IGNORECASE,
        ),
        r"\g<keep>***",
    ),
    (re.compile(r"(?P<keep>\bBearer\s+)[A-Za-z0-9._~+/=-]+", re.IGNORECASE), r"\g<keep>***"),
    (re.compile(r"\bAIza[0-9A-Za-z_-]{35}\b"), "***"),
    (re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"), "***"),
    (re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----", re.DOTALL), "***"),
)


def redact(text: str) -> str:
    """Masks credentials and signed-URL parameters in ``text``."""
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def _value(value: Any) -> str:
    text = str(value)
    if not text or any(c in text for c in ' ="\n'):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    return text


def format_fields(fields: dict[str, Any]) -> str:
    """``key=value`` pairs, quoting values with spaces, quotes or newlines."""
    return " ".join(f"{k}={_value(v)}" for k, v in fields.items())


class StageLogger:
    """A logger bound to one stage that logs an event name and explicit fields only.

    Args:
      stage: stage name (``read``, ``classify``, ``policy``, ``dedup``, ``blend``,
        ``write``, ``report``, ``run``).
    """

    def __init__(self, stage: str) -> None:
        self.stage = stage
        self._log = logging.getLogger(f"{ROOT}.{stage}")

    def _emit(self, level: int, event: str, fields: dict[str, Any]) -> None:
        if self._log.isEnabledFor(level):
            self._log.log(level, event, extra={"stage": self.stage, "fields": fields})

    def debug(self, event: str, **fields: Any) -> None:
        self._emit(logging.DEBUG, event, fields)

    def info(self, event: str, **fields: Any) -> None:
        self._emit(logging.INFO, event, fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._emit(logging.WARNING, event, fields)

    def error(self, event: str, **fields: Any) -> None:
        self._emit(logging.ERROR, event, fields)


def stage_logger(stage: str) -> StageLogger:
    """The structured logger of ``stage``."""
    return StageLogger(stage)


class StructuredFormatter(logging.Formatter):
    """``2026-01-01T00:00:00Z INFO stage=dedup event="..." key=value ...``, redacted."""

    def format(self, record: logging.LogRecord) -> str:
        stage = getattr(record, "stage", None)
        if stage is None:
            name = record.name
            stage = name.split(".", 1)[1] if name.startswith(ROOT + ".") else "runner"
        fields = getattr(record, "fields", None) or {}
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        line = f"{stamp}Z {record.levelname} stage={stage} event={_value(record.getMessage())}" + (
            " " + format_fields(fields) if fields else ""
        )
        if record.exc_info:
            line += " exc=" + _value(self.formatException(record.exc_info))
        return redact(line)


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time of each record (it may be replaced)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> IO[str]:
        return sys.stderr

    @stream.setter
    def stream(self, value: IO[str]) -> None:
        pass


def configure_logging(level: int = logging.INFO, stream: IO[str] | None = None) -> logging.Handler:
    """Sends every log record (tropemix's and Beam's) through ``StructuredFormatter``.

    Replaces handlers a previous call installed, so calling it twice is harmless.
    Only tropemix's loggers take ``level``; Beam's stay at the root's level
    (WARNING by default), whose INFO lines describe runner internals.

    Args:
      level: level of the ``tropemix`` loggers.
      stream: where lines go; stderr by default so stdout stays for the summary.
    """
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_tropemix", False):
            root.removeHandler(old)
    handler: logging.StreamHandler[Any] = logging.StreamHandler(stream) if stream else _StderrHandler()
    handler.setFormatter(StructuredFormatter())
    handler._tropemix = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    logging.getLogger(ROOT).setLevel(level)
    return handler
