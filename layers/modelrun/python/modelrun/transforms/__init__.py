"""Image to model input: the declarative steps of model.json, the geometry they record, and the one door for user
code (a model folder's own ``preprocess``/``postprocess``)."""

from modelrun.transforms.geometry import Geometry

__all__ = ["Geometry"]
