"""Exporters: where the writer sends its Arrow batches (one module per destination).

A sink has ``name`` (the ``sink`` label of the metrics), ``write(table)`` which
raises on failure (the writer then spools the batch) and ``close()``. A sink
raises :class:`RejectedBatch` when the destination refused the batch for what it holds
(sending it unchanged would fail again): the writer spools it like any failed batch and,
refused again, writes it around the events refused, which it sets aside on disk
(``sinks.store.write_around_refusals``); only a writer without a spool drops it.
"""

from __future__ import annotations


class RejectedBatch(Exception):
    """The destination refused this batch's content; sending it again would fail again."""
