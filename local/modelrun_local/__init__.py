"""The embedded local runtime: the real template.yaml and handlers on AWS services embedded through moto.

This package is glue around moto, not a cloud emulator: it reads the template, creates its resources in moto,
runs the unchanged handlers in a worker process per Lambda sandbox, and serves the template's Api events over
HTTP. Nothing in ``functions/`` or ``layers/`` knows it exists.
"""

LOGGER = "local"
"""The local runtime's own logger. Not under ``modelrun``: that is the functions' Powertools service logger, whose
JSON handler would stamp these records with a function's request keys, and whose root-handler filter drops every
logger name that contains it."""
