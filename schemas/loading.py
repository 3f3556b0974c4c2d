"""Loading a run config: YAML with unique keys, paths resolved, errors that name the field and the fix.

The schema itself (one pydantic model per stage) is ``schemas/config.py``.
"""

from __future__ import annotations

import os
from typing import Any

import yaml
from pydantic import ValidationError

from schemas.config import ConfigError, MixConfig
from schemas.errors import error_lines


def allowing_empty_sources(cfg: MixConfig, allow: bool) -> MixConfig:
    """``cfg`` with ``blend.allow_empty_sources`` set when ``allow`` (the ``--allow-empty-source`` flag)."""
    if not allow:
        return cfg
    return cfg.model_copy(update={"blend": cfg.blend.model_copy(update={"allow_empty_sources": True})})


def allowing_unverified_model(cfg: MixConfig, allow: bool) -> MixConfig:
    """``cfg`` with ``classifier.allow_unverified_model`` set when ``allow`` (``--allow-unverified-model``)."""
    if not allow:
        return cfg
    classifier = cfg.classifier.model_copy(update={"allow_unverified_model": True})
    return cfg.model_copy(update={"classifier": classifier})


def _is_remote(path: str) -> bool:
    return "://" in path


def _resolve(path: str, base_dir: str) -> str:
    if _is_remote(path) or os.path.isabs(path):
        return path
    if _is_remote(base_dir):
        return f"{base_dir.rstrip('/')}/{path}"
    return os.path.normpath(os.path.join(base_dir, path))


def parse_config(data: dict[str, Any], base_dir: str = ".") -> MixConfig:
    """Validates a config mapping and resolves relative local paths against ``base_dir``.

    Args:
      data: the parsed YAML.
      base_dir: directory that relative paths are relative to (the config file's).
    """
    if not isinstance(data, dict):
        raise ConfigError("invalid config: the top level must be a mapping of keys to values")
    try:
        cfg = MixConfig.model_validate(data)
    except ValidationError as err:
        fix = "remove it or check its spelling against docs/ARCHITECTURE.md"
        raise ConfigError("invalid config:\n" + "\n".join(error_lines(err, fix))) from None
    sources = [
        s.model_copy(
            update={
                "inputs": [_resolve(p, base_dir) for p in s.inputs],
                "chat": s.chat
                and s.chat.model_copy(
                    update={"template": s.chat.template and _resolve(s.chat.template, base_dir)}
                ),
            }
        )
        for s in cfg.sources
    ]
    decon = cfg.decontaminate
    if decon is not None:
        evals = [e.model_copy(update={"path": _resolve(e.path, base_dir)}) for e in decon.evals]
        decon = decon.model_copy(update={"evals": evals})
    return cfg.model_copy(
        update={
            "sources": sources,
            "classifier": cfg.classifier.model_copy(
                update={
                    "model": _resolve(cfg.classifier.model, base_dir),
                    "taxonomy": cfg.classifier.taxonomy and _resolve(cfg.classifier.taxonomy, base_dir),
                }
            ),
            "output": cfg.output.model_copy(update={"path": _resolve(cfg.output.path, base_dir)}),
            "blend": cfg.blend.model_copy(
                update={
                    "tokenizer": cfg.blend.tokenizer and _resolve(cfg.blend.tokenizer, base_dir),
                }
            ),
            "dedup": cfg.dedup.model_copy(
                update={"previous_index": [_resolve(p, base_dir) for p in cfg.dedup.previous_index]}
            ),
            "decontaminate": decon,
        }
    )


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe YAML loader that rejects a key repeated in one mapping (the last would silently win)."""


def _unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in seen:
            raise ConfigError(
                f"key {key!r} appears twice in one mapping (lines {seen[key] + 1} and "
                f"{key_node.start_mark.line + 1}); keep one"
            )
        seen[key] = key_node.start_mark.line
    return dict(loader.construct_mapping(node))


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


def _parse_yaml(text: bytes, path: str) -> Any:
    try:
        decoded = text.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(
            f"config {path} is not UTF-8 text (byte {text[err.start]:#04x} at offset {err.start}); save it as UTF-8"
        ) from None
    try:
        return yaml.load(decoded, Loader=_UniqueKeyLoader)
    except ConfigError as err:
        raise ConfigError(f"config {path}: {err}") from None


def load_config(path: str) -> MixConfig:
    """Loads and validates a YAML config file.

    Args:
      path: local path or any Beam ``FileSystems`` URL (``gs://...``) of the YAML file;
        relative paths inside it are relative to its directory.
    """
    try:
        if _is_remote(path):
            from apache_beam.io.filesystems import FileSystems

            with FileSystems.open(path) as f:
                data = _parse_yaml(f.read(), path)
            base_dir = path.rsplit("/", 1)[0]
        else:
            with open(path, "rb") as f:
                data = _parse_yaml(f.read(), path)
            base_dir = os.path.dirname(os.path.abspath(path))
    except OSError as err:
        raise ConfigError(f"cannot read config {path}: {err}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"config {path} is not valid YAML: {err}") from None
    return parse_config(data, base_dir)
