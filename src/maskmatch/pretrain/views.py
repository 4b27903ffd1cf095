"""Two views of each image of a padded batch, made in torch on the batch's device, with known geometry.

Coordinates are pixels, x right and y down, pixel (row i, column j) covering [j, j+1) x [i, i+1) with its
centre at (j + 0.5, i + 0.5); `grid_sample(align_corners=False)` uses the same convention.

A view's geometry maps a point p of the original to v in the view:
    q = M p + t                 (affine: scale, rotation, shear about the image's centre, then a shift)
    v + u(v) = q                (elastic: u is a smooth displacement field on the view's canvas)
Rendering needs the inverse at every view pixel, which is explicit: the view at v shows the original at
M^-1 (v + u(v) - t). Mapping points forward solves v = q - u(v) by fixed-point iteration, which converges
because u's slope is small (ViewConfig keeps the amplitude at most a tenth of the control-point spacing).

Each view is a box at the top left of a common canvas (the padding mask marks the rest), big enough for
the whole warped image; the content sits at the box's centre plus a random shift. Photometric changes
(stroke width, blur, contrast, noise) follow, on the view. All randomness comes from one seed: per-image
parameters from a CPU generator, noise fields from a generator on the images' device.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from maskmatch.pretrain.config import ViewConfig

FIXED_POINT_ITERATIONS = 8  # error shrinks by the warp's slope (<= ~0.1) per iteration


@dataclass
class ViewTransform:
    """One view of each of B images: original pixel coordinates -> view pixel coordinates."""

    linear: torch.Tensor  # (B, 2, 2) M, acting on (x, y) column vectors
    shift: torch.Tensor  # (B, 2) t
    displacement: torch.Tensor  # (B, 2, H', W') u (x, y) in pixels at the canvas's pixel centres
    box: torch.Tensor  # (B, 2) int64 height, width of each view's valid region (top left of the canvas)


@dataclass
class ViewPair:
    images: torch.Tensor  # (2B, 1, H', W') view 1 of every image, then view 2
    mask: torch.Tensor  # (2B, H', W') bool, True on padding
    points: torch.Tensor  # (B, P, 2) ink points of the originals (x, y)
    view_points: torch.Tensor  # (2B, P, 2) the same points in view 1, then view 2
    valid: torch.Tensor  # (B, P) bool: on ink and inside both views
    transforms: tuple[ViewTransform, ViewTransform]


def image_sizes(mask: torch.Tensor) -> torch.Tensor:
    """(B, H, W) padding mask (image at the top left) -> (B, 2) float heights and widths."""
    valid = ~mask
    return torch.stack((valid.any(2).sum(1), valid.any(1).sum(1)), dim=1).float()


def margin(config: ViewConfig) -> float:
    """Pixels kept around the warped image inside its box: the shift plus three sigmas of the warp."""
    return config.translate + 3 * config.elastic_amplitude + 1


def largest_view(height: int, width: int, config: ViewConfig) -> tuple[int, int]:
    """An upper bound of any view's box for an (height, width) image: for the batch sampler's pixel budget.

    M = s R(theta) S(phi) = s [[c, c tan(phi) - s_], [s_, s_ tan(phi) + c]]; each |entry| is bounded by the
    triangle inequality at the largest scale, angle and shear.
    """
    s = max(config.scale_range)
    sin, tan = math.sin(math.radians(config.rotation)), math.tan(math.radians(config.shear))
    extra = 2 * margin(config) + 1
    return (math.ceil(s * (sin * width + (1 + sin * tan) * height) + extra),
            math.ceil(s * (width + (tan + sin) * height) + extra))


def _uniform(n: int, low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator, dtype=torch.float64)


def sample_geometry(sizes: torch.Tensor, config: ViewConfig, cpu: torch.Generator):
    """Affine part of one view of each image: (M (B, 2, 2), t (B, 2), box (B, 2)), float64 on the CPU."""
    B = len(sizes)
    low, high = config.scale_range
    scale = torch.exp(_uniform(B, math.log(low), math.log(high), cpu))
    angle = torch.deg2rad(_uniform(B, -config.rotation, config.rotation, cpu))
    shear = torch.tan(torch.deg2rad(_uniform(B, -config.shear, config.shear, cpu)))
    offset = _uniform(2 * B, -config.translate, config.translate, cpu).view(B, 2)
    c, s = torch.cos(angle), torch.sin(angle)
    rotation = torch.stack((torch.stack((c, -s), -1), torch.stack((s, c), -1)), -2)  # (B, 2, 2)
    shearing = torch.eye(2, dtype=torch.float64).repeat(B, 1, 1)
    shearing[:, 0, 1] = shear
    linear = scale[:, None, None] * rotation @ shearing  # (B, 2, 2)
    h, w = sizes.double().cpu().unbind(1)
    extent = linear.abs() @ torch.stack((w, h), 1)[:, :, None]  # (B, 2, 1): width, height of the warped box
    box = torch.ceil(extent[:, :, 0].flip(1) + 2 * margin(config)).long()  # (B, 2) height, width
    centre = torch.stack((w, h), 1) / 2  # (B, 2) x, y
    shift = box.flip(1).double() / 2 + offset - (linear @ centre[:, :, None])[:, :, 0]
    return linear, shift, box


def elastic_field(B: int, canvas: tuple[int, int], config: ViewConfig, generator: torch.Generator,
                  device: torch.device) -> torch.Tensor:
    """(B, 2, H', W') smooth displacement: N(0, amplitude^2) control points every `spacing` px, bicubic."""
    H, W = canvas
    if config.elastic_amplitude == 0:
        return torch.zeros(B, 2, H, W, device=device)
    rows, cols = math.ceil(H / config.elastic_spacing) + 1, math.ceil(W / config.elastic_spacing) + 1
    control = torch.randn(B, 2, rows, cols, generator=generator, device=device) * config.elastic_amplitude
    return upsample_rows(rows, H, device) @ control @ upsample_rows(cols, W, device).T


def upsample_rows(n: int, size: int, device: torch.device) -> torch.Tensor:
    """(size, n): F.interpolate's bicubic weights (align_corners) from n samples to size, as a matrix. Bicubic is
    separable, so R_h @ x @ R_w.T is F.interpolate(x, (size_h, size_w), mode="bicubic", align_corners=True),
    by two small matmuls instead of PyTorch's CPU kernel, which takes ten times longer."""
    identity = torch.eye(n, device=device)[None, None]  # (1, 1, n, n): row j is control row j alone
    return F.interpolate(identity, size=(size, n), mode="bicubic", align_corners=True)[0, 0]


def sample_field(field: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """field (B, C, H, W) at pixel centres, points (B, P, 2) in pixels -> (B, P, C), bilinear, border-clamped."""
    H, W = field.shape[-2:]
    grid = torch.stack((2 * points[..., 0] / W - 1, 2 * points[..., 1] / H - 1), -1)[:, :, None]  # (B, P, 1, 2)
    return F.grid_sample(field, grid, mode="bilinear", padding_mode="border", align_corners=False)[..., 0].transpose(1, 2)


def map_points(points: torch.Tensor, transform: ViewTransform) -> tuple[torch.Tensor, torch.Tensor]:
    """points (B, P, 2) in the original -> (view points (B, P, 2), inside the view's box (B, P) bool)."""
    q = points @ transform.linear.transpose(1, 2) + transform.shift[:, None]  # (B, P, 2)
    v = q
    for _ in range(FIXED_POINT_ITERATIONS):
        v = q - sample_field(transform.displacement, v)
    height, width = transform.box[:, None, 0], transform.box[:, None, 1]
    inside = (v[..., 0] >= 0) & (v[..., 1] >= 0) & (v[..., 0] < width) & (v[..., 1] < height)
    return v, inside


def warp(images: torch.Tensor, transform: ViewTransform) -> tuple[torch.Tensor, torch.Tensor]:
    """images (B, 1, H, W), 0 on padding -> the view (B, 1, H', W') and its padding mask (B, H', W')."""
    B, _, H, W = images.shape
    Hv, Wv = transform.displacement.shape[-2:]
    ys = torch.arange(Hv, device=images.device, dtype=torch.float32) + 0.5
    xs = torch.arange(Wv, device=images.device, dtype=torch.float32) + 0.5
    qx = xs + transform.displacement[:, 0]  # (B, H', W'): v + u(v), x
    qy = ys[:, None] + transform.displacement[:, 1]  # and y
    # grid_sample's coordinates of the source M^-1 (q - t): an affine map of q, applied elementwise (a batched
    # 2 x 2 matmul over every pixel is several times slower)
    to_grid = torch.diag(torch.tensor([2.0 / W, 2.0 / H], device=images.device)) @ torch.linalg.inv(transform.linear)
    offset = -(to_grid @ transform.shift[:, :, None])[:, :, 0] - 1  # (B, 2)
    g = to_grid[:, :, :, None, None]  # (B, 2, 2, 1, 1)
    grid = torch.stack((g[:, 0, 0] * qx + g[:, 0, 1] * qy + offset[:, 0, None, None],
                        g[:, 1, 0] * qx + g[:, 1, 1] * qy + offset[:, 1, None, None]), -1)  # (B, H', W', 2)
    view = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    mask = (ys[None, :, None] >= transform.box[:, 0, None, None]) | \
        (xs[None, None, :] >= transform.box[:, 1, None, None])  # (B, H', W')
    return view.masked_fill(mask[:, None], 0.0), mask


def max_filter3(x: torch.Tensor) -> torch.Tensor:
    """3 x 3 maximum of (B, C, H, W), the outside not counted: F.max_pool2d(x, 3, stride=1, padding=1) as two 1-D
    passes, which on the CPU take a twentieth of its time (measured: 0.5 against 15 ms at 12 x 120 x 420)."""
    p = F.pad(x, (1, 1, 1, 1), value=float("-inf"))
    rows = torch.maximum(torch.maximum(p[..., :-2], p[..., 1:-1]), p[..., 2:])
    return torch.maximum(torch.maximum(rows[..., :-2, :], rows[..., 1:-1, :]), rows[..., 2:, :])


def photometric(images: torch.Tensor, mask: torch.Tensor, config: ViewConfig, cpu: torch.Generator,
                generator: torch.Generator) -> torch.Tensor:
    """Stroke width (fractional 3x3 dilation or erosion), Gaussian blur, contrast and noise; (B, 1, H, W) -> same."""
    B, device = len(images), images.device
    x = images
    if config.stroke_width > 0:
        amount = _uniform(B, -config.stroke_width, config.stroke_width, cpu).float().to(device)[:, None, None, None]
        dilated, eroded = max_filter3(x), -max_filter3(-x)
        x = x + amount.clamp_min(0) * (dilated - x) + (-amount).clamp_min(0) * (eroded - x)
    if config.blur > 0:
        sigma = _uniform(B, 0.0, config.blur, cpu).float().clamp_min(1e-3).to(device)  # (B,)
        radius = math.ceil(3 * config.blur)
        taps = torch.arange(-radius, radius + 1, device=device, dtype=torch.float32)
        kernel = torch.exp(-0.5 * (taps[None] / sigma[:, None]) ** 2)
        kernel = kernel / kernel.sum(1, keepdim=True)  # (B, K)
        x = x.view(1, B, *x.shape[2:])  # one channel per image: a grouped convolution blurs each its own way
        x = F.conv2d(x, kernel[:, None, None, :], padding=(0, radius), groups=B)
        x = F.conv2d(x, kernel[:, None, :, None], padding=(radius, 0), groups=B).view_as(images)
    contrast = _uniform(B, config.min_contrast, 1.0, cpu).float().to(device)[:, None, None, None]
    x = x * contrast
    if config.noise > 0:
        std = _uniform(B, 0.0, config.noise, cpu).float().to(device)[:, None, None, None]
        x = x + std * torch.randn(x.shape, generator=generator, device=device)
    return x.clamp(0, 1).masked_fill(mask[:, None], 0.0)


def sample_ink_points(images: torch.Tensor, mask: torch.Tensor, count: int, threshold: float,
                      generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, 1, H, W) images -> `count` pixel centres per image drawn uniformly from its ink (with replacement)
    as (B, P, 2) x, y, and (B, P) bool, False where an image has no ink (its points then lie on any valid pixel)."""
    B, _, H, W = images.shape
    ink = (images[:, 0] > threshold) & ~mask  # (B, H, W)
    has_ink = ink.flatten(1).any(1)  # (B,)
    weights = torch.where(has_ink[:, None, None], ink, ~mask).flatten(1).float()  # (B, H W)
    flat = torch.multinomial(weights, count, replacement=True, generator=generator)  # (B, P)
    points = torch.stack((flat % W, flat // W), -1).float() + 0.5
    return points, has_ink[:, None].expand(B, count)


def generators(seed: int, device: torch.device) -> tuple[torch.Generator, torch.Generator]:
    """(CPU generator for per-image parameters, generator on `device` for noise fields), both from `seed`."""
    cpu = torch.Generator().manual_seed(seed)
    on_device = torch.Generator(device=device).manual_seed(seed + 1)
    return cpu, on_device


def make_views(images: torch.Tensor, mask: torch.Tensor, config: ViewConfig, points: int, seed: int) -> ViewPair:
    """images (B, 1, H, W) in [0, 1], 0 on padding, mask (B, H, W) -> two views and `points` matched ink points.

    A pure function of (inputs, config, seed). Runs in float32 with autocast off.
    """
    device = images.device
    cpu, on_device = generators(seed, device)
    with torch.autocast(device.type, enabled=False):
        images = images.float()
        sizes = image_sizes(mask)
        geometry = [sample_geometry(sizes, config, cpu) for _ in range(2)]
        canvas = tuple(int(max(g[2][:, k].max() for g in geometry)) for k in range(2))
        original_points, on_ink = sample_ink_points(images, mask, points, config.ink_threshold, on_device)
        transforms, views, masks, mapped, valid = [], [], [], [], on_ink
        for linear, shift, box in geometry:
            transform = ViewTransform(linear.float().to(device), shift.float().to(device),
                                      elastic_field(len(images), canvas, config, on_device, device), box.to(device))
            view, view_mask = warp(images, transform)
            views.append(photometric(view, view_mask, config, cpu, on_device))
            where, inside = map_points(original_points, transform)
            transforms.append(transform)
            masks.append(view_mask)
            mapped.append(where)
            valid = valid & inside
    return ViewPair(torch.cat(views), torch.cat(masks), original_points, torch.cat(mapped), valid, tuple(transforms))


def sample_at(features: torch.Tensor, points: torch.Tensor, stride: int) -> torch.Tensor:
    """features (N, h, w, d) of a stride-`stride` encoder, points (N, P, 2) in input pixels -> (N, P, d), bilinear.

    Feature cell (i, j) covers input pixels [stride j, stride (j+1)) x [stride i, stride (i+1)): its centre is
    at stride (j + 0.5), which is where grid_sample(align_corners=False) puts it on a map of w cells.
    """
    N, h, w, d = features.shape
    grid = torch.stack((2 * points[..., 0] / (stride * w) - 1, 2 * points[..., 1] / (stride * h) - 1), -1)
    sampled = F.grid_sample(features.permute(0, 3, 1, 2), grid[:, :, None].to(features.dtype), mode="bilinear",
                            padding_mode="zeros", align_corners=False)  # (N, d, P, 1)
    return sampled[..., 0].transpose(1, 2)  # (N, P, d)
