"""From probabilities to predictions: softmax, top-k order, ties, rounding and the batched predict call."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modelrun.inference import Prediction, postprocess, predict_arrays, softmax
from modelrun.models.registry import ModelRegistry
from modelrun.models.spec import ModelSpec, parse_spec
from tests.modelfactory import make_model, merge, spec_dict


def make_spec(labels: list[str], **changes: Any) -> ModelSpec:
    return parse_spec(merge(spec_dict(), {"labels": labels, **changes}), "model.json")


def test_softmax_matches_the_definition() -> None:
    # given logits 1, 2, 3
    logits = np.array([[1.0, 2.0, 3.0]])

    # when softmax is applied
    probs = softmax(logits)

    # then each value is exp(x) / sum(exp)
    total = math.exp(1) + math.exp(2) + math.exp(3)
    assert probs[0].tolist() == pytest.approx([math.exp(1) / total, math.exp(2) / total, math.exp(3) / total])


def test_softmax_is_stable_for_huge_logits() -> None:
    # given logits far beyond exp's range
    logits = np.array([[1000.0, 1001.0], [-1000.0, -1000.0]])

    # when softmax is applied
    probs = softmax(logits)

    # then every row is finite and sums to one
    assert np.isfinite(probs).all()
    np.testing.assert_allclose(probs.sum(axis=1), [1.0, 1.0], rtol=1e-6)
    assert probs[1].tolist() == [0.5, 0.5]


def test_top_k_is_ordered_by_descending_score() -> None:
    # given four labels and top_k 3
    spec = make_spec(["a", "b", "c", "d"], top_k=3)

    # when probabilities are post-processed
    prediction = postprocess(np.array([0.1, 0.5, 0.15, 0.25]), spec)

    # then the best three come first to last
    assert [entry["label"] for entry in prediction.top_k] == ["b", "d", "c"]
    assert (prediction.label, prediction.score) == ("b", 0.5)


def test_ties_go_to_the_lower_class_index() -> None:
    # given three labels with equal scores for the last two
    spec = make_spec(["a", "b", "c"], top_k=3)

    # when probabilities are post-processed
    prediction = postprocess(np.array([0.2, 0.4, 0.4]), spec)

    # then b (index 1) comes before c (index 2)
    assert [entry["label"] for entry in prediction.top_k] == ["b", "c", "a"]


def test_scores_are_plain_floats_rounded_to_six_decimals() -> None:
    # given float32 probabilities with long fractions
    spec = make_spec(["a", "b"], top_k=2)

    # when they are post-processed
    prediction = postprocess(np.array([0.123456789, 0.876543211], dtype=np.float32), spec)

    # then the scores are JSON-ready floats with six decimals
    assert [entry["score"] for entry in prediction.top_k] == [0.876543, 0.123457]
    assert all(type(entry["score"]) is float for entry in prediction.top_k)
    assert json.loads(json.dumps(prediction.to_dict())) == prediction.to_dict()


def test_the_number_of_results_follows_the_spec_top_k() -> None:
    # given ten labels and the default top_k
    spec = make_spec([str(digit) for digit in range(10)])

    # when probabilities are post-processed
    prediction = postprocess(np.full(10, 0.1), spec)

    # then five results are returned
    assert len(prediction.top_k) == 5


def test_a_nan_score_ranks_last() -> None:
    # given a NaN among the scores
    spec = make_spec(["a", "b", "c"], top_k=3)

    # when they are post-processed
    prediction = postprocess(np.array([np.nan, 0.3, 0.7]), spec)

    # then the NaN class is last, not first
    assert [entry["label"] for entry in prediction.top_k] == ["c", "b", "a"]


def test_probabilities_of_the_wrong_length_are_a_caller_error() -> None:
    # given a three-label spec
    spec = make_spec(["a", "b", "c"])

    # when four scores are post-processed
    # then it refuses
    with pytest.raises(ValueError, match="expected 3 probabilities"):
        postprocess(np.array([0.1, 0.2, 0.3, 0.4]), spec)


def test_prediction_to_dict_has_label_score_and_top_k() -> None:
    # given a prediction
    prediction = Prediction(label="cat", score=0.9, top_k=[{"label": "cat", "score": 0.9}])

    # when it is turned into a dict
    # then it has the API's shape
    assert prediction.to_dict() == {"label": "cat", "score": 0.9, "top_k": [{"label": "cat", "score": 0.9}]}


def test_predict_arrays_keeps_the_input_order(tmp_path: Path) -> None:
    # given a colour model and tensors that are pure blue, red and green
    make_model(tmp_path)
    model = ModelRegistry(tmp_path).get("tiny")
    arrays = []
    for channel in (2, 0, 1):
        tensor = np.zeros(model.spec.input.image_shape, dtype=np.float32)
        tensor[channel] = 1.0
        arrays.append(tensor)

    # when they are predicted together
    predictions = predict_arrays(model, arrays)

    # then each prediction belongs to its own input
    assert [prediction.label for prediction in predictions] == ["blue", "red", "green"]


def test_predict_arrays_of_a_logits_model_gives_probabilities(tmp_path: Path) -> None:
    # given a logits model and a pure red tensor
    make_model(tmp_path, output_type="logits")
    model = ModelRegistry(tmp_path).get("tiny")
    tensor = np.zeros(model.spec.input.image_shape, dtype=np.float32)
    tensor[0] = 1.0

    # when it is predicted
    (prediction,) = predict_arrays(model, [tensor])

    # then the scores are softmax probabilities of logits (10, 0, 0)
    total = math.exp(10) + 2
    assert prediction.label == "red"
    assert prediction.score == pytest.approx(math.exp(10) / total, abs=1e-6)
    assert sum(entry["score"] for entry in prediction.top_k) == pytest.approx(1.0, abs=1e-5)


def test_predict_arrays_of_nothing_is_nothing(tmp_path: Path) -> None:
    # given a model
    make_model(tmp_path)
    model = ModelRegistry(tmp_path).get("tiny")

    # when no arrays are predicted
    # then no predictions come back
    assert predict_arrays(model, []) == []
