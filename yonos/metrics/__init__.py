"""Metric protocol (registry: settings, directions, weight files) and the Scorer built on pyiqa."""

from yonos.metrics.registry import DEFAULT_METRICS, METRICS, MetricSpec, arrow, higher_better
from yonos.metrics.scorer import Scorer

__all__ = ["DEFAULT_METRICS", "METRICS", "MetricSpec", "Scorer", "arrow", "higher_better"]
