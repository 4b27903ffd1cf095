"""Ensemble files: `ensemble.json`, naming weights files in its folder that decode as one (model/ensemble.py).

    {"format": "maskmatch-ensemble", "format_version": 1,
     "members": [{"file": "model.safetensors", "sha256": "..."}, {"file": "model-2.safetensors", "sha256": "..."}],
     "metrics": {...}, "calibration": {...}, "command": "maskmatch ensemble ..."}

Members are whole models (weights.py's files, each with its own manifest), in the file's folder, so that the
folder moves as one; their sha256 is recorded, so that a member replaced by another run's model is refused
rather than decoded. The first member is the ensemble's best single model: what a continuation starts from
(`finetune --init DIR/model.safetensors`) and what `export` writes when asked for the ensemble.
Whatever else the file holds (validation and test scores, calibration, the commands) describes the ensemble.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from maskmatch.weights import manifest_path, read_format, read_manifest, write_json

FORMAT = "maskmatch-ensemble"
FORMAT_VERSION = 1
NAME = "ensemble.json"  # what `maskmatch ensemble` writes and the package ships
RESERVED = ("format", "format_version", "members")


def is_ensemble_file(path) -> bool:
    """Whether `path` names an ensemble file (by its suffix: weights files end in .safetensors)."""
    return isinstance(path, (str, Path)) and Path(path).suffix.lower() == ".json"


def member_name(i: int) -> str:
    """The i-th member's file name in an ensemble folder: model.safetensors, model-2.safetensors, ..."""
    return "model.safetensors" if i == 0 else f"model-{i + 1}.safetensors"


def read_ensemble(path: str | Path) -> tuple[list[Path], dict]:
    """(the members' weights paths, the whole record) of an ensemble file; ValueError names what is wrong."""
    path = Path(path)
    record = read_format(path, "the ensemble file", FORMAT, FORMAT_VERSION,
                         "not a maskmatch ensemble file (weights files end in .safetensors)")
    members = record.get("members")
    if (not isinstance(members, list) or len(members) < 2
            or not all(isinstance(m, dict) and isinstance(m.get("file"), str) for m in members)):
        raise ValueError(f"{path}: 'members' must list at least two {{file, sha256}} entries")
    if len({m.get("sha256") for m in members}) < len(members):
        raise ValueError(f"{path}: a model is listed twice; an ensemble's members are different models")
    paths = []
    for m in members:
        member = path.parent / m["file"]
        if Path(m["file"]).name != m["file"]:
            raise ValueError(f"{path}: member {m['file']!r} must be a file name in the ensemble's folder")
        if read_manifest(member)["weights"].get("sha256") != m.get("sha256"):
            raise ValueError(f"{member}: not the model this ensemble was made of (its sha256 differs)")
        paths.append(member)
    return paths, record


def make_ensemble(models: list[Path], out: Path, extra: dict) -> Path:
    """Copies the models (weights and manifests) into folder `out` as its members, first as model.safetensors,
    and writes `out`/ensemble.json with `extra` (scores, commands); returns its path. Members of a larger
    ensemble that `out` held before are removed."""
    if len(models) < 2:
        raise ValueError(f"an ensemble needs at least two models, got {len(models)}")
    if set(extra) & set(RESERVED):
        raise ValueError(f"ensemble keys {sorted(set(extra) & set(RESERVED))} are written by make_ensemble itself")
    manifests = [read_manifest(m) for m in models]
    shas = [m["weights"]["sha256"] for m in manifests]
    if len(set(shas)) < len(shas):
        raise ValueError("a model is given twice; an ensemble's members are different models")
    out.mkdir(parents=True, exist_ok=True)
    # all copies first under temporary names, then renamed: a source may be another member's target (a reordered
    # ensemble shipped again), and no source is overwritten before it has been read
    staged = []
    for i, model in enumerate(models):
        for source, target in ((Path(model), out / member_name(i)), (manifest_path(model), manifest_path(out / member_name(i)))):
            temporary = out / f".{target.name}.staged"
            shutil.copyfile(source, temporary)
            staged.append((temporary, target))
    for temporary, target in staged:
        os.replace(temporary, target)
    remove_members(out, len(models))
    members = [{"file": member_name(i), "sha256": sha} for i, sha in enumerate(shas)]
    path = out / NAME
    write_ensemble(path, {"format": FORMAT, "format_version": FORMAT_VERSION, "members": members, **extra})
    return path


def remove_members(folder: Path, keep: int) -> None:
    """Removes from `folder` the member files beyond the first `keep` (model-N.*), and its ensemble file when
    fewer than two are kept: what a smaller ensemble, or one model, shipped over a larger one leaves behind."""
    for path in [*folder.glob("model-*.safetensors"), *folder.glob("model-*.json")]:
        number = path.stem.removeprefix("model-")
        if number.isdigit() and int(number) > keep:
            path.unlink(missing_ok=True)
    if keep < 2:
        (folder / NAME).unlink(missing_ok=True)


def write_ensemble(path: str | Path, record: dict) -> None:
    """Rewrites an ensemble file (atomically): for callers that add to it (test scores, calibration)."""
    write_json(Path(path), record)
