"""Comparing two predictors' emissions window by window (engines, storage formats, ensembles)."""
from __future__ import annotations

import numpy as np


def window_emissions(predictor, texts: list[str]) -> tuple[list, list[np.ndarray]]:
    """(the predictor's windows over ``texts`` run as one batch, a copy of each window's emissions)."""
    windows = [w for k, t in enumerate(texts) for w in predictor._windows(k, t)]
    predictor._run(texts, windows)
    return windows, [w.emissions.copy() for w in windows]


def emission_gap(reference, other, texts: list[str]) -> tuple[float, float]:
    """(largest |difference| between the two predictors' emissions on the same windows, largest
    |emission| of ``reference``): the windows are cut once, so both see identical inputs."""
    windows, expected = window_emissions(reference, texts)
    other._run(texts, windows)
    gap = max(float(np.abs(w.emissions - e).max()) for w, e in zip(windows, expected))
    return gap, max(float(np.abs(e).max()) for e in expected)
