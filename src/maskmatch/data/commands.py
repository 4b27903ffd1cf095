"""`maskmatch data build` and `maskmatch data sheet`."""

from __future__ import annotations

import argparse
from pathlib import Path

from maskmatch.cli_args import positive_float, positive_int
from maskmatch.errors import UserError


def _data_build(args: argparse.Namespace) -> int:
    from maskmatch.data.build import build, format_summary
    from maskmatch.data.render import RenderConfig
    from maskmatch.data.variants import VariantConfig

    try:
        sizes = {"symbol_size": args.symbol_size, "stroke_width": args.stroke_width}
        render = RenderConfig(**{k: v for k, v in sizes.items() if v is not None})
        variants = VariantConfig(count=args.variants, swap_share=args.swap_share, subexpressions=args.subexpressions,
                                 photo_share=args.photo_share, thick_share=args.thick_share)
        summaries = build(args.source, args.out, splits=args.splits, workers=args.workers, render=render,
                          progress=not args.quiet, variants=variants)
    except ValueError as e:
        raise UserError(str(e)) from None
    print(format_summary(summaries))
    print(f"wrote {Path(args.out) / 'summary.json'}")
    return 0


def _data_sheet(args: argparse.Namespace) -> int:
    from maskmatch.data.sheet import draw_contact_sheet, draw_variant_sheet

    if args.variants:
        draw_variant_sheet(Path(args.split_dir), Path(args.out), n=args.n, variants=args.variants, seed=args.seed)
    else:
        draw_contact_sheet(Path(args.split_dir), Path(args.out), n=args.n, seed=args.seed)
    print(f"wrote {args.out}")
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    data = commands.add_parser("data", help="build and inspect data sets")
    data_commands = data.add_subparsers(dest="data_command", required=True, metavar="COMMAND")

    build = data_commands.add_parser("build", help="InkML or offline CROHME -> PNG + captions + training cache")
    build.add_argument("source", help="archive (.tar.gz, .zip) or folder whose top-level folders are splits")
    build.add_argument("--out", required=True, help="output folder; one subfolder per split")
    build.add_argument("--splits", nargs="+", metavar="SPLIT", help="build only these splits (default: all)")
    build.add_argument("--workers", type=positive_int, help="processes (default: all cores)")
    build.add_argument("--quiet", action="store_true", help="no progress bar")
    build.add_argument("--symbol-size", type=positive_float, metavar="PX",
                       help="typical symbol size of the renders, px (default 40); "
                            "models trained on the cache read users' input at this scale")
    build.add_argument("--stroke-width", type=positive_float, metavar="PX",
                       help="pen width of the renders, px (default 3)")
    build.add_argument("--variants", type=int, default=0, metavar="K",
                       help="also render K distorted variants of each training expression into train/variants/ "
                            "(data/variants.py; default 0)")
    build.add_argument("--subexpressions", action="store_true",
                       help="also render each training expression's unambiguous sub-expressions (a + b = c: a + b, "
                            "b = c) into train/subexpressions/ (data/subexpr.py)")
    build.add_argument("--swap-share", type=float, default=0.0, metavar="P",
                       help="in variants, redraw each symbol by another writer with probability P (default 0)")
    build.add_argument("--photo-share", type=float, default=0.0, metavar="P",
                       help="in variants, photograph the render (pen, paper, blur, noise, JPEG) and read it back as "
                            "users' pictures are read, with probability P (default 0)")
    build.add_argument("--thick-share", type=float, default=0.0, metavar="P",
                       help="in variants, photograph it with a marker-thick pen (0.15 to 0.35 of a symbol: strokes "
                            "merging) instead, with probability P (default 0)")
    build.set_defaults(run=_data_build)

    sheet = data_commands.add_parser("sheet", help="draw a contact sheet of random samples of a built split")
    sheet.add_argument("split_dir", help="a built split folder (caption.txt + img/); with --variants, InkML files")
    sheet.add_argument("--out", required=True, help="PNG to write")
    sheet.add_argument("-n", type=positive_int, default=24, help="number of samples (default 24)")
    sheet.add_argument("--seed", type=int, default=0, help="which samples (default 0)")
    sheet.add_argument("--variants", type=positive_int, metavar="K",
                       help="draw each of n InkML expressions beside K stroke-distorted variants (default: none)")
    sheet.set_defaults(run=_data_sheet)
