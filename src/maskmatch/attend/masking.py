"""Block masking of ink: a pure function of the images, the schedule's values, the teacher's maps and a seed.

An image is cut into square blocks of side `block` (a multiple of the encoder's stride 16, aligned with its
cells, so a block is whole encoder cells). Only blocks that hold ink can be hidden. Of the ink pixels to
hide, ratio * (ink pixels of the image), a share `guided` is taken from the blocks with the most teacher
attention (summed over the K maps), highest first; the rest from the other ink blocks in random order.
Within each phase blocks are taken while the ink hidden so far is below the phase's target; the block that
crosses it is taken with probability (target - ink before it) / (its ink), so each phase's hidden ink
equals its target in expectation, and misses it by less than one block's ink.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from maskmatch.attend.schedule import MaskParams
from maskmatch.model.config import STRIDE


@dataclass
class InkMask:
    pixels: torch.Tensor  # (B, H, W) bool, True on hidden pixels: whole ink-holding blocks, inside the image
    cells: torch.Tensor  # (B, h, w) bool, True on encoder cells (stride 16) inside hidden blocks that hold ink
    ratio: torch.Tensor  # (B,) float, hidden ink pixels / ink pixels (0 for an image without ink)


def block_sums(x: torch.Tensor, size: int) -> torch.Tensor:
    """x (B, H, W) -> sums over size x size blocks (B, ceil(H / size), ceil(W / size)), zero-padded."""
    B, H, W = x.shape
    nh, nw = -(-H // size), -(-W // size)
    x = F.pad(x, (0, nw * size - W, 0, nh * size - H))
    return x.view(B, nh, size, nw, size).sum((2, 4))


def _take(count: torch.Tensor, target: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """count (B, N) ink per block in the order of taking, target (B, 1), u (B, N) uniform -> taken (B, N) bool."""
    before = count.cumsum(1) - count  # (B, N) ink of the blocks ahead of each
    return (count > 0) & (before + u * count < target)


def _scatter(taken_sorted: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """Taken flags in sorted order (B, N) back to block order (B, N)."""
    return torch.zeros_like(taken_sorted).scatter(1, order, taken_sorted)


def mask_ink_blocks(images: torch.Tensor, mask: torch.Tensor, params: MaskParams, seed: int,
                    attention: torch.Tensor | None = None, ink_threshold: float = 0.5) -> InkMask:
    """images (B, 1, H, W) in [0, 1] ink bright, mask (B, H, W) True on padding, attention (B, K, h, w) the
    teacher's maps (needed when params.guided > 0) -> InkMask. Same inputs and seed, same mask."""
    if params.block % STRIDE or params.block < STRIDE:
        raise ValueError(f"block {params.block} must be a positive multiple of the stride {STRIDE}")
    if params.guided > 0 and attention is None:
        raise ValueError("attention-guided masking needs the teacher's attention maps")
    B, _, H, W = images.shape
    device, block, cell = images.device, params.block, params.block // STRIDE
    ink = (images[:, 0] >= ink_threshold) & ~mask  # (B, H, W)
    count = block_sums(ink.float(), block).flatten(1)  # (B, N) ink pixels per block
    total = count.sum(1, keepdim=True)  # (B, 1)
    target = params.ratio * total  # (B, 1) ink pixels to hide
    generator = torch.Generator(device=device).manual_seed(seed)
    u = torch.rand((2, *count.shape), generator=generator, device=device)  # (2, B, N) crossing draws per phase
    keys = torch.rand(count.shape, generator=generator, device=device)  # (B, N) random order

    chosen = torch.zeros_like(count, dtype=torch.bool)  # (B, N)
    if params.guided > 0:
        score = block_sums(attention.float().sum(1), cell).flatten(1)  # (B, N) teacher attention per block
        order = score.argsort(dim=1, descending=True, stable=True)
        chosen = _scatter(_take(count.gather(1, order), params.guided * target, u[0].gather(1, order)), order)
    left = (1.0 - params.guided) * target  # (B, 1) the random phase's share, whatever the guided phase's draw
    order = keys.masked_fill(chosen, 2.0).argsort(1)  # chosen blocks last: their ink is not counted again
    rest = count.masked_fill(chosen, 0.0).gather(1, order)
    chosen |= _scatter(_take(rest, left, u[1].gather(1, order)), order)

    nh, nw = -(-H // block), -(-W // block)
    blocks = chosen.view(B, nh, nw)
    pixels = blocks.repeat_interleave(block, 1).repeat_interleave(block, 2)[:, :H, :W] & ~mask  # (B, H, W)
    h, w = -(-H // STRIDE), -(-W // STRIDE)
    cell_ink = block_sums(ink.float(), STRIDE) > 0  # (B, h, w)
    cells = blocks.repeat_interleave(cell, 1).repeat_interleave(cell, 2)[:, :h, :w] & cell_ink  # (B, h, w)
    hidden = (ink & pixels).flatten(1).sum(1).float()  # (B,)
    return InkMask(pixels, cells, hidden / total[:, 0].clamp_min(1))


def hide(images: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
    """images (B, 1, H, W) with the hidden pixels (B, H, W) set to background (0) -> (B, 1, H, W)."""
    return images.masked_fill(pixels[:, None], 0.0)
