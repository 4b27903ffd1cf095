"""`maskmatch attention IMAGE --out maps.png`: what a model attends to, drawn over the image it read.

- The attention network's K maps (stage 2), for a stage-2 hand-off file (attend.safetensors) or a
  fine-tuned model with fusion gate or tokens.
- The decoder's cross-attention for each output token (averaged over heads and layers), for a
  fine-tuned model (any fusion).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from maskmatch.cli_args import positive_int
from maskmatch.errors import UserError

TITLE_HEIGHT = 18  # pixels of the strip that names each sheet


def load_model(path: str | None):
    """(Recognizer, whole model?) for a whole model (default: the shipped one) or a stage-2 hand-off file."""
    from maskmatch.recognizer import Recognizer
    from maskmatch.weights import PARTIAL

    try:
        rec = Recognizer.load(path, handoff=True)
    except ValueError as e:
        raise UserError(str(e)) from None
    held = rec.manifest.get(PARTIAL)
    if held and "attention" not in held:
        raise UserError(f"{path}: holds only the {' and '.join(held)}; attention maps need a stage-2 file "
                        "(attend.safetensors) or a fine-tuned model")
    return rec, not held


def titled(sheet, title: str):
    """The sheet with a dark strip above it holding the title."""
    from PIL import Image, ImageDraw

    out = Image.new("RGB", (sheet.width, sheet.height + TITLE_HEIGHT), (32, 32, 32))
    out.paste(sheet, (0, TITLE_HEIGHT))
    ImageDraw.Draw(out).text((4, 3), title, fill=(255, 255, 255))
    return out


def stacked(sheets: list):
    from PIL import Image

    out = Image.new("RGB", (max(s.width for s in sheets), sum(s.height for s in sheets)), (32, 32, 32))
    top = 0
    for s in sheets:
        out.paste(s, (0, top))
        top += s.height
    return out


def _attention(args: argparse.Namespace) -> int:
    import torch

    from maskmatch.attend.drawing import draw_maps

    if Path(args.out).suffix.lower() != ".png":
        raise UserError(f"--out {args.out}: the picture is a PNG; name it *.png")
    rec, whole = load_model(args.model)
    try:
        image = rec.preprocess(args.image)
    except ValueError as e:
        raise UserError(f"{args.image}: {e}") from None
    sheets = []
    if rec.model.attention is not None:
        images = torch.from_numpy(image).float().div(255)[None, None]  # (1, 1, H, W)
        with torch.inference_mode():
            maps, _ = rec.model.attention_maps(images, torch.zeros(images.shape[0], *image.shape, dtype=torch.bool))
        sheets.append(titled(draw_maps(image, maps[0].numpy(), args.columns),
                             f"attention network: {maps.shape[1]} maps"))
    if whole:
        r = rec.decode([image], args.beam, attention=True)[0]
        print(r.latex)
        if r.tokens:
            sheets.append(titled(draw_maps(image, r.attention, args.columns, labels=r.tokens),
                                 f"decoder cross-attention per token: {r.latex}"))
    if not sheets:
        raise UserError("this model decoded nothing and has no attention network: nothing to draw")
    stacked(sheets).save(args.out)
    print(f"wrote {args.out}")
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("attention", help="draw what a model attends to over an image: the K attention maps "
                                              "and the decoder's attention per output token")
    p.add_argument("image", metavar="IMAGE", help="an image or .inkml file")
    p.add_argument("--model", metavar="PATH", help="a model (.safetensors + .json) or a stage-2 attend.safetensors; "
                   "default: the shipped weights")
    p.add_argument("--out", required=True, metavar="PNG", help="the picture to write")
    p.add_argument("--beam", type=positive_int, default=10, help="beam size for decoding (default 10; 1 is greedy)")
    p.add_argument("--columns", type=positive_int, default=4, help="panels per row (default 4)")
    p.set_defaults(run=_attention)
