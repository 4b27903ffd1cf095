"""`maskmatch export --onnx`: the recognizer as three ONNX graphs for onnxruntime (see onnx_model.py), checked
against torch.

The encoder graph ends in the decoder's memory (each layer's cross-attention keys and values), so an image
is encoded once however many beams read it; the decoder graph reads a token prefix and returns its keys and
values, which the step graph extends one token at a time.
Both have dynamic batch, image and sequence sizes. The check decodes real images both ways and reports
the largest difference of the memory and of the first step's log-probabilities, and how many greedy and
beam outputs are identical; it goes into the export's manifest.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

from maskmatch.cli_args import positive_int
from maskmatch.data.vocab import SOS
from maskmatch.errors import UserError
from maskmatch.inference_commands import _prenormalized

OPSET = 18


def export_onnx(model, manifest: dict, out: Path) -> None:
    """Writes out/encoder.onnx, decoder.onnx, decoder_step.onnx and model.json (the manifest)."""
    import torch

    from maskmatch.onnx_model import DECODER, ENCODER, STEP, DecoderGraph, EncoderGraph, StepGraph

    model = model.cpu().eval()
    out.mkdir(parents=True, exist_ok=True)
    images = torch.rand(2, 1, 80, 200)
    mask = torch.zeros(2, 80, 200, dtype=torch.bool)
    mask[1, 50:, 120:] = True
    encoder = EncoderGraph(model).eval()  # eval: the exporter leaves the modules in their wrapper's mode
    with torch.no_grad():
        memory, attend = encoder(images, mask)
    tokens = torch.randint(3, model.config.vocab_size, (2, 5)).repeat_interleave(3, 0)  # 3 rows per image: beams
    model.decoder.positions(0, model.config.max_len + 1, torch.device("cpu"))  # the table, built before tracing
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the tracer's notes on shapes turned constants
        torch.onnx.export(encoder, (images, mask), str(out / ENCODER), input_names=["images", "mask"],
                          output_names=["memory", "attend"], opset_version=OPSET, dynamo=False,
                          dynamic_axes={"images": {0: "B", 2: "H", 3: "W"}, "mask": {0: "B", 1: "H", 2: "W"},
                                        "memory": {0: "B", 4: "S"}, "attend": {0: "B", 1: "S"}})
        prefix = DecoderGraph(model.decoder).eval()
        rows = {"memory": {0: "E", 4: "S"}, "attend": {0: "E", 1: "S"}}
        torch.onnx.export(prefix, (tokens, memory, attend), str(out / DECODER),
                          input_names=["tokens", "memory", "attend"], output_names=["logits", "present"],
                          opset_version=OPSET, dynamo=False,
                          dynamic_axes={"tokens": {0: "N", 1: "T"}, "logits": {0: "N", 1: "T"},
                                        "present": {0: "N", 4: "T"}, **rows})
        _, past = prefix(tokens, memory, attend)
        torch.onnx.export(StepGraph(model.decoder).eval(), (tokens[:, :1], past, memory, attend), str(out / STEP),
                          input_names=["tokens", "past", "memory", "attend"], output_names=["logits", "present"],
                          opset_version=OPSET, dynamo=False,
                          dynamic_axes={"tokens": {0: "N"}, "past": {0: "N", 4: "t"}, "logits": {0: "N"},
                                        "present": {0: "N", 4: "t + 1"}, **rows})
    write_manifest(out, manifest)


def write_manifest(out: Path, manifest: dict) -> None:
    from maskmatch import weights

    weights.write_manifest(out / "model.safetensors", manifest)  # out/model.json, the manifest's name beside weights


def check_export(model, folder: Path, images: list, beam: int) -> dict:
    """Decodes `images` (normalized uint8 arrays) with torch and with the export, one at a time -> the largest
    absolute difference of the memory and of the first step's log-probs, and identical greedy and beam outputs."""
    import torch

    from maskmatch.data.batching import collate
    from maskmatch.onnx_model import EncoderGraph, load_onnx

    onnx, _ = load_onnx(folder)
    torch_memory = EncoderGraph(model).eval()
    memory_diff = logp_diff = 0.0
    same = {"greedy": 0, f"beam {beam}": 0}
    seconds = {"torch": 0.0, "onnx": 0.0}
    for image in images:
        batch = collate([(0, image, torch.zeros(0, dtype=torch.long))])
        x, mask = batch.images, batch.mask
        with torch.inference_mode():
            features, feature_mask = model.encode(x, mask)
            memory, attend = onnx.encode(x, mask)
            memory_diff = max(memory_diff, (memory - torch_memory(x, mask)[0]).abs().max().item())
            start = torch.full((1, 1), SOS, dtype=torch.long)
            first = [d.decode(start, d.init_cache(*m)).log_softmax(-1) for d, m in
                     ((model.decoder, (features, feature_mask)), (onnx.decoder, (memory, attend)))]
            logp_diff = max(logp_diff, (first[0] - first[1]).abs().max().item())
            for name, width in (("greedy", 1), (f"beam {beam}", beam)):
                outputs = []
                for runtime, m in (("torch", model), ("onnx", onnx)):
                    t0 = time.perf_counter()
                    hyp = m.greedy(x, mask)[0] if width == 1 else m.beam_search(x, mask, beam_size=width)[0]
                    seconds[runtime] += time.perf_counter() - t0
                    outputs.append(hyp.ids)
                same[name] += outputs[0] == outputs[1]
    return {"images": len(images), "max_abs_diff_memory": memory_diff, "max_abs_diff_first_logprobs": logp_diff,
            "identical_outputs": same, "decode_seconds": {k: round(v, 2) for k, v in seconds.items()}}


def _export(args: argparse.Namespace) -> int:
    import torch

    from maskmatch.recognizer import Recognizer

    if not args.onnx:
        raise UserError("say what to export: --onnx (the one format so far)")
    try:
        import onnx  # noqa: F401  (torch's exporter writes through it)
        import onnxruntime  # noqa: F401
    except ImportError:
        raise UserError("export needs onnx and onnxruntime: pip install 'maskmatch[onnx]'") from None
    source = str(args.model or "the shipped weights")
    try:
        rec = Recognizer.load(args.model, "cpu", runtime="torch")
        if rec.members > 1:  # the graphs are one model's; an ensemble exports its first (best) member
            print(f"{args.model or 'the shipped model'} is an ensemble of {rec.members} models; exporting its first "
                  f"member, {rec.manifest['ensemble'][0]}", flush=True)
            source = rec.manifest["ensemble"][0]
            rec = Recognizer.load(source, "cpu", runtime="torch")
    except ValueError as e:
        raise UserError(str(e)) from None
    out = Path(args.out)
    start = time.perf_counter()
    record = {"opset": OPSET, "torch": torch.__version__, "from": source}
    export_onnx(rec.model, dict(rec.manifest, onnx=record), out)
    print(f"wrote {out}/encoder.onnx, decoder.onnx, decoder_step.onnx, model.json in "
          f"{time.perf_counter() - start:.1f} s")
    if args.check:
        record.update(checked_on=str(args.check), check=check_export(rec.model, out, _check_images(
            Path(args.check), args.check_count, rec), args.beam))
        print(json.dumps(record["check"], indent=1))
        write_manifest(out, dict(rec.manifest, onnx=record))
    return 0


def _check_images(folder: Path, count: int, rec) -> list:
    """The first `count` images of a built split (sorted by name), normalized as the model expects (as evaluate's)."""
    from maskmatch.data.images import load_image
    from maskmatch.data.bitmap import normalize_bitmap

    files = sorted((folder / "img").glob("*.png"))[:count]
    if not files:
        raise UserError(f"{folder}: no img/*.png to check on (a split built by maskmatch data build)")
    as_is = _prenormalized(folder, rec.render)
    return [load_image(f) if as_is else normalize_bitmap(load_image(f), rec.render) for f in files]


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("export", help="the model as ONNX graphs for onnxruntime, checked against torch")
    p.add_argument("--onnx", action="store_true", help="export to ONNX (encoder.onnx, decoder.onnx, decoder_step.onnx, "
                   "model.json)")
    p.add_argument("--model", metavar="PATH", help="weights (.safetensors); default: the shipped ones (of an "
                   "ensemble, its first member)")
    p.add_argument("--out", required=True, metavar="DIR", help="the export folder (then: --model DIR)")
    p.add_argument("--check", metavar="SPLIT_DIR", help="decode images of this built split both ways and compare")
    p.add_argument("--check-count", type=positive_int, default=20, metavar="N", help="images checked (default 20)")
    p.add_argument("--beam", type=positive_int, default=10, metavar="N", help="beam of the check (default 10)")
    p.set_defaults(run=_export)
