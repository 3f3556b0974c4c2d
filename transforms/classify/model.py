"""The trope model's file: its model card, checksum, local copy, thresholds and taxonomy.

A ``gs://`` model is copied to this user's cache once and checked against the sha256 of
its model card.  The taxonomy comes from ``classifier.taxonomy``, else from the model
card, else the shipped default; thresholds from the card, overridden by the config.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

from apache_beam.io.filesystems import FileSystems

from schemas.config import ClassifierConfig
from schemas.taxonomy import DEFAULT_TAXONOMY, Taxonomy, load_taxonomy, parse_taxonomy

# The model card's ``scoring``: one softmax over narratives and tags (``scores_from_softmax``).
SCORING = "narrative_softmax"


class ModelChecksumError(RuntimeError):
    """The model file does not match the sha256 in its model card."""


def model_card_path(model_path: str) -> str:
    """``models/tropes.ftz`` -> ``models/tropes.card.json``."""
    stem, _ = os.path.splitext(model_path)
    return stem + ".card.json"


def _sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_model_card(model_path: str) -> dict[str, Any]:
    """The model card next to ``model_path``, or an empty dict when there is none."""
    card_path = model_card_path(model_path)
    if not FileSystems.exists(card_path):
        return {}
    with FileSystems.open(card_path) as f:
        card: dict[str, Any] = json.loads(f.read().decode("utf-8"))
        return card


def effective_thresholds(cfg: ClassifierConfig, card: dict[str, Any]) -> dict[str, float]:
    """Per-label thresholds: the model card's, overridden by the config's.

    Args:
      cfg: classifier config; its ``thresholds`` win, ``default`` covers unlisted labels.
      card: the model card (may be empty).
    """
    merged = dict(card.get("thresholds", {}))
    merged.update(cfg.thresholds)
    merged.setdefault("default", 0.5)
    return merged


def resolve_taxonomy(cfg: ClassifierConfig, card: dict[str, Any]) -> Taxonomy:
    """The taxonomy a run uses: the config's file, else the model card's, else the default.

    Labels named by ``cfg.label_policy`` must exist in it.

    Args:
      cfg: classifier config.
      card: the model card (may be empty).
    """
    if cfg.taxonomy:
        taxonomy = load_taxonomy(cfg.taxonomy)
    elif "taxonomy" in card:
        taxonomy = parse_taxonomy(card["taxonomy"], model_card_path(cfg.model))
    else:
        taxonomy = DEFAULT_TAXONOMY
    unknown = sorted(set(cfg.label_policy) - set(taxonomy.scored_labels))
    if unknown:
        raise ValueError(
            f"classifier.label_policy: unknown label(s) {unknown}; use labels of the taxonomy "
            f"{taxonomy.scored_labels}"
        )
    return taxonomy


class UnverifiedModelError(ValueError):
    """A remote model without a model card checksum, used without ``--allow-unverified-model``."""


def model_cache_dir() -> str:
    """This user's model cache, ``$XDG_CACHE_HOME/tropemix/models`` (``~/.cache`` by default), mode 0700.

    A shared, predictable directory such as ``/tmp/tropemix-models`` would let another
    user plant a model there; this one belongs to the user and nobody else can enter it.

    Raises:
      PermissionError: the directory exists but belongs to another user.
    """
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    path = os.path.join(base, "tropemix", "models")
    os.makedirs(path, mode=0o700, exist_ok=True)
    info = os.stat(path)
    if info.st_uid != os.getuid():
        raise PermissionError(
            f"model cache {path} belongs to another user; set XDG_CACHE_HOME to your own directory"
        )
    if info.st_mode & 0o077:
        os.chmod(path, 0o700)
    return path


def localize_model(model_path: str, allow_unverified: bool = False) -> str:
    """Returns a local path of the model, copying a remote one once per machine and user.

    The copy is verified against the ``sha256`` of the model card; a remote model
    without one is refused unless ``allow_unverified``.

    Args:
      model_path: local path or any ``FileSystems`` URL such as ``gs://``.
      allow_unverified: use a remote model whose card gives no checksum.

    Raises:
      UnverifiedModelError: a remote model without a card checksum.
      ModelChecksumError: the model does not match its card.
    """
    expected = read_model_card(model_path).get("sha256")
    if "://" in model_path:
        if not expected and not allow_unverified:
            raise UnverifiedModelError(
                f"classifier.model {model_path} has no model card with a sha256 ({model_card_path(model_path)}); "
                "add the card written by `tropemix train-classifier`, or pass --allow-unverified-model"
            )
        # The card's checksum is part of the cache key: a new model at the same path is a new copy.
        digest = hashlib.sha256(f"{model_path}#{expected or ''}".encode()).hexdigest()[:16]
        local = os.path.join(model_cache_dir(), f"{digest}-{os.path.basename(model_path)}")
        if not os.path.exists(local) or (expected and _sha256_file(local) != expected):
            tmp = f"{local}.{os.getpid()}.part"
            with FileSystems.open(model_path) as src, open(tmp, "wb") as dst:
                for block in iter(lambda: src.read(1 << 20), b""):
                    dst.write(block)
            os.replace(tmp, local)
    else:
        local = model_path
    if expected and _sha256_file(local) != expected:
        raise ModelChecksumError(
            f"{model_path} does not match sha256 {expected} in {model_card_path(model_path)}"
        )
    return local


def load_fasttext(model_path: str, allow_unverified: bool = False) -> Any:
    """Loads a fastText model from a local or remote path (see ``localize_model``)."""
    import fasttext

    # fastText prints a deprecation warning to stderr on every load; it is harmless.
    fasttext.FastText.eprint = lambda *args, **kwargs: None
    return fasttext.load_model(localize_model(model_path, allow_unverified))


def check_card(card: dict[str, Any], model_path: str) -> None:
    """Refuses a model whose card does not say it scores narratives the way this code does."""
    if card.get("scoring") != SCORING:
        raise ValueError(
            f"{model_path}: its model card ({model_card_path(model_path)}) does not declare scoring "
            f"{SCORING!r}; retrain it with `tropemix train-classifier` (make model) or use models/tropes-v1.ftz"
        )
