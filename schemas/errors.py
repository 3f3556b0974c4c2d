"""Pydantic validation errors as lines that name the field and the fix, for every YAML schema."""

from __future__ import annotations

from pydantic import ValidationError


def error_lines(err: ValidationError, unknown_key_fix: str) -> list[str]:
    """One ``  field.path: what to do`` line per error in ``err``.

    Args:
      err: the failed validation.
      unknown_key_fix: what to tell the user about a key the schema does not have.
    """
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = f"unknown key; {unknown_key_fix}"
        elif e["type"] == "missing":
            msg = "required field is missing; add it"
        lines.append(f"  {loc}: {msg}")
    return lines
