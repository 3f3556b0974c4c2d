"""Chat conversations: validation, one rendering for the stages, and token counts.

A ``format: chat`` record holds a list of ``{role, content}`` messages (the OpenAI /
Hugging Face chat shape).  Classification, dedup, decontamination and token counts
all see one rendering of the conversation: plain ``role: content`` turns by default,
or the user's Jinja chat template (``chat_template`` of a ``tokenizer_config.json``),
rendered the way ``transformers`` renders it (sandboxed, ``trim_blocks``,
``lstrip_blocks``).  The structured messages travel with the document and are
written to the shard's ``messages`` column, so a trainer can apply its own template.

Token counts of a conversation are two: the whole rendering (what a trainer reads)
and the assistant turns alone (where the loss usually goes); the report shows both,
and ``blend.sources.<name>.chat_tokens`` picks the one the blend counts.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

from apache_beam.io.filesystems import FileSystems

from schemas.config import ChatConfig, ReadConfig, SourceConfig
from schemas.records import Document
from transforms.io.documents import BadRecord, make_document
from transforms.report.counts import CountKey, count_key

CHAT_ROLES = ("system", "user", "assistant", "tool")
Message = dict[str, str]
Renderer = Callable[[Sequence[Message]], str]


def parse_messages(obj: Any, field: str) -> list[Message]:
    """The validated ``{role, content}`` messages of a chat record, or ``BadRecord``.

    Args:
      obj: the parsed JSON record.
      field: the field holding the messages.

    Raises:
      BadRecord: ``no_messages`` (missing, null or not a list), ``bad_message`` (an item
        that is not an object), ``unknown_role``, ``non_string_content`` or
        ``empty_conversation`` (no messages, or all of them blank).
    """
    if not isinstance(obj, dict):
        raise BadRecord("not_an_object", f"record is a JSON {type(obj).__name__}, not an object")
    messages = obj.get(field)
    if messages is None:
        raise BadRecord("no_messages", f"field {field!r} is missing or null")
    if not isinstance(messages, list):
        raise BadRecord("no_messages", f"field {field!r} is a {type(messages).__name__}, not a list")
    if not messages:
        raise BadRecord("empty_conversation", f"field {field!r} is an empty list")
    out: list[Message] = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise BadRecord("bad_message", f"message {i} is a {type(message).__name__}, not an object")
        role = message.get("role")
        if role not in CHAT_ROLES:
            raise BadRecord("unknown_role", f"message {i} has role {role!r}; use one of {list(CHAT_ROLES)}")
        content = message.get("content")
        if not isinstance(content, str):
            raise BadRecord(
                "non_string_content",
                f"message {i} ({role}) has content of type {type(content).__name__}, not a string",
            )
        out.append({"role": str(role), "content": content})
    if not any(m["content"].strip() for m in out):
        raise BadRecord("empty_conversation", f"all {len(out)} messages are blank")
    return out


def render_plain(messages: Sequence[Message]) -> str:
    """The default rendering: ``role: content`` turns separated by blank lines."""
    return "\n\n".join(f"{m['role']}: {m['content']}" for m in messages)


def _token_text(value: Any) -> str:
    # tokenizer_config.json writes special tokens as strings or as AddedToken objects.
    if isinstance(value, dict):
        return str(value.get("content", ""))
    return str(value) if value is not None else ""


def read_template(path: str) -> tuple[str, dict[str, str]]:
    """``(template source, special tokens)`` from a ``tokenizer_config.json`` or a template file.

    Args:
      path: local or ``gs://`` path; ``.json`` files are read as ``tokenizer_config.json``.

    Raises:
      ValueError: the JSON has no ``chat_template``.
    """
    with FileSystems.open(path) as f:
        raw = f.read().decode("utf-8")
    if not path.endswith(".json"):
        return raw, {}
    data = json.loads(raw)
    template = data.get("chat_template")
    if isinstance(template, list):
        # Named templates (``[{name, template}]``): the default one renders conversations.
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        template = named.get("default")
    if not isinstance(template, str):
        raise ValueError(f"{path} has no chat_template string; give a tokenizer_config.json that has one")
    special = {k: _token_text(data.get(k)) for k in ("bos_token", "eos_token", "pad_token", "unk_token")}
    return template, special


def compile_template(source: str, special: Mapping[str, str]) -> Renderer:
    """A renderer for a Jinja chat template, in the environment ``transformers`` uses.

    Args:
      source: the template.
      special: special tokens the template may name (``bos_token``, ``eos_token`` ...).
    """
    from jinja2.ext import loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise ValueError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.filters["tojson"] = lambda x, indent=None: json.dumps(x, ensure_ascii=False, indent=indent)
    env.globals["raise_exception"] = raise_exception
    template = env.from_string(source)
    tokens = dict(special)

    def render(messages: Sequence[Message]) -> str:
        return str(template.render(messages=list(messages), add_generation_prompt=False, **tokens))

    return render


@functools.lru_cache(maxsize=16)
def renderer(template_path: str | None) -> Renderer:
    """The renderer of a source, compiled once per worker process (a template is small).

    Args:
      template_path: ``ChatConfig.template``; None for ``render_plain``.
    """
    if template_path is None:
        return render_plain
    return compile_template(*read_template(template_path))


def make_chat_document(
    obj: Any,
    source: SourceConfig,
    read_cfg: ReadConfig,
    path: str,
    offset: int,
    derived_id: str | None = None,
) -> Document:
    """A document whose ``text`` is the rendered conversation and ``messages`` its turns.

    Args:
      obj: the parsed record.
      source: a ``format: chat`` source config.
      read_cfg: size limits (applied to the rendering).
      path: file path.
      offset: byte offset of the record.
      derived_id: id to use when the record has none.

    Raises:
      BadRecord: a bad shape (see ``parse_messages``), or ``template_error`` when the
        user's template refuses the conversation (e.g. roles that do not alternate).
    """
    chat = source.chat or ChatConfig()
    messages = parse_messages(obj, chat.messages_field)
    render = renderer(chat.template)
    try:
        text = render(messages)
    except Exception as err:
        # A user's template raises many types (TemplateError, raise_exception's ValueError ...).
        raise BadRecord("template_error", f"{type(err).__name__}: {err}") from None
    doc = make_document({**obj, source.fields.text: text}, source, read_cfg, path, offset, derived_id)
    doc["messages"] = messages
    return doc


def assistant_text(messages: Iterable[Mapping[str, str]]) -> str:
    """The assistant turns of a conversation, joined as a trainer's loss mask would see them."""
    return "\n\n".join(m["content"] for m in messages if m["role"] == "assistant")


CHAT_TOKENS = "chat_tokens"


def chat_token_pairs(item: Any) -> Iterator[tuple[CountKey, int]]:
    """Count pairs of one written copy (``(shard, doc)`` or a doc): its two chat token counts."""
    doc = item[1] if isinstance(item, tuple) else item
    counts = doc.get(CHAT_TOKENS)
    if counts:
        yield count_key(CHAT_TOKENS, doc["source"], "conversation"), int(counts[0])
        yield count_key(CHAT_TOKENS, doc["source"], "assistant"), int(counts[1])


def chat_token_summary(counts: Mapping[CountKey, int]) -> dict[str, dict[str, int]]:
    """Source -> ``{conversation, assistant}`` tokens of the written chat copies, from run counts."""
    out: dict[str, dict[str, int]] = {}
    for key, n in counts.items():
        if key[0] == CHAT_TOKENS:
            _, source, part = key
            out.setdefault(source, {})[part] = n
    return dict(sorted(out.items()))
