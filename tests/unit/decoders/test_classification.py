"""Classification decoder: softmax for logits, top-k order and ties, rounding, config and graph checks."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from modelrun.decoders import TASKS, Mask, decoder_for
from modelrun.decoders.classification import ClassificationOutput, rank, softmax
from modelrun.errors import ModelConfigError
from modelrun.transforms import Geometry

LABELS = ("cat", "dog", "bird")
IMAGE = Geometry.identity(4, 4)
decoder = decoder_for("classification")


def parse(section: dict[str, Any], fail: Any, labels: tuple[str, ...] = LABELS) -> ClassificationOutput:
    config: ClassificationOutput = decoder.parse_output(section, labels, fail)
    return config


def test_logits_from_a_graph_are_softmaxed_and_ranked(run_graph: Any, fail: Any) -> None:
    # given a graph returning logits 1, 3, 2 for one image
    graph = run_graph({"logits": np.array([[1.0, 3.0, 2.0]])})
    config = parse({"name": "logits", "type": "logits", "top_k": 2}, fail)

    # when its outputs are decoded
    result = decoder.decode(graph.outputs, config, LABELS, IMAGE)

    # then the best two come with softmax scores rounded to six decimals
    total = math.exp(1) + math.exp(3) + math.exp(2)
    assert result == {
        "label": "dog",
        "score": round(math.exp(3) / total, 6),
        "top_k": [
            {"label": "dog", "score": round(math.exp(3) / total, 6)},
            {"label": "bird", "score": round(math.exp(2) / total, 6)},
        ],
    }


def test_probabilities_are_ranked_as_given_with_ties_to_the_lower_index(run_graph: Any, fail: Any) -> None:
    # given probabilities with a tie between dog and bird
    graph = run_graph({"probs": np.array([[0.2, 0.4, 0.4]])})
    config = parse({"name": "probs", "type": "probabilities"}, fail)

    # when decoded
    result = decoder.decode(graph.outputs, config, LABELS, IMAGE)

    # then dog (index 1) comes before bird, and top_k defaults to every label (at most five)
    assert [entry["label"] for entry in result["top_k"]] == ["dog", "bird", "cat"]
    assert result["score"] == 0.4


def test_softmax_is_stable_for_huge_logits() -> None:
    probs = softmax(np.array([[1000.0, 1001.0], [-1000.0, -1000.0]]))
    assert np.isfinite(probs).all()
    assert probs[1].tolist() == [0.5, 0.5]


def test_nan_ranks_last() -> None:
    prediction = rank(np.array([np.nan, 0.1, 0.2]), LABELS, 3)
    assert [entry["label"] for entry in prediction.top_k] == ["bird", "dog", "cat"]


def test_an_output_with_another_number_of_scores_fails_when_decoded(fail: Any) -> None:
    config = parse({"name": "probs", "type": "probabilities"}, fail)
    with pytest.raises(ModelConfigError, match="returned 2 scores") as caught:
        decoder.decode({"probs": np.array([0.5, 0.5])}, config, LABELS, IMAGE)
    assert caught.value.details["field"] == "labels"


@pytest.mark.parametrize(
    ("section", "field"),
    [
        ({"type": "logits"}, "output.name"),
        ({"name": "x", "type": "scores"}, "output.type"),
        ({"name": "x", "type": "logits", "threshold": 0.5}, "output.threshold"),
        ({"name": "x", "type": "logits", "top_k": 4}, "top_k"),
        ({"name": "x", "type": "logits", "top_k": 0}, "top_k"),
    ],
)
def test_a_wrong_output_section_fails_naming_the_field(section: dict[str, Any], field: str, fail: Any) -> None:
    with pytest.raises(ModelConfigError) as caught:
        parse(section, fail)
    assert caught.value.details["field"] == field


def test_the_graph_check_names_a_missing_output(run_graph: Any, fail: Any) -> None:
    graph = run_graph({"logits": np.zeros((1, 3))})
    config = parse({"name": "scores", "type": "logits"}, fail)
    with pytest.raises(ModelConfigError, match='"scores" is not an output of the graph; graph outputs: "logits"'):
        decoder.check_graph(config, graph.shapes, LABELS, fail)


def test_the_graph_check_names_labels_when_the_class_count_differs(run_graph: Any, fail: Any) -> None:
    graph = run_graph({"logits": np.zeros((1, 4))})
    config = parse({"name": "logits", "type": "logits"}, fail)
    with pytest.raises(ModelConfigError, match="has 3 entries but the graph output") as caught:
        decoder.check_graph(config, graph.shapes, LABELS, fail)
    assert caught.value.details["field"] == "labels"


def test_the_graph_check_accepts_a_symbolic_class_dim(fail: Any) -> None:
    config = parse({"name": "logits", "type": "logits"}, fail)
    decoder.check_graph(config, {"logits": ["N", "C"]}, LABELS, fail)


def test_describe_shows_the_output_as_model_json_writes_it(fail: Any) -> None:
    config = parse({"name": "logits", "type": "logits", "top_k": 2}, fail)
    assert decoder.describe(config) == {"name": "logits", "type": "logits"}
    assert decoder.output_names(config) == ("logits",)


def test_an_unknown_task_fails_listing_the_known_ones() -> None:
    with pytest.raises(ValueError, match='unknown task "pose"; known tasks: "classification"'):
        decoder_for("pose")
    assert "classification" in TASKS


def test_a_mask_inlines_as_base64_and_refers_to_its_stored_key() -> None:
    mask = Mask(png=b"\x89PNG", width=3, height=2)
    assert mask.inline() == {"format": "png", "width": 3, "height": 2, "encoding": "base64", "data": "iVBORw=="}
    assert mask.stored("results/b/masks/1.png") == {
        "format": "png",
        "width": 3,
        "height": 2,
        "s3_key": "results/b/masks/1.png",
    }
