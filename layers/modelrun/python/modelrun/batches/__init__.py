"""Batch prediction, from POST /batches to the last outcome: the request (``requests``), the keys and chunk files
(``manifest``), submitting an attempt (``submit``), predicting one chunk (``chunks``), closing the job and writing its
results and error report (``close``), another attempt (``retry``), dead-letter recovery (``recovery``), the jobs and
outcomes tables (``store``), the failure taxonomy (``failures``) and fault injection (``faults``).

Import from the modules themselves: this package re-exports nothing, so importing the job store does not load the
model runtime that ``chunks`` needs.
"""
