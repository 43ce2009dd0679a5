"""Datasets: named sets of a tenant's images with stable ids, what batches and single predictions can name, and
every prediction each image has had.

The ids (``ids``), the DatasetsTable and its item layout (``store``), POST /datasets bodies (``requests``),
registering images from a prefix or a list file in steps on a queue, and removing a deleted dataset's entries
(``registration``), and the per-image prediction history (``history``).

Import from the modules themselves, as for ``modelrun.batches``.
"""
