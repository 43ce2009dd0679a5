"""modelrun: the shared domain and adapters every function imports (shipped as the Lambda layer)."""

__version__ = "0.1.0"
