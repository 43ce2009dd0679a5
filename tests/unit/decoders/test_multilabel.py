"""Multilabel decoder: sigmoid for logits, the global and per-label thresholds, order, config and graph checks."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from modelrun.decoders import decoder_for
from modelrun.errors import ModelConfigError
from modelrun.transforms import Geometry

LABELS = ("cat", "dog", "bird", "fish")
IMAGE = Geometry.identity(4, 4)
decoder = decoder_for("multilabel")


def test_labels_at_or_above_the_threshold_are_listed_best_first(run_graph: Any, fail: Any) -> None:
    # given probabilities where dog sits exactly on the threshold and bird beats it
    graph = run_graph({"probs": np.array([[0.25, 0.5, 0.75, 0.125]])})
    config = decoder.parse_output({"name": "probs", "type": "probabilities"}, LABELS, fail)

    # when decoded
    result = decoder.decode(graph.outputs, config, LABELS, IMAGE)

    # then bird then dog are selected, and every score is reported in label order
    assert result == {
        "labels": [{"label": "bird", "score": 0.75}, {"label": "dog", "score": 0.5}],
        "scores": {"cat": 0.25, "dog": 0.5, "bird": 0.75, "fish": 0.125},
    }


def test_per_label_thresholds_override_the_global_one(run_graph: Any, fail: Any) -> None:
    # given a strict global threshold, relaxed for cat and tightened for bird
    graph = run_graph({"probs": np.array([[0.25, 0.5, 0.75, 0.125]])})
    section = {"name": "probs", "type": "probabilities", "threshold": 0.4, "thresholds": {"cat": 0.2, "bird": 0.8}}
    config = decoder.parse_output(section, LABELS, fail)

    # when decoded
    result = decoder.decode(graph.outputs, config, LABELS, IMAGE)

    # then dog passes the global threshold, cat its own, and bird misses its own
    assert [entry["label"] for entry in result["labels"]] == ["dog", "cat"]


def test_logits_go_through_a_stable_sigmoid(run_graph: Any, fail: Any) -> None:
    # given logits including values far beyond exp's range
    graph = run_graph({"logits": np.array([[0.0, 2.0, -1000.0, 1000.0]])})
    config = decoder.parse_output({"name": "logits", "type": "logits"}, LABELS, fail)

    # when decoded
    result = decoder.decode(graph.outputs, config, LABELS, IMAGE)

    # then the scores are sigmoids rounded to six decimals and nothing overflows
    assert result["scores"] == {"cat": 0.5, "dog": round(1 / (1 + np.exp(-2.0)), 6), "bird": 0.0, "fish": 1.0}
    assert [entry["label"] for entry in result["labels"]] == ["fish", "dog", "cat"]


@pytest.mark.parametrize(
    ("section", "field"),
    [
        ({"name": "p", "type": "probabilities", "thresholds": {"zebra": 0.3}}, "output.thresholds.zebra"),
        ({"name": "p", "type": "probabilities", "thresholds": {"cat": 1.5}}, "output.thresholds.cat"),
        ({"name": "p", "type": "probabilities", "thresholds": {"cat": "high"}}, "output.thresholds.cat"),
        ({"name": "p", "type": "probabilities", "thresholds": [0.3]}, "output.thresholds"),
        ({"name": "p", "type": "probabilities", "threshold": -0.1}, "output.threshold"),
        ({"name": "p", "type": "class_scores"}, "output.type"),
        ({"name": "p", "type": "logits", "top_k": 2}, "output.top_k"),
    ],
)
def test_a_wrong_output_section_fails_naming_the_field(section: dict[str, Any], field: str, fail: Any) -> None:
    with pytest.raises(ModelConfigError) as caught:
        decoder.parse_output(section, LABELS, fail)
    assert caught.value.details["field"] == field


def test_the_graph_check_names_labels_when_the_count_differs(run_graph: Any, fail: Any) -> None:
    graph = run_graph({"logits": np.zeros((1, 3))})
    config = decoder.parse_output({"name": "logits", "type": "logits"}, LABELS, fail)
    with pytest.raises(ModelConfigError, match="has 4 entries") as caught:
        decoder.check_graph(config, graph.shapes, LABELS, fail)
    assert caught.value.details["field"] == "labels"


def test_describe_lists_the_thresholds(fail: Any) -> None:
    section = {"name": "p", "type": "probabilities", "thresholds": {"dog": 0.7}}
    config = decoder.parse_output(section, LABELS, fail)
    assert decoder.describe(config) == {
        "name": "p",
        "type": "probabilities",
        "threshold": 0.5,
        "thresholds": {"dog": 0.7},
    }
