"""`maskmatch foreign`: how well a model reads a test split drawn by someone else's pipeline (issue 12).

The split's InkML is drawn in each style of `data.foreign` (PIL lines, none of this project's render code)
and read as a user's image files are read (normalize_bitmap, then the model); the table sets each style's
ExpRate beside the model's on this project's own renders of the same expressions, overall and by the pen's width
as a share of the expression's symbol size in the style's canvas (`data.foreign.pen_share`), and writes
OUT/foreign.md and foreign.json.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
from pathlib import Path

from maskmatch.cli_args import positive_int
from maskmatch.data.source import list_splits, open_source
from maskmatch.errors import UserError
from maskmatch.inference_commands import _decoding, _prenormalized, evaluate_split, model_data

BAR = 0.8  # issue 12: each foreign style at least 80% of the ExpRate on our own renders
PEN_BINS = (0.0, 0.15, 0.25, 0.35)  # lower edges of the pen-share bins (this project's renders: about 0.1)


def write_styles(source: str, split_name: str, captions: dict[str, str], out: Path,
                 styles: list[str]) -> dict[str, dict[str, float]]:
    """OUT/STYLE/ as offline splits (caption.txt, img/) of the expressions in `captions` (the built split's);
    returns each style's pen share of each expression, by name."""
    from maskmatch.data.foreign import pen_share, render_foreign
    from maskmatch.data.inkml import InkmlError, read_inkml

    with open_source(source) as root:
        found = {s.name: s for s in list_splits(root)}
        split = found.get(split_name)
        if split is None or split.layout != "inkml":
            raise UserError(f"{source}: no InkML split {split_name!r} (found {', '.join(found)})")
        lines = {style: [] for style in styles}
        shares: dict[str, dict[str, float]] = {style: {} for style in styles}
        for style in styles:
            (out / style / "img").mkdir(parents=True, exist_ok=True)
        for seed, item in enumerate(i for i in split.items if i.name in captions):
            try:
                strokes = read_inkml(item.path).strokes
            except (InkmlError, ValueError):
                continue
            for style in styles:
                data, suffix = render_foreign(strokes, style, seed)
                (out / style / "img" / f"{item.name}{suffix}").write_bytes(data)
                lines[style].append(f"{item.name}\t{captions[item.name]}\n")
                shares[style][item.name] = pen_share(strokes, style)
    for style in styles:
        (out / style / "caption.txt").write_text("".join(lines[style]), "utf-8")
    return shares


def by_pen(rows: dict[str, list[dict]], shares: dict[str, dict[str, float]]) -> list[dict]:
    """Per style and pen-share bin: the images, the style's ExpRate and ours on the same expressions.
    rows: evaluate_split's per-expression rows, by images ("ours" and each style)."""
    right = {name: {r["name"]: r["distance"] == 0 for r in found} for name, found in rows.items()}
    out = []
    for style, share in shares.items():
        for low, high in zip(PEN_BINS, PEN_BINS[1:] + (None,)):
            names = [n for n, s in share.items() if low <= s < (high or float("inf")) and n in right[style]]
            if names:
                out.append({"images": style, "low": low, "high": high, "n": len(names),
                            "exprate": 100 * sum(right[style][n] for n in names) / len(names),
                            "ours": 100 * sum(right["ours"].get(n, False) for n in names) / len(names)})
    return out


def own_as_files(split_dir: Path, out: Path) -> Path:
    """The split's own PNGs as a user's files: the same images without the cache, so they are normalized."""
    folder = out / "ours-as-files"
    (folder / "img").mkdir(parents=True)
    for image in (split_dir / "img").iterdir():
        (folder / "img" / image.name).symlink_to(image.resolve())
    (folder / "caption.txt").write_text((split_dir / "caption.txt").read_text("utf-8"), "utf-8")
    return folder


def markdown(rows: list[dict], command: str, split: str, decoding: str, render, pens: list[dict] = ()) -> str:
    """foreign.md; render: the model's RenderConfig, whose pen share the by-pen table names."""
    from maskmatch.data.foreign import STYLES

    own = rows[0]["exprate"]
    drawn = {"ours": "this project's render (the built split's images, model-ready)",
             "ours-as-files": "the same PNGs read as a user's files (normalize_bitmap)", **STYLES}
    lines = [f"# CROHME {split} drawn by someone else's pipeline", "",
             f"Made by `{command}`; do not edit by hand. Each style draws the split's InkML with plain PIL lines "
             "(`maskmatch.data.foreign`, none of this project's render code); its images are read as a user's "
             f"files are ({decoding}). Share: the style's ExpRate over the ExpRate on our own renders; "
             f"the bar (issue 12) is {100 * BAR:.0f}% for every style.", "",
             "| images | drawn by | n | ExpRate (%) | <=1 (%) | share of ours (%) |", "|---|---|---|---|---|---|"]
    for r in rows:
        share = f"{100 * r['exprate'] / own:.1f}" if own else "-"
        lines.append(f"| {r['images']} | {drawn[r['images']]} | {r['n']} | {r['exprate']:.2f} | {r['le1']:.2f} "
                     f"| {share} |")
    if pens:
        own_pen = (f"the model's renders draw {render.stroke_width:g} px at {render.symbol_size:g} px symbols, "
                   f"{render.stroke_width / render.symbol_size:.2f}")
        lines += ["", "By the pen's width as a share of the expression's symbol size in the style's canvas (a fixed "
                  f"pen in a fixed canvas is thick for long expressions; {own_pen}): the style's ExpRate "
                  "beside ours on the same expressions.", "",
                  "| images | pen share | n | ExpRate (%) | ours (%) | share of ours (%) |", "|---|---|---|---|---|---|"]
        for p in pens:
            span = f"{p['low']:.2f}-{p['high']:.2f}" if p["high"] is not None else f">= {p['low']:.2f}"
            share = f"{100 * p['exprate'] / p['ours']:.1f}" if p["ours"] else "-"
            lines.append(f"| {p['images']} | {span} | {p['n']} | {p['exprate']:.2f} | {p['ours']:.2f} | {share} |")
    return "\n".join(lines) + "\n"


def _foreign(args: argparse.Namespace) -> int:
    from maskmatch.data.foreign import STYLES
    from maskmatch.recognizer import Recognizer

    args.data = args.data or model_data(args.model)
    split_dir = Path(args.data) / args.split
    if not (split_dir / "caption.txt").is_file():
        raise UserError(f"{split_dir}: no built split (maskmatch data build SOURCE --out {args.data})")
    args.styles = args.styles or list(STYLES)
    unknown = [s for s in args.styles if s not in STYLES]
    if unknown:
        raise UserError(f"unknown style {unknown[0]!r}; styles: {', '.join(STYLES)}")
    lines = (split_dir / "caption.txt").read_text("utf-8").splitlines()
    captions = dict(line.split("\t", 1) for line in lines if "\t" in line)
    try:
        rec = Recognizer.load(args.model, args.device)
    except ValueError as e:
        raise UserError(str(e)) from None
    if not _prenormalized(split_dir, rec.render):  # else "ours" would be our renders resized, not the model's own
        size, pen = f"{rec.render.symbol_size:g}", f"{rec.render.stroke_width:g}"
        raise UserError(f"{split_dir}: not built at the model's scale ({size} px symbols, {pen} px pen); give --data "
                        f"built by maskmatch data build SOURCE --out DIR --symbol-size {size} --stroke-width {pen}")
    with tempfile.TemporaryDirectory(prefix="maskmatch-foreign-") as tmp:
        renders = Path(args.keep) if args.keep else Path(tmp)
        shares = write_styles(args.source, args.split, captions, renders, args.styles)
        folders = [("ours", split_dir), ("ours-as-files", own_as_files(split_dir, Path(tmp)))]
        folders += [(style, renders / style) for style in args.styles]
        rows, expressions = [], {}
        for name, folder in folders:
            scores, expressions[name] = evaluate_split(rec, folder, args.beam, args.batch_size)
            rows.append({"images": name, **scores})
            print(f"foreign: {name}: ExpRate {scores['exprate']:.2f} of {scores['n']}", flush=True)
    pens = by_pen(expressions, shares)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    command = "maskmatch " + shlex.join(sys.argv[1:]) if sys.argv[1:2] == ["foreign"] else "maskmatch foreign"
    table = markdown(rows, command, args.split, _decoding(args.beam), rec.render, pens)
    (out / "foreign.md").write_text(table, "utf-8")
    (out / "foreign.json").write_text(json.dumps({"styles": rows, "by_pen": pens}, indent=1) + "\n", "utf-8")
    print(f"wrote {out / 'foreign.md'}")
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("foreign", help="a test split drawn by someone else's pipeline: how well it reads")
    p.add_argument("source", metavar="SOURCE", help="the InkML archive or folder (e.g. ../shared/data/crohme/crohme-inkml.tar.gz)")
    p.add_argument("--split", default="2014", help="the test split (default 2014)")
    p.add_argument("--data", metavar="DIR", help="built data holding SPLIT (default: the data the model "
                   "trained on, as its manifest names it)")
    p.add_argument("--model", metavar="PATH", help="weights (default: the shipped ones)")
    p.add_argument("--styles", type=lambda t: [s for s in t.split(",") if s], default=[],
                   help="comma-separated, of thin, marker, scan (default all)")
    p.add_argument("--beam", type=positive_int, default=10, metavar="N", help="beam size (default 10; 1 greedy)")
    p.add_argument("--batch-size", type=positive_int, default=16, metavar="N", help="images decoded together")
    p.add_argument("--device", help="torch device (default: cuda if available)")
    p.add_argument("--keep", metavar="DIR", help="keep the styles' images and captions in DIR")
    p.add_argument("--out", default="results", metavar="DIR", help="where foreign.md goes (default results)")
    p.set_defaults(run=_foreign)
