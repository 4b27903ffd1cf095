"""`maskmatch validate`, `average` and `calibrate`: what a model does on its held-out slice of the training split.

`validate` decodes the held-out slice of the training split that the model was selected on (its manifest's
data.val_size and val_seed) greedily, as `recognize` does (with the grammar), so models from different runs
compare by one protocol. `average` takes the mean of the EMA weights of a run's last checkpoints (checkpoint
averaging, as in Vaswani et al. 2017), which smooths the last stretch of a run beyond what the EMA alone
does, or of whole models of runs that started from one model (a uniform model soup, Wortsman et al. 2022);
the average inherits the manifest of the run's exported model (`--like`: config, vocabulary, preprocessing,
training record), adds the averaged steps, and is validated beside `--like` by `validate`'s
protocol. `ensemble` copies models into one folder with an ensemble file naming them (ensemble_file.py), after
validating each and the ensemble by that protocol. `calibrate` fits the 0-1 confidence of calibration.py on the
slice and writes it into the manifest (or the ensemble file).
"""

from __future__ import annotations

import argparse
import copy
import shlex
from pathlib import Path

from maskmatch.cli_args import positive_int
from maskmatch.errors import UserError
from maskmatch.inference_commands import decode_batched, model_data
from maskmatch.metrics import canonical


def average_state(states: list[dict]) -> dict:
    """The element-wise mean of state dicts with the same keys; integer tensors (BatchNorm's counters) come
    from the last one."""
    keys = set(states[0])
    for s in states[1:]:
        if set(s) != keys:
            raise ValueError("the checkpoints hold different models (their keys differ)")
    out = {}
    for k, v in states[-1].items():
        out[k] = sum(s[k].double() for s in states).div(len(states)).to(v.dtype) if v.is_floating_point() else v.clone()
    return out


def held_out_slice(rec, root: Path) -> tuple[list, list[list[str]]]:
    """The images and canonical reference tokens of a Recognizer's model's held-out validation slice of
    root/train (the manifest's data.val_size and val_seed); UserError if the data is not the model's."""
    from maskmatch.data.loading import held_out_split, open_split
    from maskmatch.data.render import RenderConfig

    split, val_size, val_seed = _held_out(rec.manifest)
    cache = open_split(root, split)
    if tuple(cache.vocabulary) != rec.vocabulary.symbols:
        raise UserError(f"{root}: its vocabulary is not the model's")
    if RenderConfig(**cache.render_config) != rec.render:
        raise UserError(f"{root}: rendered at another scale than the model's; give the data it was trained on")
    _, val = held_out_split(len(cache), val_size, val_seed, cache.expressions)
    images = [cache[int(i)][0] for i in val]
    return images, [canonical(rec.vocabulary.decode(cache[int(i)][1].tolist())) for i in val]


def held_out_exprate(rec, data: Path) -> tuple[float, int]:
    """Greedy ExpRate (%) of a Recognizer on its model's held-out slice of data/train, and the slice's size."""
    images, references = held_out_slice(rec, data)
    right = sum(canonical(r.latex) == ref for r, ref in zip(decode_batched(rec, images, 1, 16), references))
    return 100.0 * right / max(len(images), 1), len(images)


def _calibrate(args: argparse.Namespace) -> int:
    import numpy as np

    from maskmatch.calibration import METHOD, fit_logistic, reliability
    from maskmatch.ensemble_file import is_ensemble_file, read_ensemble, write_ensemble
    from maskmatch.recognizer import Recognizer
    from maskmatch.weights import manifest_path, read_manifest, write_manifest

    args.data = args.data or model_data(args.model)
    try:
        rec = Recognizer.load(args.model, args.device)
    except ValueError as e:
        raise UserError(str(e)) from None
    images, references = held_out_slice(rec, Path(args.data))
    fits, tables = {}, []
    for decoding, beam in (("greedy", 1), ("beam", args.beam)):
        results = decode_batched(rec, images, beam, args.batch_size)
        scores = np.array([r.score for r in results])
        correct = np.array([canonical(r.latex) == ref for r, ref in zip(results, references)], bool)
        a, b = fit_logistic(scores, correct)
        fits[decoding] = {"a": round(a, 6), "b": round(b, 6), **({"beam_size": beam} if beam > 1 else {})}
        confidences = 1.0 / (1.0 + np.exp(-(a * scores + b)))
        rows, ece = reliability(confidences, correct)
        tables.append(_table(decoding if beam == 1 else f"beam {beam}", rows, ece, correct))
        print(tables[-1], flush=True)
    command = shlex.join(["maskmatch", "calibrate", "--model", args.model, "--data", args.data, "--out", args.out]
                         + (["--beam", str(args.beam)] if args.beam != 10 else []))
    calibration = {"method": METHOD, "images": len(images), **fits, "command": command}
    if is_ensemble_file(args.model):
        written = Path(args.model)
        write_ensemble(written, {**read_ensemble(written)[1], "calibration": calibration})
    else:
        written = manifest_path(args.model)
        write_manifest(args.model, {**read_manifest(args.model), "calibration": calibration})
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    text = (f"# Confidence calibration\n\nMade by `{command}`; do not edit by hand.\n\nMethod: {METHOD} "
            f"({len(images)} images). Each table bins the answers by confidence.\n\n" + "\n\n".join(tables) + "\n")
    (out / "calibration.md").write_text(text, "utf-8")
    print(f"wrote the calibration into {written} and {out}/calibration.md")
    return 0


def _table(decoding: str, rows: list[dict], ece: float, correct) -> str:
    lines = [f"{decoding}: {100 * correct.mean():.2f}% exactly right; expected calibration error {ece:.3f}", "",
             "| confidence | answers | mean confidence | share right |", "|---|---|---|---|"]
    lines += [f"| {r['low']:.1f}-{r['high']:.1f} | {r['n']} | {r['confidence']:.3f} | {r['accuracy']:.3f} |"
              for r in rows]
    return "\n".join(lines)


def _average(args: argparse.Namespace) -> int:
    import torch

    from maskmatch.finetune.module import checkpoint_meta, ema_model
    from maskmatch.model.encoder import fold_batchnorms
    from maskmatch.recognizer import Recognizer
    from maskmatch.weights import load_weights, manifest_vocabulary, read_manifest, render_config, save_weights

    args.data = args.data or model_data(args.like)
    try:
        like = read_manifest(args.like)
        models, steps = [], []
        for path in args.checkpoints:
            if Path(path).suffix == ".safetensors":  # a whole model: averaging runs from one start (a model soup)
                model, manifest = load_weights(path, "cpu")
                models.append(model)
                steps.append(int((manifest.get("training") or {}).get("step", -1)))
                continue
            checkpoint = torch.load(path, map_location="cpu", weights_only=False)
            models.append(ema_model(checkpoint))
            steps.append(int(checkpoint.get("global_step", checkpoint_meta(checkpoint).get("step", -1))))
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        raise UserError(f"cannot read a checkpoint or --like: {' '.join(str(e).split())}") from None
    model = models[-1]
    try:
        model.load_state_dict(average_state([m.state_dict() for m in models]))
    except ValueError as e:
        raise UserError(str(e)) from None
    reference = Recognizer.load(args.like, "cpu")
    before, n = held_out_exprate(reference, Path(args.data))
    averaged = Recognizer(fold_batchnorms(copy.deepcopy(model)), reference.vocabulary, reference.render, like, "cpu")
    after, _ = held_out_exprate(averaged, Path(args.data))
    print(f"validation ExpRate (greedy, {n} held-out images): {args.like} {before:.2f}%, "
          f"average of {len(models)} checkpoints (steps {', '.join(map(str, steps))}) {after:.2f}%")
    manifest = {k: like[k] for k in ("command", "training") if k in like}
    manifest["training"] = {**manifest.get("training", {}), "averaged_steps": steps,
                            "averaged_command": shlex.join(["maskmatch", "average", *args.checkpoints,
                                                            "--like", args.like, "--data", args.data,
                                                            "--out", args.out])}
    manifest["metrics"] = {"validation": {"exprate": round(after, 4), "decoding": "greedy, with the grammar",
                                          "images": "held-out slice of the training split"}}
    save_weights(args.out, model, manifest, manifest_vocabulary(like), render_config(like))
    print(f"wrote {args.out}; {'better' if after > before else 'not better'} than {args.like} on validation")
    return 0


def _validate(args: argparse.Namespace) -> int:
    from maskmatch.recognizer import Recognizer

    for paths in [args.models] if args.ensemble else [[p] for p in args.models]:
        try:
            rec = Recognizer.load(paths, args.device)
        except ValueError as e:
            raise UserError(str(e)) from None
        exprate, n = held_out_exprate(rec, Path(args.data or model_data(paths[0])))
        print(f"{' + '.join(paths)}\tvalidation ExpRate {exprate:.2f}% (greedy, {n} held-out images)", flush=True)
    return 0


def _ensemble(args: argparse.Namespace) -> int:
    from maskmatch.ensemble_file import is_ensemble_file, make_ensemble
    from maskmatch.recognizer import Recognizer
    from maskmatch.weights import read_manifest

    args.data = args.data or model_data(args.models[0])
    if len(args.models) < 2:
        raise UserError(f"an ensemble needs at least two models, got {len(args.models)}")
    if any(is_ensemble_file(p) for p in args.models):
        raise UserError("an ensemble file cannot be a member of an ensemble: give its members' weights")
    try:
        slices = {p: _held_out(read_manifest(p)) for p in args.models}
    except ValueError as e:
        raise UserError(str(e)) from None
    if len(set(slices.values())) > 1:  # the ensemble is scored on the first one's slice, each member on its own
        raise UserError("the models were selected on different held-out slices (data.train_split, val_size, "
                        f"val_seed: {', '.join(f'{p} {v}' for p, v in slices.items())})")
    scores = []
    try:
        for paths in [[p] for p in args.models] + [args.models]:
            exprate, n = held_out_exprate(Recognizer.load(paths, args.device), Path(args.data))
            scores.append(round(exprate, 4))
            print(f"{' + '.join(paths)}\tvalidation ExpRate {exprate:.2f}% (greedy, {n} held-out images)", flush=True)
        command = shlex.join(["maskmatch", "ensemble", *args.models, "--data", args.data, "--out", args.out])
        validation = {"exprate": scores[-1], "members": scores[:-1], "decoding": "greedy, with the grammar",
                      "images": "the first member's held-out slice of the training split"}
        written = make_ensemble([Path(p) for p in args.models], Path(args.out),
                                {"metrics": {"validation": validation}, "command": command})
    except (ValueError, OSError) as e:
        raise UserError(str(e)) from None
    best = max(scores[:-1])
    print(f"wrote {written}; the ensemble is {'better' if scores[-1] > best else 'not better'} than its best member "
          "on validation")
    if scores[0] < best:
        print(f"note: the first model is not the best alone ({scores[0]:.2f}% against {best:.2f}%); it is the "
              "ensemble's model.safetensors, what continuations and export start from")
    return 0


def _held_out(manifest: dict) -> tuple:
    """The held-out slice a model was selected on: its training data's split, val_size and val_seed."""
    from maskmatch.weights import training_data

    data = training_data(manifest)
    return data.get("train_split", "train"), int(data.get("val_size", 300)), int(data.get("val_seed", 0))


def register(commands: argparse._SubParsersAction) -> None:
    v = commands.add_parser("validate", help="greedy ExpRate of models on their held-out slice of the training split")
    v.add_argument("models", nargs="+", metavar="WEIGHTS", help="weights (.safetensors)")
    v.add_argument("--data", metavar="DIR", help="the built data they trained on (default: each one's own, as its "
                   "manifest names it)")
    v.add_argument("--ensemble", action="store_true",
                   help="validate the ensemble of the models (on the first one's held-out slice), not each")
    v.add_argument("--device", help="torch device, e.g. cpu or cuda (default: cuda if available)")
    v.set_defaults(run=_validate)

    e = commands.add_parser("ensemble", help="several models as one ensemble: validated, copied into one folder")
    e.add_argument("models", nargs="+", metavar="WEIGHTS",
                   help="weights (.safetensors), the best single one first: it becomes DIR/model.safetensors")
    e.add_argument("--data", metavar="DIR", help="the built data they trained on (default: the first one's, as its "
                   "manifest names it)")
    e.add_argument("--out", required=True, metavar="DIR", help="the folder of the members and ensemble.json "
                   "(then: --model DIR/ensemble.json)")
    e.add_argument("--device", help="torch device, e.g. cpu or cuda (default: cuda if available)")
    e.set_defaults(run=_ensemble)

    p = commands.add_parser("average", help="average the EMA weights of a run's last checkpoints, or of models")
    p.add_argument("checkpoints", nargs="+", metavar="CKPT",
                   help="finetune checkpoints (.ckpt), oldest first, or models (.safetensors) of runs that started "
                   "from one model")
    p.add_argument("--like", required=True, metavar="WEIGHTS",
                   help="the run's exported model.safetensors: the manifest the average inherits, and the model "
                   "it is validated against")
    p.add_argument("--data", metavar="DIR", help="the built data the run trained on (default: --like's, as its "
                   "manifest names it)")
    p.add_argument("--out", required=True, metavar="WEIGHTS", help="where the average goes (.safetensors)")
    p.set_defaults(run=_average)

    c = commands.add_parser("calibrate", help="fit the 0-1 confidence of a model on its held-out slice")
    c.add_argument("--model", required=True, metavar="PATH",
                   help="weights (.safetensors) or an ensemble file (.json); its manifest is updated")
    c.add_argument("--data", metavar="DIR", help="the built data it was trained on (default: as its manifest names it)")
    c.add_argument("--out", default="results", metavar="DIR", help="where calibration.md goes (default results)")
    c.add_argument("--beam", type=positive_int, default=10, metavar="N", help="beam size (default 10)")
    c.add_argument("--batch-size", type=positive_int, default=16, metavar="N", help="default 16")
    c.add_argument("--device", help="torch device, e.g. cpu or cuda (default: cuda if available)")
    c.set_defaults(run=_calibrate)
