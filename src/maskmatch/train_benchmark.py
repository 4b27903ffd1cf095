"""`maskmatch train-benchmark`: what a training step of each finetune preset costs on this machine.

For each recipe (a shipped preset, optionally with overrides: PRESET:KEY=VALUE,KEY=VALUE) it builds the real
training data of that recipe (its data.root cache, held-out slice removed, scale augmentation, size-bucketed
batches, its data.workers loaders) and runs the first --batches batches of a shuffled epoch through the real step: bidirectional
label-smoothed loss, backward, gradient clipping, AdamW with its schedule, the EMA update, data loading and
collation included (one warm-up batch excluded). Images/s is an epoch's: the epoch's images over its batch
count times the timed batches' mean time (`epoch_rate`). FLOPs are counted by PyTorch's FlopCounterMode on the
same batches (forward and backward) and scaled to the epoch alike, so achieved GFLOP/s can be read against the
machine's fp32 matmul rate.

A recipe of stage 1 or 2 (a pretrain-* or attend-* preset) runs the stage's own Lightning loop, as `maskmatch
pretrain` or `attend` trains (views and point sampling, masking, the teacher's forward, losses, optimizer),
for the same batches after one warm-up step; its FLOPs are counted over a second pass of those steps.

`--profile` runs the same steps once more under cProfile and adds where a step's time goes, phase by phase
(`train_profile`); the images/s stay those of the unprofiled pass.
"""

from __future__ import annotations

import argparse
import cProfile
import itertools
import json
import re
import shlex
import statistics
import time
from importlib import resources
from pathlib import Path
from types import SimpleNamespace

from maskmatch.attend.commands import stage as attend_stage
from maskmatch.benchmark.measure import matmul_rate
from maskmatch.cli_args import positive_int
from maskmatch.config import override
from maskmatch.engine.options import parse_config, preset_name
from maskmatch.engine.schedule import ema_decay
from maskmatch.errors import UserError
from maskmatch.finetune.commands import RENAMED
from maskmatch.pipeline import stage_classes
from maskmatch.pretrain.commands import stage as pretrain_stage
from maskmatch.train_profile import format_profile, read as read_profile


def recipe_stage(spec: str) -> str:
    """The stage a recipe trains: pretrain-* and attend-* presets are stages 1 and 2, the rest stage 3."""
    preset = spec.partition(":")[0]
    return next((s for s in ("pretrain", "attend") if preset.startswith(f"{s}-")), "finetune")


def recipe_config(spec: str):
    """'finetune-cpu', 'pretrain-cpu' or 'finetune-small:data.root=data/crohme,data.workers=0' -> that stage's
    config. A comma starts the next override only before `key=`, so list values keep theirs:
    'finetune-cpu:model.stage_layers=[1,1,2]'."""
    preset, _, sets = spec.partition(":")
    try:
        preset_name(RENAMED)(preset)  # the hint `finetune --preset` gives for an old name
    except argparse.ArgumentTypeError as e:
        raise UserError(f"recipe {spec!r}: {e}") from None
    try:
        text = resources.files("maskmatch").joinpath("presets", f"{preset}.yaml").read_text("utf-8")
    except FileNotFoundError:
        raise UserError(f"recipe {spec!r}: no preset {preset!r}") from None
    config = parse_config(text, stage_classes()[recipe_stage(spec)], preset)
    return override(config, [s for s in re.split(r",(?=[\w.]+=)", sets) if s])


def epoch_rate(data, timed: int, seconds: float) -> float:
    """An epoch's images/s from `timed` of its batches taking `seconds`: its images over its batch count times
    their mean time. The pixel budget makes a step's time nearly independent of how many images it holds (1 to 16
    in finetune-cpu), so the mean time of a random sample of batches (the first of a shuffled epoch) estimates an
    epoch's better than the sample's own images over its time: finetune-cpu's first 40 batches read 40.2 images/s
    that way (their images are smaller than the epoch's), 33.6 this way, and its whole epoch timed 30.7."""
    return len(data.train_batches.sampler.sizes) / (len(data.train_batches) * seconds / timed)


def per_epoch_image(data, timed: int, total: float) -> float:
    """A quantity summed over `timed` batches (FLOPs, pixels), per image of the epoch (as `epoch_rate`)."""
    return total / timed * len(data.train_batches) / len(data.train_batches.sampler.sizes)


def epoch_row(data, timed: int, seconds: float, pixels: int, counted: int, flops: float) -> dict:
    """A recipe's numbers per image of an epoch: from `timed` batches of `pixels` taking `seconds`, and `counted`
    batches of `flops`."""
    rate, per_image = epoch_rate(data, timed, seconds), per_epoch_image(data, counted, flops) / 1e9
    return {"images_per_s": rate, "gflop_per_image": per_image, "achieved_gflops": per_image * rate,
            "mean_pixels": per_epoch_image(data, timed, pixels),
            "symbol_size": float(data.cache.render_config.get("symbol_size", 0))}


def measure_stage(name: str, config, batches: int, seed: int, profile: bool = False) -> dict:
    """Times `batches` steps of stage 1 or 2's own Lightning loop (after one warm-up step), counts the FLOPs of the
    same steps in a second pass and, if `profile`, profiles them in a third."""
    import lightning as L
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    stage = {"pretrain": pretrain_stage, "attend": attend_stage}[name]()

    class Clock(L.Callback):
        images, pixels, steps, start, seconds = 0, 0, 0, None, 0.0

        def __init__(self, profiler: cProfile.Profile | None = None):
            self.profiler = profiler

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            if self.start is None:
                self.start = time.perf_counter()
                if self.profiler:
                    self.profiler.enable()
                return
            self.images += len(batch)
            self.pixels += int((~batch.mask).sum())
            self.steps += 1
            self.seconds = time.perf_counter() - self.start
            if self.profiler and self.steps == batches:
                self.profiler.disable()

    def fit(clock: Clock):
        torch.manual_seed(seed)
        data = stage.make_data(config)
        module = stage.make_module(config, data, False)
        module.total_steps = 10**6  # the schedule's length, as the budget planner would fix it: warm-up here
        trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=batches + 1, limit_val_batches=0,
                            num_sanity_val_steps=0, logger=False, enable_checkpointing=False,
                            enable_progress_bar=False, enable_model_summary=False, callbacks=[clock])
        trainer.fit(module, datamodule=data)
        return module, data

    timed = Clock()
    module, data = fit(timed)
    counted = Clock()
    with FlopCounterMode(display=False) as counter:
        fit(counted)
    profiled = Clock(cProfile.Profile()) if profile else None
    if profiled:
        fit(profiled)
    trained = sum(p.numel() for p in module.parameters() if p.requires_grad)  # not the stage-2 teacher's copy
    return {"parameters": trained, "images": timed.images, "seconds": timed.seconds,
            # the FLOPs counted over the warm-up step too
            **epoch_row(data, timed.steps, timed.seconds, timed.pixels, counted.steps + 1, counter.get_total_flops()),
            **({"profile": read_profile(profiled.profiler, name, profiled.steps, profiled.seconds),
                "profiled_images_per_s": epoch_rate(data, profiled.steps, profiled.seconds)} if profiled else {})}


def measure(config, batches: int, seed: int, profile: bool = False) -> dict:
    """Times `batches` training steps of `config` (after one warm-up step), counts their FLOPs and, if `profile`,
    profiles the same steps in another pass."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from maskmatch.data.loading import FinetuneData
    from maskmatch.engine import common
    from maskmatch.engine.ema import EMA
    from maskmatch.finetune.module import bidirectional_loss
    from maskmatch.model import HMERModel, bidirectional_targets

    torch.manual_seed(seed)
    data = FinetuneData(config.data, seed)
    data.setup()
    model = HMERModel(config.model).train()
    ema = EMA(model)
    # what configure_adamw reads of a module
    schedule_owner = SimpleNamespace(config=config, total_steps=10**6, planned=True)
    optim = common.configure_adamw(schedule_owner, model.parameters())
    optimizer, schedule = optim["optimizer"], optim["lr_scheduler"]["scheduler"]

    def step(batch, count_only: bool = False) -> None:
        inputs, targets = bidirectional_targets(batch.tokens, batch.lengths)
        loss = bidirectional_loss(model(batch.images, batch.mask, inputs), targets, config.optim.label_smoothing)
        loss.backward()
        if count_only:
            model.zero_grad(set_to_none=True)
            return
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.optim.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        schedule.step()
        ema.update(model, ema_decay(schedule.last_epoch, config.optim.ema_decay))

    def timed_pass(profiler: cProfile.Profile | None = None) -> tuple[list, float]:
        """A fresh loader's warm-up step, then `batches` steps -> (their batches, seconds), under `profiler`."""
        loader = iter(data.train_dataloader())
        step(next(loader))  # warm-up: first primitives, allocator
        seen, start = [], time.perf_counter()
        if profiler:
            profiler.enable()
        for batch in itertools.islice(loader, batches):
            step(batch)
            seen.append(batch)
        if profiler:
            profiler.disable()
        return seen, time.perf_counter() - start

    seen, seconds = timed_pass()
    images = sum(len(b) for b in seen)
    profiled = {}
    if profile:  # the same batches again: a fresh loader plans the same epoch
        profiler = cProfile.Profile()
        _, again = timed_pass(profiler)
        profiled = {"profile": read_profile(profiler, "finetune", len(seen), again),
                    "profiled_images_per_s": epoch_rate(data, len(seen), again)}
    with FlopCounterMode(display=False) as counter:
        for batch in seen:
            step(batch, count_only=True)
    pixels = sum(int((~b.mask).sum()) for b in seen)
    return {"parameters": sum(p.numel() for p in model.parameters()), "images": images, "seconds": seconds,
            **epoch_row(data, len(seen), seconds, pixels, len(seen), counter.get_total_flops()), **profiled}


def format_table(rows: list[dict], matmul: float, threads: int) -> str:
    lines = [f"Training step, eager fp32, {threads} threads; matmul rate {matmul:.0f} GFLOP/s (2048^2, median of 5).",
             "",
             "| recipe | parameters | symbol px | mean pixels | training images/s | GFLOP/image | achieved GFLOP/s "
             "| share of matmul |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['recipe']} | {r['parameters'] / 1e6:.2f} M | {r['symbol_size']:g} "
                     f"| {r['mean_pixels']:,.0f} "
                     f"| {r['images_per_s']:.1f} | {r['gflop_per_image']:.3g} | {r['achieved_gflops']:.3g} "
                     f"| {100 * r['achieved_gflops'] / matmul:.0f}% |")
    return "\n".join(lines)


def measure_recipe(spec: str, batches: int, seed: int, profile: bool, threads: int | None) -> dict:
    """One recipe's row (a UserError for a bad recipe)."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    try:
        stage = recipe_stage(spec)
        config = recipe_config(spec)
        row = measure(config, batches, seed, profile) if stage == "finetune" else \
            measure_stage(stage, config, batches, seed, profile)
    except (ValueError, FileNotFoundError) as e:
        raise UserError(f"recipe {spec!r}: {e}") from None
    return {"recipe": spec, **row}


def _run(args: argparse.Namespace) -> int:
    import multiprocessing

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    # each recipe in a fresh process: in one process a recipe ran slower after another (finetune-cpu 41.2 images/s
    # alone, 35.9 after finetune-small; what stays behind, allocator or oneDNN caches, not traced)
    context = multiprocessing.get_context("spawn")
    for spec in args.recipes:
        with context.Pool(1) as pool:
            row = pool.apply(measure_recipe, (spec, args.batches, args.seed, args.profile, args.threads))
        rows.append(row)
        print(f"{spec}: {row['images_per_s']:.1f} images/s", flush=True)
    matmul = statistics.median(matmul_rate(2048, 5))
    table = format_table(rows, matmul, torch.get_num_threads())
    if args.profile:
        table += "\n\n" + format_profile(rows)
    print(table)
    if args.markdown:
        command = shlex.join(["maskmatch", "train-benchmark", *args.recipes, "--batches", str(args.batches),
                              *(["--threads", str(args.threads)] if args.threads else []),
                              *(["--profile"] if args.profile else []),
                              "--seed", str(args.seed), "--markdown", args.markdown])
        text = f"# Training throughput\n\nMade by `{command}`; do not edit by hand.\n\n{table}\n"
        Path(args.markdown).write_text(text, "utf-8")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"matmul_gflops": matmul, "threads": torch.get_num_threads(), "recipes": rows}, f, indent=1)
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("train-benchmark", help="training images/s and achieved GFLOP/s of finetune recipes",
                            description=__doc__.split("\n\n")[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("recipes", nargs="+", metavar="RECIPE",
                   help="a preset, optionally with overrides: finetune-cpu, finetune-small:data.root=data/crohme")
    p.add_argument("--batches", type=positive_int, default=40, help="timed batches per recipe (default 40)")
    p.add_argument("--threads", type=positive_int, help="torch threads (default: torch's, one per core)")
    p.add_argument("--seed", type=int, default=0, help="which batches (default 0)")
    p.add_argument("--profile", action="store_true",
                   help="profile the same steps in another pass: a table of where a step's time goes")
    p.add_argument("--json", metavar="FILE", help="also write the numbers as JSON")
    p.add_argument("--markdown", metavar="FILE", help="also write the table, with this command, as Markdown")
    p.set_defaults(run=_run)
