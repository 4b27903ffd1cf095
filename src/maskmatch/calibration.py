"""Confidence in 0-1 from a hypothesis's score, calibrated on the model's held-out slice: `maskmatch calibrate`.

Method: logistic regression of "the answer is exactly right" on the answer's length-normalized score
(model/search.py), fitted by Newton's method on the held-out slice of the training split that the model
was selected on (its manifest's data.val_size and val_seed), once for greedy decoding and once for beam
search, whose scores are on different scales. The fit is stored in the model's manifest ("calibration");
results/calibration.md shows the reliability table: answers binned by confidence, against the share
that were right. Alternatives below the first are given the same mapping of their own score.
"""

from __future__ import annotations

import argparse
import math
import shlex
from pathlib import Path

import numpy as np

from maskmatch.cli_args import positive_int
from maskmatch.errors import UserError

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


def held_out_slice(rec, root: Path) -> tuple[list[np.ndarray], list[list[str]]]:
    """The images and canonical reference tokens of a Recognizer's model's held-out validation slice of
    root/train (the manifest's data.val_size and val_seed); UserError if the data is not the model's."""
    from maskmatch.data.render import RenderConfig
    from maskmatch.metrics import canonical
    from maskmatch.train.data import held_out_split, open_split

    data = ((rec.manifest.get("training") or {}).get("config") or {}).get("data") or {}
    cache = open_split(root, data.get("train_split", "train"))
    if tuple(cache.vocabulary) != rec.vocabulary.symbols:
        raise UserError(f"{root}: its vocabulary is not the model's")
    if RenderConfig(**cache.render_config) != rec.render:
        raise UserError(f"{root}: rendered at another scale than the model's; give the data it was trained on")
    _, val = held_out_split(len(cache), int(data.get("val_size", 300)), int(data.get("val_seed", 0)), cache.expressions)
    images = [cache[int(i)][0] for i in val]
    return images, [canonical(rec.vocabulary.decode(cache[int(i)][1].tolist())) for i in val]


def _calibrate(args: argparse.Namespace) -> int:
    from maskmatch.inference_commands import size_batches
    from maskmatch.metrics import canonical
    from maskmatch.recognizer import Recognizer
    from maskmatch.weights import manifest_path, read_manifest, write_manifest

    try:
        rec = Recognizer.load(args.model, args.device)
    except ValueError as e:
        raise UserError(str(e)) from None
    images, references = held_out_slice(rec, Path(args.data))
    fits, tables = {}, []
    for decoding, beam in (("greedy", 1), ("beam", args.beam)):
        scores = np.zeros(len(images))
        correct = np.zeros(len(images), bool)
        for batch in size_batches(images, args.batch_size):
            for j, r in zip(batch, rec.decode([images[j] for j in batch], beam)):
                scores[j], correct[j] = r.score, canonical(r.latex) == references[j]
        a, b = fit_logistic(scores, correct)
        fits[decoding] = {"a": round(a, 6), "b": round(b, 6), **({"beam_size": beam} if beam > 1 else {})}
        confidences = 1.0 / (1.0 + np.exp(-(a * scores + b)))
        rows, ece = reliability(confidences, correct)
        tables.append(_table(decoding if beam == 1 else f"beam {beam}", rows, ece, correct))
        print(tables[-1], flush=True)
    command = shlex.join(["maskmatch", "calibrate", "--model", args.model, "--data", args.data, "--out", args.out]
                         + (["--beam", str(args.beam)] if args.beam != 10 else []))
    manifest = read_manifest(args.model)
    manifest["calibration"] = {"method": METHOD, "images": len(images), **fits, "command": command}
    write_manifest(args.model, manifest)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    text = (f"# Confidence calibration\n\nMade by `{command}`; do not edit by hand.\n\nMethod: {METHOD} "
            f"({len(images)} images). Each table bins the answers by confidence.\n\n" + "\n\n".join(tables) + "\n")
    (out / "calibration.md").write_text(text, "utf-8")
    print(f"wrote the calibration into {manifest_path(args.model)} and {out}/calibration.md")
    return 0


def _table(decoding: str, rows: list[dict], ece: float, correct: np.ndarray) -> str:
    lines = [f"{decoding}: {100 * correct.mean():.2f}% exactly right; expected calibration error {ece:.3f}", "",
             "| confidence | answers | mean confidence | share right |", "|---|---|---|---|"]
    lines += [f"| {r['low']:.1f}-{r['high']:.1f} | {r['n']} | {r['confidence']:.3f} | {r['accuracy']:.3f} |"
              for r in rows]
    return "\n".join(lines)


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("calibrate", help="fit the 0-1 confidence of a model on its held-out slice")
    p.add_argument("--model", required=True, metavar="PATH", help="weights (.safetensors); its manifest is updated")
    p.add_argument("--data", default="data/crohme", metavar="DIR", help="the built data it was trained on")
    p.add_argument("--out", default="results", metavar="DIR", help="where calibration.md goes (default results)")
    p.add_argument("--beam", type=positive_int, default=10, metavar="N", help="beam size (default 10)")
    p.add_argument("--batch-size", type=positive_int, default=16, metavar="N", help="default 16")
    p.add_argument("--device", help="torch device, e.g. cpu or cuda (default: cuda if available)")
    p.set_defaults(run=_calibrate)
