"""Models: the model.json contract, discovery and caching, and the ONNX Runtime session with its graph check."""
