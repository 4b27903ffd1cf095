"""Confidence in 0-1 from a hypothesis's score, calibrated on the model's held-out slice (`maskmatch calibrate`,
in validation.py, fits it; this module is the arithmetic, which the recognizer uses).

Method: logistic regression of "the answer is exactly right" on the answer's length-normalized score
(model/search.py), fitted by Newton's method on the held-out slice of the training split that the model
was selected on (its manifest's data.val_size and val_seed), once for greedy decoding and once for beam
search, whose scores are on different scales. The fit is stored in the model's manifest ("calibration");
results/calibration.md shows the reliability table: answers binned by confidence, against the share
that were right. Alternatives below the first are given the same mapping of their own score.
"""

from __future__ import annotations

import math

import numpy as np

METHOD = ("logistic regression of exact match on the length-normalized score, fitted on the model's "
          "held-out slice of the training split")


def confidence(manifest: dict, decoding: str, score: float) -> float | None:
    """decoding "greedy" or "beam" -> sigmoid(a * score + b) from the manifest's calibration; None if it has none."""
    fit = (manifest.get("calibration") or {}).get(decoding)
    if not fit:
        return None
    z = fit["a"] * score + fit["b"] if math.isfinite(score) else -math.inf
    return round(1.0 / (1.0 + math.exp(-z)) if z > -700 else 0.0, 4)


def fit_logistic(scores: np.ndarray, correct: np.ndarray, iterations: int = 50, ridge: float = 1e-3) -> tuple[float, float]:
    """(a, b) maximizing the likelihood of correct (0/1) under sigmoid(a * score + b); a small ridge keeps it
    finite when the classes separate."""
    x = np.stack([scores, np.ones_like(scores)], 1).astype(np.float64)  # (n, 2)
    y = correct.astype(np.float64)
    w = np.zeros(2)
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-np.clip(x @ w, -500, 500)))
        gradient = x.T @ (p - y) + ridge * w
        hessian = (x * (p * (1 - p))[:, None]).T @ x + ridge * np.eye(2)
        step = np.linalg.solve(hessian, gradient)
        w -= step
        if np.abs(step).max() < 1e-9:
            break
    return float(w[0]), float(w[1])


def reliability(confidences: np.ndarray, correct: np.ndarray, bins: int = 10) -> tuple[list[dict], float]:
    """Rows (low, high, n, mean confidence, accuracy) of equal-width confidence bins, and the expected
    calibration error (the n-weighted mean gap between confidence and accuracy)."""
    rows, gap = [], 0.0
    edges = np.linspace(0, 1, bins + 1)
    for i in range(bins):
        inside = (confidences >= edges[i]) & ((confidences < edges[i + 1]) if i < bins - 1 else (confidences <= 1))
        n = int(inside.sum())
        if n:
            mean, accuracy = float(confidences[inside].mean()), float(correct[inside].mean())
            gap += n * abs(mean - accuracy)
            rows.append({"low": edges[i], "high": edges[i + 1], "n": n, "confidence": mean, "accuracy": accuracy})
    return rows, gap / max(len(confidences), 1)
