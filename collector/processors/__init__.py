"""Processors: transformations applied to every captured event before it leaves the process.

Each module does one thing: canonical hashes (``hashing``), payload sampling
(``sampling``), redaction of personal data (``redaction``) and the payload size
cap (``truncation``). ``collector.pipeline`` runs them in that order.
"""
