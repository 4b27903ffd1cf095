"""Shipped weights: `<name>.safetensors` (tensors only, never pickled) beside `<name>.json` (the manifest).

The manifest describes the weights: format version, code version, the model config, the vocabulary,
the preprocessing (RenderConfig and the image convention), the weights file's SHA-256, and whatever
the caller adds (measured metrics and the command that measured them, training information). Loading
checks all of it against the tensors and fails with one ValueError line when anything disagrees.

Stage hand-off files (`save_module_weights`) hold only some top-level modules of an HMERModel (stage 1:
`encoder.*`; stage 2: `encoder.*` and `attention.*`), named exactly as in `HMERModel(config).state_dict()`,
and their manifest lists them under "modules". `init_from_weights` loads such a file (or a whole model)
into a model non-strictly and asserts that exactly the other modules' keys are missing. A residual encoder
may load into one with fewer blocks per stage (`shallower_stages`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from maskmatch.version import __version__
from maskmatch.data.render import RenderConfig
from maskmatch.data.vocab import SPECIALS, Vocabulary
from maskmatch.files import write_atomic
from maskmatch.model import HMERModel, ModelConfig

FORMAT = "maskmatch-weights"
FORMAT_VERSION = 1
CONVENTION = ("grayscale uint8 (H, W), ink bright (255) on a dark (0) background, scale-normalized by "
              "render_strokes (pen strokes) or normalize_bitmap (images) with this RenderConfig; the model "
              "reads image / 255 as float32 (B, 1, H, W), zero-padded at the bottom and right, with a "
              "(B, H, W) bool mask that is True on padding (data/batching.py collate)")
RESERVED = ("format", "format_version", "maskmatch_version", "weights", "model", "vocabulary", "preprocessing")
BUFFERS = ("running_mean", "running_var", "num_batches_tracked")  # BatchNorm's state: tensors, not parameters
PARTIAL = "modules"  # manifest key of a hand-off file: the top-level modules it holds (reserved there too)
# ModelConfig fields that decide each top-level module's tensors and what it computes: a hand-off file's
# module loads only into a model that agrees on them (dropout rates may differ). A module not listed is
# checked by its tensors' names and shapes only.
MODULE_FIELDS = {
    "encoder": ("in_channels", "encoder", "growth_rate", "block_layers", "stage_layers", "stem_channels",
                "stage_widths", "reduction", "d_model", "pos_temperature"),
    "decoder": ("d_model", "nhead", "num_decoder_layers", "dim_feedforward", "norm_first", "vocab_size",
                "pos_temperature"),
    "attention": ("d_model", "attention_maps"),  # stage 2's attention network (model/attention.py)
    "fusion": ("fusion", "d_model", "attention_maps"),  # gate and tokens differ in tensors and meaning
}


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
    _save(path, model, model.state_dict(), manifest, vocabulary, render)


def save_module_weights(path: str | Path, model: HMERModel, modules: tuple[str, ...] | list[str],
                        manifest: dict | None = None, vocabulary: Vocabulary | None = None,
                        render: RenderConfig | None = None) -> None:
    """As `save_weights`, but only the tensors of the top-level `modules` (e.g. ("encoder",)): a hand-off file.

    The manifest's "modules" lists them; `load_weights` refuses such a file, `init_from_weights` reads it.
    """
    modules = sorted(set(modules))
    present = {_module(k) for k in model.state_dict()}
    if not modules or not set(modules) <= present:
        raise ValueError(f"modules {modules} must be a non-empty subset of the model's {sorted(present)}")
    tensors = {k: v for k, v in model.state_dict().items() if _module(k) in modules}
    _save(path, model, tensors, manifest, vocabulary, render, modules)


def _module(key: str) -> str:
    """The top-level module of a state-dict key: "encoder.backbone.conv1.weight" -> "encoder"."""
    return key.split(".", 1)[0]


def _save(path, model: HMERModel, state: dict, manifest: dict | None, vocabulary: Vocabulary | None,
          render: RenderConfig | None, modules: list[str] | None = None) -> None:
    where = manifest_path(path)
    vocabulary = vocabulary or Vocabulary.load()
    render = render or RenderConfig()
    extra = dict(manifest or {})
    clash = sorted(set(extra) & set(RESERVED + (PARTIAL,)))
    if clash:
        raise ValueError(f"manifest keys {clash} are written by save_weights itself")
    if len(vocabulary) != model.config.vocab_size:
        raise ValueError(f"vocabulary has {len(vocabulary)} symbols, model.config.vocab_size is {model.config.vocab_size}")
    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    data = save_safetensors(tensors, metadata={"format": "pt", FORMAT: str(FORMAT_VERSION)})
    parameters = {k for k, _ in model.named_parameters()}
    full = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "maskmatch_version": __version__,
        "weights": {"file": Path(path).name, "sha256": hashlib.sha256(data).hexdigest(),
                    "parameters": sum(v.numel() for k, v in tensors.items() if k in parameters)},
        **({PARTIAL: modules} if modules else {}),
        "model": asdict(model.config),
        "vocabulary": list(vocabulary.symbols),
        "preprocessing": {"render": asdict(render), "convention": CONVENTION},
        **extra,
    }
    text = _manifest_text(full)  # fails before anything is written
    write_atomic(Path(path), lambda f: f.write(data))
    write_atomic(where, lambda f: f.write(text.encode("utf-8")))


def write_manifest(path: str | Path, manifest: dict) -> None:
    """Rewrites the manifest beside weights file `path` (atomically): for callers that add to it (test scores,
    calibration); the weights and their sha256 are untouched."""
    write_json(manifest_path(path), manifest)


def _manifest_text(manifest: dict) -> str:
    return json.dumps(manifest, indent=1, ensure_ascii=False) + "\n"


def load_weights(path: str | Path, device: str | torch.device = "cpu",
                 handoff: bool = False) -> tuple[HMERModel, dict]:
    """(model in eval mode on `device`, manifest); never unpickles. ValueError names what is wrong.

    A stage hand-off file (stage 1's encoder, stage 2's encoder and attention network) is refused unless
    `handoff`: then it is loaded into a whole model whose other modules keep their initial weights, with gate
    fusion when the file holds an attention network (what `maskmatch attention` draws from)."""
    path = Path(path)
    manifest = read_manifest(path)
    if PARTIAL in manifest:
        if not handoff:
            raise ValueError(f"{path}: holds only the {' and '.join(manifest[PARTIAL])} of a model (a stage "
                             "hand-off file); start `maskmatch finetune --init` from it")
        config = model_config(manifest)
        if "attention" in manifest[PARTIAL] and config.fusion == "none":
            config = dataclasses.replace(config, fusion="gate")
        model = HMERModel(config)
        init_from_weights(model, path)
        return model.to(device).eval(), manifest
    tensors = _read_tensors(path, manifest)
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


def init_from_weights(model: HMERModel, path: str | Path) -> dict:
    """Loads the modules a weights file holds (a hand-off file's, or all of a whole model's) into `model`.

    Non-strict, then checked: the file's model config must agree with `model.config` on each held module's
    MODULE_FIELDS, every tensor must fit, and the keys left missing must be exactly the model's keys under
    the top-level modules the file does not hold (no unexpected keys). Returns the manifest; ValueError
    (one line) otherwise, with `model` possibly half-loaded.
    """
    path = Path(path)
    manifest = read_manifest(path)
    tensors = _read_tensors(path, manifest)
    held = set(manifest.get(PARTIAL) or {_module(k) for k in tensors})
    if {_module(k) for k in tensors} != held:
        raise ValueError(f"{path}: its tensors' modules {sorted({_module(k) for k in tensors})} are not the "
                         f"manifest's {sorted(held)}")
    absent = sorted(held - {_module(k) for k in model.state_dict()})
    if absent:
        hint = "; set model.fusion=gate (or tokens) to use its attention network" if "attention" in absent else ""
        raise ValueError(f"{path}: holds {', '.join(absent)} weights, which this model has no module for{hint}")
    theirs, ours = model_config(manifest), model.config
    tensors, shallower = shallower_stages(tensors, theirs, ours)
    if shallower:  # the file's encoder, less the blocks this model lacks
        theirs = dataclasses.replace(theirs, stage_layers=ours.stage_layers)
    for module in sorted(held):
        for name in MODULE_FIELDS.get(module, ()):
            if getattr(theirs, name) != getattr(ours, name):
                raise ValueError(f"{path}: its {module} has model.{name}={getattr(theirs, name)!r}, this model "
                                 f"{getattr(ours, name)!r}; set model.{name} to match")
    try:
        missing, unexpected = model.load_state_dict(tensors, strict=False)
    except RuntimeError as e:  # shape mismatches
        raise ValueError(f"{path}: tensors do not fit this model: {str(e).splitlines()[-1].strip()}") from None
    expected = {k for k in model.state_dict() if _module(k) not in held}
    if set(missing) != expected or unexpected:
        wrong = sorted(set(missing) ^ expected) + sorted(unexpected)
        raise ValueError(f"{path}: tensors do not match this model's {', '.join(sorted(held))} "
                         f"({len(wrong)} keys differ, e.g. {wrong[:3]})")
    return manifest


def shallower_stages(tensors: dict, theirs: ModelConfig, ours: ModelConfig) -> tuple[dict, bool]:
    """A residual encoder's tensors for one with fewer blocks in some stages: each stage keeps its first blocks
    (the first, strided one changes the map's shape; each later block adds a residual to it, so a network
    without the last ones still works, Veit et al. 2016, and retrains from there). Returns the tensors and
    whether any were dropped; the tensors unchanged where the encoders are not such a pair."""
    if not (theirs.encoder == ours.encoder == "resnet" and len(theirs.layers) == len(ours.layers)
            and theirs.layers != ours.layers and all(a <= b for a, b in zip(ours.layers, theirs.layers))):
        return tensors, False
    dropped = {f"encoder.backbone.stages.{stage}.{block}."
               for stage, (kept, held) in enumerate(zip(ours.layers, theirs.layers)) for block in range(kept, held)}
    return {k: v for k, v in tensors.items() if not any(k.startswith(d) for d in dropped)}, True


def extract_modules(source: str | Path, target: str | Path, modules: list[str]) -> None:
    """A hand-off file of some of `source`'s top-level modules (e.g. stage 2's encoder without its attention
    network, for a model with no fusion): the same tensors and manifest, "modules" and sha256 rewritten."""
    source = Path(source)
    manifest = read_manifest(source)
    tensors = _read_tensors(source, manifest)
    kept = {k: v for k, v in tensors.items() if _module(k) in modules}
    if {_module(k) for k in kept} != set(modules):
        raise ValueError(f"{source}: holds {sorted({_module(k) for k in tensors})}, not all of {sorted(modules)}")
    data = save_safetensors(kept, metadata={"format": "pt", FORMAT: str(FORMAT_VERSION)})
    weights = {**manifest["weights"], "file": Path(target).name, "sha256": hashlib.sha256(data).hexdigest(),
               "parameters": sum(v.numel() for k, v in kept.items() if not k.endswith(BUFFERS))}
    text = _manifest_text({**manifest, "weights": weights, PARTIAL: sorted(modules),
                           "extracted_from": {"file": source.name, "sha256": manifest["weights"]["sha256"]}})
    write_atomic(Path(target), lambda f: f.write(data))
    write_atomic(manifest_path(target), lambda f: f.write(text.encode("utf-8")))


def _read_tensors(path: Path, manifest: dict) -> dict[str, torch.Tensor]:
    """The tensors of weights file `path`, checked against the manifest's sha256; never unpickles."""
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
    # files written before the encoder family (0.1.0) name the DenseNet encoder.densenet.*
    return {k.replace("encoder.densenet.", "encoder.backbone.", 1): v for k, v in tensors.items()}


def read_manifest(path: str | Path) -> dict:
    """The checked manifest beside weights file `path`; ValueError if missing, malformed or inconsistent."""
    where = manifest_path(path)
    if not Path(path).is_file():
        raise ValueError(f"{path}: no such weights file")
    manifest = read_format(where, "the manifest", FORMAT, FORMAT_VERSION, "not a maskmatch weights manifest")
    missing = [k for k in RESERVED if k not in manifest]
    if missing or not isinstance(manifest["weights"], dict):
        raise ValueError(f"{where}: the manifest lacks {missing or ['weights']}")
    config, vocabulary = model_config(manifest), manifest_vocabulary(manifest)
    if len(vocabulary) != config.vocab_size:
        raise ValueError(f"{where}: {len(vocabulary)} vocabulary symbols for a model of vocab_size {config.vocab_size}")
    render_config(manifest)
    return manifest


def read_format(path: Path, what: str, format: str, version: int, other: str) -> dict:
    """The JSON object in `path` whose "format" is `format` at `version` (a manifest, an ensemble file); ValueError
    names what is wrong (`other`: the message for another kind of file)."""
    try:
        record = json.loads(path.read_text("utf-8"))
    except OSError as e:
        raise ValueError(f"{path}: cannot read {what} ({e.strerror or e})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: {what} is not valid JSON ({e})") from None
    if not isinstance(record, dict) or record.get("format") != format:
        raise ValueError(f"{path}: {other}")
    if record.get("format_version") != version:
        raise ValueError(f"{path}: format version {record.get('format_version')}, this maskmatch reads {version}")
    return record


def write_json(path: Path, record: dict) -> None:
    """Writes a JSON record (a manifest, an ensemble file) atomically."""
    text = _manifest_text(record)
    write_atomic(path, lambda f: f.write(text.encode("utf-8")))


def training_data(manifest: dict) -> dict:
    """The data section of the config a model trained with (root, train_split, val_size, ...); {} where its
    manifest has none."""
    return ((manifest.get("training") or {}).get("config") or {}).get("data") or {}


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


