"""Image to model input: the declarative steps of model.json, the geometry they record, and user code."""

from modelrun.transforms.geometry import Geometry

__all__ = ["Geometry"]
