"""Detectors: drift, latency/SLO and reproducibility, computed inside ClickHouse."""
