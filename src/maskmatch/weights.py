"""Shipped weights: `<name>.safetensors` (tensors only, never pickled) beside `<name>.json` (the manifest).

The manifest describes the weights: format version, code version, the model config, the vocabulary,
the preprocessing (RenderConfig and the image convention), the weights file's SHA-256, and whatever
the caller adds (measured metrics and the command that measured them, training information). Loading
checks all of it against the tensors and fails with one ValueError line when anything disagrees.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from maskmatch import __version__
from maskmatch.data.render import RenderConfig
from maskmatch.data.vocab import SPECIALS, Vocabulary
from maskmatch.model import HMERModel, ModelConfig

FORMAT = "maskmatch-weights"
FORMAT_VERSION = 1
CONVENTION = ("grayscale uint8 (H, W), ink bright (255) on a dark (0) background, scale-normalized by "
              "render_strokes (pen strokes) or normalize_bitmap (images) with this RenderConfig; the model "
              "reads image / 255 as float32 (B, 1, H, W), zero-padded at the bottom and right, with a "
              "(B, H, W) bool mask that is True on padding (data/batching.py collate)")
RESERVED = ("format", "format_version", "maskmatch_version", "weights", "model", "vocabulary", "preprocessing")


def manifest_path(path: str | Path) -> Path:
    """`model.safetensors` -> `model.json`."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"{path}: weights file names end in .safetensors")
    return path.with_suffix(".json")


def save_weights(path: str | Path, model: HMERModel, manifest: dict | None = None,
                 vocabulary: Vocabulary | None = None, render: RenderConfig | None = None) -> None:
    """Writes `path` (.safetensors) and its manifest `.json` beside it, each atomically.

    manifest: the caller's keys (e.g. "metrics", "command", "training"), JSON-serializable; the keys in
    RESERVED are written here. vocabulary and render default to the standard ones the data build uses.
    """
    where = manifest_path(path)
    vocabulary = vocabulary or Vocabulary.load()
    render = render or RenderConfig()
    extra = dict(manifest or {})
    clash = sorted(set(extra) & set(RESERVED))
    if clash:
        raise ValueError(f"manifest keys {clash} are written by save_weights itself")
    if len(vocabulary) != model.config.vocab_size:
        raise ValueError(f"vocabulary has {len(vocabulary)} symbols, model.config.vocab_size is {model.config.vocab_size}")
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    data = save_safetensors(tensors, metadata={"format": "pt", FORMAT: str(FORMAT_VERSION)})
    full = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "maskmatch_version": __version__,
        "weights": {"file": Path(path).name, "sha256": hashlib.sha256(data).hexdigest(),
                    "parameters": sum(p.numel() for p in model.parameters())},
        "model": asdict(model.config),
        "vocabulary": list(vocabulary.symbols),
        "preprocessing": {"render": asdict(render), "convention": CONVENTION},
        **extra,
    }
    text = json.dumps(full, indent=1, ensure_ascii=False) + "\n"  # fails before anything is written
    _write_atomic(Path(path), data)
    _write_atomic(where, text.encode("utf-8"))


def load_weights(path: str | Path, device: str | torch.device = "cpu") -> tuple[HMERModel, dict]:
    """(model in eval mode on `device`, manifest); never unpickles. ValueError names what is wrong."""
    path = Path(path)
    manifest = read_manifest(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ValueError(f"{path}: cannot read weights ({e.strerror or e})") from None
    if hashlib.sha256(data).hexdigest() != manifest["weights"].get("sha256"):
        raise ValueError(f"{path}: the weights do not match their manifest's sha256 (write both with save_weights)")
    try:
        tensors = load_safetensors(data)
    except (SafetensorError, ValueError, RuntimeError) as e:
        raise ValueError(f"{path}: not a valid safetensors file ({e})") from None
    model = HMERModel(model_config(manifest))
    missing, unexpected = model.state_dict().keys() - tensors.keys(), tensors.keys() - model.state_dict().keys()
    if missing or unexpected:
        raise ValueError(f"{path}: tensors do not match the manifest's model (missing {sorted(missing)[:3]}, "
                         f"unexpected {sorted(unexpected)[:3]})")
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as e:  # shape mismatches
        raise ValueError(f"{path}: tensors do not match the manifest's model: {str(e).splitlines()[-1].strip()}") from None
    return model.to(device).eval(), manifest


def read_manifest(path: str | Path) -> dict:
    """The checked manifest beside weights file `path`; ValueError if missing, malformed or inconsistent."""
    where = manifest_path(path)
    if not Path(path).is_file():
        raise ValueError(f"{path}: no such weights file")
    try:
        manifest = json.loads(where.read_text("utf-8"))
    except OSError as e:
        raise ValueError(f"{where}: cannot read the manifest ({e.strerror or e})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{where}: the manifest is not valid JSON ({e})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ValueError(f"{where}: not a maskmatch weights manifest")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{where}: format version {manifest.get('format_version')}, this maskmatch reads {FORMAT_VERSION}")
    missing = [k for k in RESERVED if k not in manifest]
    if missing or not isinstance(manifest["weights"], dict):
        raise ValueError(f"{where}: the manifest lacks {missing or ['weights']}")
    config, vocabulary = model_config(manifest), manifest_vocabulary(manifest)
    if len(vocabulary) != config.vocab_size:
        raise ValueError(f"{where}: {len(vocabulary)} vocabulary symbols for a model of vocab_size {config.vocab_size}")
    render_config(manifest)
    return manifest


def model_config(manifest: dict) -> ModelConfig:
    return _build(ModelConfig, manifest.get("model"), "model")


def render_config(manifest: dict) -> RenderConfig:
    return _build(RenderConfig, (manifest.get("preprocessing") or {}).get("render"), "preprocessing.render")


def manifest_vocabulary(manifest: dict) -> Vocabulary:
    symbols = manifest.get("vocabulary")
    if (not isinstance(symbols, list) or not all(isinstance(s, str) for s in symbols)
            or tuple(symbols[: len(SPECIALS)]) != SPECIALS or len(set(symbols)) != len(symbols)):
        raise ValueError(f"manifest vocabulary must be a list of distinct strings starting with {list(SPECIALS)}")
    return Vocabulary(tuple(symbols))


def _build(cls, values, key: str):
    if not isinstance(values, dict):
        raise ValueError(f"manifest {key!r} must be a mapping")
    try:
        return cls(**values)
    except (TypeError, ValueError) as e:
        raise ValueError(f"manifest {key!r}: {e}") from None


def _write_atomic(path: Path, data: bytes) -> None:
    """Writes to a temporary file in the same folder, then renames it over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it private; weights are meant to be read
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
