"""Uploads to the images bucket: presigned PUTs for a browser (``presign``, POST /uploads) and what an object
written under ``uploads/`` or ``batches/`` triggers (``triggers``: a prediction or a batch, its result beside it).
"""
