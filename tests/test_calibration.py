"""Confidence calibration: the logistic fit, the reliability table, and confidences on recognitions."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from maskmatch.calibration import confidence, fit_logistic, reliability
from maskmatch.model import HMERModel, ModelConfig
from maskmatch.recognizer import Recognizer
from maskmatch.weights import manifest_path, save_weights


def test_fit_recovers_a_known_logistic():
    rng = np.random.default_rng(0)
    scores = rng.uniform(-3, 0, 20000)
    correct = rng.random(20000) < 1 / (1 + np.exp(-(2.0 * scores + 3.0)))
    a, b = fit_logistic(scores, correct)
    assert a == pytest.approx(2.0, abs=0.15) and b == pytest.approx(3.0, abs=0.2)


def test_fit_stays_finite_when_the_classes_separate():
    a, b = fit_logistic(np.array([-2.0, -1.5, -0.2, -0.1]), np.array([False, False, True, True]))
    assert np.isfinite([a, b]).all() and a > 0


def test_reliability_bins_hand_worked():
    rows, ece = reliability(np.array([0.05, 0.15, 0.95, 1.0]), np.array([0, 0, 1, 0], float))
    assert [(r["low"], r["n"]) for r in rows] == [(0.0, 1), (0.1, 1), (0.9, 2)]
    assert ece == pytest.approx((0.05 + 0.15 + 2 * abs(0.975 - 0.5)) / 4)


def test_confidence_from_the_manifest():
    manifest = {"calibration": {"beam": {"a": 1.0, "b": 0.0}}}
    assert confidence(manifest, "beam", 0.0) == 0.5 and confidence(manifest, "beam", -float("inf")) == 0.0
    assert confidence(manifest, "greedy", 0.0) is None and confidence({}, "beam", 0.0) is None


def test_recognitions_carry_calibrated_confidences(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "m.safetensors"
    save_weights(path, HMERModel(ModelConfig.tiny(max_len=6)), {"command": "test"})
    manifest = json.loads(manifest_path(path).read_text("utf-8"))
    manifest["calibration"] = {"greedy": {"a": 2.0, "b": 1.0}, "beam": {"a": 2.0, "b": 1.0, "beam_size": 4}}
    manifest_path(path).write_text(json.dumps(manifest), "utf-8")
    image = np.zeros((40, 90), np.uint8)
    image[10:30, 20:70] = 255
    r = Recognizer.load(path).decode([image], beam_size=4, n_best=3)[0]
    assert [a.latex for a in r.alternatives][0] == r.latex and r.confidence == r.alternatives[0].confidence
    assert all(0 <= a.confidence <= 1 for a in r.alternatives)
    assert r.confidence == pytest.approx(1 / (1 + np.exp(-(2 * r.score + 1))), abs=1e-4)
