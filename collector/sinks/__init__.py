"""Exporters: where the writer sends its Arrow batches (one module per destination).

A sink has ``name`` (the ``sink`` label of the metrics), ``write(table)`` which
raises on failure (the writer then spools the batch) and ``close()``. A sink
raises :class:`RejectedBatch` when retrying cannot help (the destination refused
the batch itself); the writer drops such a batch instead of spooling it forever.
"""

from __future__ import annotations


class RejectedBatch(Exception):
    """The destination refused this batch's content; sending it again would fail again."""
