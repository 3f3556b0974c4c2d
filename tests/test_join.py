"""CoGroup: CoGroupByKey's output, without transcode stages, with opaque (pickled) inputs."""

from __future__ import annotations

from typing import Any

import apache_beam as beam
from apache_beam.metrics import monitoring_infos
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from transforms.join import CoGroup, collect

DOCS = [(("cur", 1, "a"), {"id": "a", "text": "é" * 50, "scores": {"x": 0.5}}), (("cur", 2, "b"), {"id": "b"})]
DECISIONS = [(("cur", 1, "a"), True), (("cur", 3, "c"), False)]


def _normalized(item: tuple[Any, dict[str, list[Any]]]) -> tuple[Any, dict[str, list[Any]]]:
    key, grouped = item
    return key, {tag: sorted(values, key=repr) for tag, values in grouped.items()}


def test_collect_keeps_every_tag_and_unpickles_opaque_values() -> None:
    import pickle

    item = ("k", [("doc", pickle.dumps({"id": "a"})), ("decision", True)])
    assert collect(item, ["doc", "decision", "losers"], {"doc"}) == (
        "k",
        {"doc": [{"id": "a"}], "decision": [True], "losers": []},
    )


def test_cogroup_equals_cogroupbykey_with_and_without_opaque_inputs() -> None:
    with TestPipeline() as p:
        docs = p | "Docs" >> beam.Create(DOCS)
        decisions = p | "Decisions" >> beam.Create(DECISIONS)
        expected = {"doc": docs, "decision": decisions} | "Reference" >> beam.CoGroupByKey()
        plain = {"doc": docs, "decision": decisions} | "Plain" >> CoGroup()
        opaque = {"doc": docs, "decision": decisions} | "Opaque" >> CoGroup(opaque=("doc",))
        want = [
            (("cur", 1, "a"), {"doc": [DOCS[0][1]], "decision": [True]}),
            (("cur", 2, "b"), {"doc": [DOCS[1][1]], "decision": []}),
            (("cur", 3, "c"), {"doc": [], "decision": [False]}),
        ]
        assert_that(expected | "NormReference" >> beam.Map(_normalized), equal_to(want), label="Reference")
        assert_that(plain | "NormPlain" >> beam.Map(_normalized), equal_to(want), label="CheckPlain")
        assert_that(opaque | "NormOpaque" >> beam.Map(_normalized), equal_to(want), label="CheckOpaque")


def _pcollection_names(join: beam.PTransform) -> list[str]:
    """Names of the PCollections that carried elements when ``join`` ran on the FnApiRunner."""
    p = beam.Pipeline(runner=FnApiRunner())
    # Typed inputs get their own coders: exactly what made CoGroupByKey transcode.
    docs = p | "Docs" >> beam.Create([(1, "a"), (2, "b")]).with_output_types(tuple[int, str])
    flags = p | "Flags" >> beam.Create([(1, True)]).with_output_types(tuple[int, bool])
    _ = {"doc": docs, "flag": flags} | "Join" >> join
    names = {}
    for transform in p.to_runner_api().components.transforms.values():
        for pcoll in transform.outputs.values():
            names[pcoll] = transform.unique_name
    result = p.run()
    result.wait_until_finish()
    return [
        names.get(info.labels[monitoring_infos.PCOLLECTION_LABEL], info.labels[monitoring_infos.PCOLLECTION_LABEL])
        for info in result.monitoring_infos()
        if info.urn == monitoring_infos.ELEMENT_COUNT_URN
    ]


def test_cogroup_needs_no_transcode_stage_where_cogroupbykey_does() -> None:
    assert any("Transcode" in name for name in _pcollection_names(beam.CoGroupByKey()))
    assert not any("Transcode" in name for name in _pcollection_names(CoGroup(opaque=("doc",))))
