"""The batched predict call; softmax, top-k and Prediction now live in :mod:`modelrun.decoders.classification`."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from modelrun.decoders.classification import Prediction, rank, softmax

if TYPE_CHECKING:
    from modelrun.models.onnx import LoadedModel
    from modelrun.models.spec import ModelSpec

__all__ = ["Prediction", "postprocess", "predict_arrays", "softmax"]


def postprocess(probs: np.ndarray, spec: ModelSpec) -> Prediction:
    """Top-k of one image's probabilities with the spec's labels and ``top_k`` (see :func:`rank`).

    Raises:
        ValueError: ``probs`` is not 1-D with one value per label, or the spec is not a classification (a caller
            bug).
    """
    if spec.top_k is None:
        raise ValueError(f"{spec.name} is a {spec.task} model, not a classification")
    return rank(probs, spec.labels, spec.top_k)


def predict_arrays(model: LoadedModel, arrays: list[np.ndarray]) -> list[Prediction]:
    """Predict preprocessed images (each as :func:`modelrun.transforms.pipeline.preprocess` makes it), in input order.

    The arrays are stacked into one batch; :meth:`LoadedModel.run` runs it in one call for a dynamic batch
    dimension, or image by image (or in chunks) for a fixed one.
    """
    if not arrays:
        return []
    probs = model.run(np.stack(arrays))
    return [postprocess(row, model.spec) for row in probs]
