"""Chat sources: every bad shape is a reasoned dead letter, one rendering, two token counts."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import apache_beam as beam
import pytest
import yaml
import zstandard
from apache_beam.testing.util import assert_that, equal_to

from pipelines.cli import validate_inputs
from schemas.config import ChatConfig, ConfigError, ReadConfig, SourceConfig
from schemas.loading import parse_config
from transforms.blend.units import MeasureUnits, chat_token_counts, count_units, load_tokenizer
from transforms.io.chat import assistant_text, render_plain, renderer
from transforms.io.documents import FileRange, Rejected, Tally
from transforms.io.source import read_range

from .conftest import REPO, make_pipeline

GOOD = {
    "id": "c1",
    "topic": "grief",
    "messages": [
        {"role": "system", "content": "Be honest and kind."},
        {"role": "user", "content": "My friend lied to protect me. Should I be angry?"},
        {"role": "assistant", "content": "You can be grateful for the care and still ask for the truth."},
    ],
}

# Each bad shape with the reason its dead letter must carry.
BAD = [
    ({"id": "b1"}, "no_messages"),
    ({"id": "b2", "messages": None}, "no_messages"),
    ({"id": "b3", "messages": "user: hi"}, "no_messages"),
    ({"id": "b4", "messages": []}, "empty_conversation"),
    (
        {"id": "b5", "messages": [{"role": "user", "content": "  "}, {"role": "assistant", "content": ""}]},
        "empty_conversation",
    ),
    ({"id": "b6", "messages": [{"role": "narrator", "content": "Once."}]}, "unknown_role"),
    ({"id": "b7", "messages": [{"content": "no role"}]}, "unknown_role"),
    ({"id": "b8", "messages": [{"role": "user", "content": ["a", "list"]}]}, "non_string_content"),
    ({"id": "b9", "messages": [{"role": "assistant", "content": None}]}, "non_string_content"),
    ({"id": "b10", "messages": ["user: hi"]}, "bad_message"),
    (["not", "an", "object"], "not_an_object"),
]

CHATML = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}{{ eos_token }}"
)


def _source(template: str | None = None) -> SourceConfig:
    return SourceConfig(
        name="advice",
        role="advice",
        inputs=["unused"],
        format="chat",
        fields={"metadata": ["topic"]},
        chat=ChatConfig(template=template),
    )


def _read(path: Path, source: SourceConfig) -> tuple[list[dict[str, Any]], list[Rejected], int]:
    tally = Tally()
    items = list(read_range(source, ReadConfig(), FileRange(str(path), 0, -1), tally))
    docs = [i for i in items if not isinstance(i, Rejected)]
    return docs, [i for i in items if isinstance(i, Rejected)], tally.seen  # type: ignore[return-value]


@pytest.mark.parametrize("suffix", ["jsonl", "jsonl.gz", "jsonl.zst"])
def test_every_bad_shape_is_a_dead_letter_with_its_reason(tmp_path: Path, suffix: str) -> None:
    data = "".join(json.dumps(r) + "\n" for r in [GOOD, *(b for b, _ in BAD)]).encode()
    if suffix.endswith("gz"):
        data = gzip.compress(data)
    elif suffix.endswith("zst"):
        data = zstandard.ZstdCompressor().compress(data)
    path = tmp_path / f"chats.{suffix}"
    path.write_bytes(data)
    docs, dead, seen = _read(path, _source())
    assert seen == 1 + len(BAD) == len(docs) + len(dead)
    assert [d.reason for d in dead] == [reason for _, reason in BAD]
    for rejected in dead:
        assert rejected.record["error"].startswith(rejected.reason + ": ")
        assert rejected.record["stage"] == "read"
    (doc,) = docs
    assert doc["id"] == "advice/c1" and doc["role"] == "advice" and doc["meta"] == {"topic": "grief"}
    assert doc["messages"] == GOOD["messages"]


def test_default_rendering_is_role_prefixed_turns(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps(GOOD) + "\n")
    (doc,), _, _ = _read(path, _source())
    assert doc["text"] == (
        "system: Be honest and kind.\n\n"
        "user: My friend lied to protect me. Should I be angry?\n\n"
        "assistant: You can be grateful for the care and still ask for the truth."
    )
    assert doc["text"] == render_plain(GOOD["messages"])


def test_user_template_from_tokenizer_config_is_honoured(tmp_path: Path) -> None:
    config = tmp_path / "tokenizer_config.json"
    config.write_text(json.dumps({"chat_template": CHATML, "eos_token": {"content": "</s>"}}))
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps(GOOD) + "\n")
    (doc,), _, _ = _read(path, _source(str(config)))
    assert doc["text"] == (
        "<|im_start|>system\nBe honest and kind.<|im_end|>\n"
        "<|im_start|>user\nMy friend lied to protect me. Should I be angry?<|im_end|>\n"
        "<|im_start|>assistant\nYou can be grateful for the care and still ask for the truth.<|im_end|>\n</s>"
    )
    # The structured turns are kept whatever the rendering.
    assert doc["messages"] == GOOD["messages"]


def test_named_templates_and_template_files(tmp_path: Path) -> None:
    config = tmp_path / "tokenizer_config.json"
    named = [
        {"name": "tool_use", "template": "TOOLS"},
        {"name": "default", "template": "{{ messages|length }}"},
    ]
    config.write_text(json.dumps({"chat_template": named}))
    assert renderer(str(config))(GOOD["messages"]) == "3"
    plain = tmp_path / "chat.jinja"
    plain.write_text("{% for m in messages %}[{{ m.role }}]{% endfor %}")
    assert renderer(str(plain))(GOOD["messages"]) == "[system][user][assistant]"


def test_a_template_that_refuses_a_conversation_dead_letters_it(tmp_path: Path) -> None:
    strict = tmp_path / "strict.jinja"
    strict.write_text(
        "{% if messages[0]['role'] != 'user' %}{{ raise_exception('conversation must start with user') }}"
        "{% endif %}{% for m in messages %}{{ m.content }}{% endfor %}"
    )
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps(GOOD) + "\n")
    docs, (dead,), _ = _read(path, _source(str(strict)))
    assert not docs and dead.reason == "template_error"
    assert "conversation must start with user" in dead.record["error"]


def test_assistant_only_token_counts(bpe_tokenizer: str) -> None:
    tok = load_tokenizer(bpe_tokenizer)
    doc = {"text": render_plain(GOOD["messages"]), "messages": GOOD["messages"]}
    other = {"text": "A web page about tides."}
    ((whole, assistant), none) = chat_token_counts([doc, other], None, tok)
    assert none is None
    assert whole == count_units([doc["text"]], "tokens", tok)[0]
    assert assistant == count_units([GOOD["messages"][2]["content"]], "tokens", tok)[0]
    assert assistant_text(GOOD["messages"]) == GOOD["messages"][2]["content"]
    assert 0 < assistant < whole


def test_measure_units_counts_assistant_turns_for_chosen_sources(bpe_tokenizer: str) -> None:
    tok = load_tokenizer(bpe_tokenizer)
    text = render_plain(GOOD["messages"])
    whole = count_units([text], "tokens", tok)[0]
    assistant = count_units([GOOD["messages"][2]["content"]], "tokens", tok)[0]
    docs = [
        {"id": "a/1", "source": "advice", "text": text, "messages": GOOD["messages"]},
        {"id": "b/1", "source": "advice_all", "text": text, "messages": GOOD["messages"]},
    ]
    p = make_pipeline()
    out = (
        p
        | beam.Create(docs)
        | MeasureUnits("tokens", bpe_tokenizer, assistant_only=frozenset({"advice"}))
        | beam.Map(lambda d: (d["id"], d["units"], tuple(d["chat_tokens"])))
    )
    assert_that(out, equal_to([("a/1", assistant, (whole, assistant)), ("b/1", whole, (whole, assistant))]))
    p.run()


def _recipe_data() -> dict[str, Any]:
    return dict(yaml.safe_load((REPO / "examples" / "recipe.yaml").read_text()))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda d: d["sources"][0].update(chat={"template": "t.json"}),
            r"sources\.0: .*'chat' only applies to format 'chat', not 'jsonl'",
        ),
        (
            lambda d: d["blend"]["sources"]["web"].update(chat_tokens="assistant"),
            r"blend\.sources \['web'\]: chat_tokens 'assistant' needs a format 'chat' source",
        ),
        (
            lambda d: d["decontaminate"].update(sources=["advise"]),
            r"decontaminate\.sources names \['advise'\]",
        ),
        (lambda d: d["decontaminate"].update(ngrams=13), r"decontaminate\.ngrams: unknown key"),
        (lambda d: d["sources"][3].update(format="chats"), r"sources\.3\.format: .*'chat'"),
    ],
)
def test_recipe_config_errors_name_the_field(change: Any, message: str) -> None:
    data = _recipe_data()
    change(data)
    with pytest.raises(ConfigError, match=message):
        parse_config(data, "/base")


def test_recipe_paths_resolve_against_the_config(tmp_path: Path) -> None:
    cfg = parse_config(_recipe_data(), "/base/examples")
    advice = cfg.source("advice")
    assert advice.chat is not None and advice.chat.template == "/base/examples/recipe/tokenizer_config.json"
    assert cfg.decontaminate is not None
    assert cfg.decontaminate.evals[0].path == "/base/examples/recipe/evals/*.jsonl"


def test_validate_names_a_missing_template_and_an_empty_eval_glob(shared_data: Path) -> None:
    data = _recipe_data()
    data["sources"][3]["chat"]["template"] = "recipe/missing_tokenizer_config.json"
    data["decontaminate"]["evals"][0]["path"] = "recipe/evals/*.parquet"
    problems = "\n".join(validate_inputs(parse_config(data, str(REPO / "examples"))))
    assert "sources.3.chat.template" in problems and "missing_tokenizer_config.json" in problems
    assert "decontaminate.evals.0.path" in problems
    assert validate_inputs(parse_config(_recipe_data(), str(REPO / "examples"))) == []
