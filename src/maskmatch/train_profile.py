"""Where a training step's time goes: `maskmatch train-benchmark --profile` runs its steps once more under cProfile
and reads the cumulative time of each phase of the step, a function of the code that trains (found by its code
object, as cProfile keys it: no marks in the training code). Rows nest: an indented phase is part of the row
above it at the lesser indent, and "the rest" of a parent is its time outside the phases listed under it.
Shares are of the profiled steps' wall time, data loading included; the last row is what no phase names (the
loop, Lightning's hooks, logging, the schedule). cProfile hooks every Python call, about a microsecond each
against a step's hundreds of milliseconds; the table gives each recipe's profiled images/s beside the timed ones
so that its cost shows (results/train-benchmark.md: within 1 images/s).
"""

from __future__ import annotations

import cProfile
import inspect
import pstats
from typing import Callable

REST = None  # a phase row meaning: its parent less the phases listed beside it


def phases(stage: str) -> list[tuple[str, int, Callable | list[Callable] | None]]:
    """(name, depth, function(s) or REST) for each phase of a `stage` step, in the order the step runs them."""
    import torch
    from torch.optim.adam import adam

    from maskmatch.data.loading import ResumableLoader
    from maskmatch.engine.ema import EMA

    data = ("data (reading, scaling, collation)", 0, ResumableLoader._batches)
    tail = [("backward", 0, torch.autograd.backward), ("optimizer (AdamW)", 0, adam)]
    if stage == "pretrain":
        from maskmatch.pretrain.local_loss import LocalInfoNCE
        from maskmatch.pretrain.global_loss import GlobalInfoNCE
        from maskmatch.pretrain.module import PretrainModule
        from maskmatch.pretrain import views

        return [data, ("two views of each image", 0, views.make_views),
                ("ink points", 1, views.sample_ink_points), ("elastic fields", 1, views.elastic_field),
                ("warp", 1, views.warp), ("photometric", 1, views.photometric), ("points into views", 1, views.map_points),
                ("encoder forward (both views)", 0, PretrainModule.features),
                ("heads and losses", 0, PretrainModule.losses), ("global loss", 1, GlobalInfoNCE.forward),
                ("local loss", 1, LocalInfoNCE.forward), *tail]
    if stage == "attend":
        from maskmatch.attend import masking
        from maskmatch.attend.diversity_loss import DiversityLoss
        from maskmatch.attend.entropy_loss import EntropyLoss
        from maskmatch.attend.match_loss import MatchLoss
        from maskmatch.attend.module import AttendModule
        from maskmatch.attend.prediction_loss import PredictionLoss
        from maskmatch.attend.teacher import Teacher

        return [data, ("forward and losses", 0, AttendModule.losses), ("teacher forward", 1, Teacher.forward),
                ("masking", 1, masking.mask_ink_blocks),
                ("loss terms", 1, [MatchLoss.forward, PredictionLoss.forward, DiversityLoss.forward,
                                   EntropyLoss.forward]),
                ("student forward (encoder, attention, predictor)", 1, REST), *tail,
                ("teacher update (EMA)", 0, EMA.update)]
    from maskmatch.finetune.module import bidirectional_loss
    from maskmatch.model import HMERModel
    from maskmatch.model.decoder import Decoder
    from maskmatch.model.encoder import Encoder

    return [data, ("forward", 0, HMERModel.forward), ("encoder", 1, Encoder.forward), ("decoder", 1, Decoder.forward),
            ("loss", 0, bidirectional_loss), tail[0], ("gradient clipping", 0, torch.nn.utils.clip_grad_norm_),
            tail[1], ("weight EMA", 0, EMA.update)]


def code_key(function: Callable) -> tuple[str, int, str]:
    """The key cProfile files a function's time under."""
    code = inspect.unwrap(function).__code__
    return code.co_filename, code.co_firstlineno, code.co_name


def read(profile: cProfile.Profile, stage: str, steps: int, seconds: float) -> list[dict]:
    """The phases of `stage` that ran, from a profile of `steps` steps taking `seconds` of wall time:
    [{phase, depth, ms_per_step, share}], the last row what no phase names."""
    stats = pstats.Stats(profile).stats  # {key: (primitive calls, calls, own time, cumulative time, callers)}

    def cumulative(functions) -> float | None:
        found = [stats[code_key(f)][3] for f in (functions if isinstance(functions, list) else [functions])
                 if code_key(f) in stats]
        return sum(found) if found else None

    specs = phases(stage)
    times: list[float | None] = []
    for i, (_, depth, functions) in enumerate(specs):
        if functions is REST:
            parent = max(j for j in range(i) if specs[j][1] < depth)
            siblings = [times[j] or 0.0 for j in range(parent + 1, i) if specs[j][1] == depth]
            times.append((times[parent] or 0.0) - sum(siblings))
        else:
            times.append(cumulative(functions))
    rows = [{"phase": name, "depth": depth, "ms_per_step": 1000 * t / steps, "share": t / seconds}
            for (name, depth, _), t in zip(specs, times) if t is not None]
    rest = seconds - sum(t for (_, depth, _), t in zip(specs, times) if depth == 0 and t is not None)
    rows.append({"phase": "the rest (loop, hooks, logging)", "depth": 0, "ms_per_step": 1000 * rest / steps,
                 "share": rest / seconds})
    return rows


def format_profile(recipes: list[dict]) -> str:
    """A Markdown table of every recipe's phases (rows with a "profile")."""
    lines = ["Where a step's time goes (cProfile over the same steps, another pass; an indented phase is part of the "
             "one above it):", "", "| recipe | phase | ms per step | share of the step |", "|---|---|---|---|"]
    for r in recipes:
        for p in r.get("profile", []):
            indent = "&nbsp;&nbsp;" * 2 * p["depth"]
            lines.append(f"| {r['recipe']} | {indent}{p['phase']} | {p['ms_per_step']:.1f} | {100 * p['share']:.1f}% |")
    rates = [f"{r['recipe']} {r['profiled_images_per_s']:.1f} ({r['images_per_s']:.1f})" for r in recipes
             if "profiled_images_per_s" in r]
    lines += ["", "Training images/s under the profiler (unprofiled in brackets): " + "; ".join(rates) + "."]
    return "\n".join(lines)
