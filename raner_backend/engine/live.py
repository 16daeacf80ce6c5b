"""The one place that owns the served model.

A deployment builds a complete new ``Predictor`` first, then swaps the reference under a lock;
requests hold the predictor they started with, so they finish on it while new ones use the new
version. Nothing is loaded inside a request.
"""
from __future__ import annotations

import threading

from .predictor import Predictor


class LiveModel:
    def __init__(self, predictor: Predictor | None = None):
        self._lock = threading.Lock()
        self._predictor = predictor

    @property
    def predictor(self) -> Predictor:
        predictor = self._predictor
        if predictor is None:
            raise RuntimeError("no model is loaded yet")
        return predictor

    @property
    def ready(self) -> bool:
        return self._predictor is not None

    @property
    def version(self) -> str | None:
        predictor = self._predictor
        return predictor.version if predictor else None

    def swap(self, predictor: Predictor) -> Predictor | None:
        with self._lock:
            old, self._predictor = self._predictor, predictor
        return old
