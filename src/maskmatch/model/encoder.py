"""DenseNet-B encoder (CoMER/BTTR) with a padding mask carried through, then 1x1 projection and 2-D positions.

Padding rule: a feature cell is padding iff all of its 16x16 source pixels are (computed as a cascade of
2x2 "any valid" pools, one per halving). For the bottom/right padding of `collate` this equals CoMER's
top-left rule `mask[:, 0::16, 0::16]`, and the map has ceil(H/16) x ceil(W/16) cells.

Padding independence: features are zeroed on padding before every spatial operation (3x3 convs, pools),
and the average pools divide by the number of valid pixels, so in eval mode the valid cells of an image
come out the same, up to float noise, whether it is alone or padded inside a larger batch. (In train mode
BatchNorm's batch statistics still see the padding, as in CoMER.)

Speed (CPU inference, same results up to float rounding): the DenseNet's weights are channels-last
(NHWC), which oneDNN's convolutions run ~20% faster, and without autograd a dense block writes each
layer's new channels into one preallocated NHWC buffer instead of concatenating (which copies all
channels so far at every layer); a layer's 1x1 convolution then reads its input as a strided matrix
(pixels x channels so far) of that buffer, so nothing is copied.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from maskmatch.model.config import DENSE_BLOCKS, ModelConfig


def sinusoid(positions: torch.Tensor, dim: int, temperature: float) -> torch.Tensor:
    """Interleaved sin/cos of (...) positions -> (..., dim); pair i has frequency temperature^(-2i/dim)."""
    freq = temperature ** (-torch.arange(0, dim, 2, device=positions.device, dtype=torch.float32) / dim)  # (dim/2,)
    angles = positions.float()[..., None] * freq  # (..., dim/2)
    return torch.stack((angles.sin(), angles.cos()), dim=-1).flatten(-2)  # (..., dim)


def image_positions(mask: torch.Tensor, dim: int, temperature: float) -> torch.Tensor:
    """CoMER's ImgPosEnc (normalize=True, scale=2 pi): (B, h, w) bool padding mask -> (B, h, w, dim).

    Coordinates count valid cells (1..n) and are divided by the valid extent of their row or column,
    so they depend only on the unpadded region; the first dim/2 channels encode x, the rest y.
    """
    valid = (~mask).float()  # (B, h, w)
    y = valid.cumsum(1)  # (B, h, w)
    x = valid.cumsum(2)  # (B, h, w)
    y = y / (y[:, -1:, :] + 1e-6) * 2 * math.pi
    x = x / (x[:, :, -1:] + 1e-6) * 2 * math.pi
    return torch.cat((sinusoid(x, dim // 2, temperature), sinusoid(y, dim // 2, temperature)), dim=-1)


def halve_valid(valid: torch.Tensor) -> torch.Tensor:
    """(B, 1, h, w) 1.0 on valid pixels -> (B, 1, ceil(h/2), ceil(w/2)): 1.0 where any source pixel is valid."""
    return F.max_pool2d(valid, 2, ceil_mode=True)


class Bottleneck(nn.Module):
    """CoMER's bottleneck: conv1x1 (4 growth) BN ReLU, conv3x3 (growth) BN ReLU, concatenated to the input."""

    def __init__(self, in_channels: int, growth: int, dropout: float):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 4 * growth, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(4 * growth)
        self.conv2 = nn.Conv2d(4 * growth, growth, kernel_size=3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(growth)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
        return torch.cat((x, self.grow(self.conv1(x), valid)), dim=1)  # (B, C + g, h, w)

    def grow(self, h: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
        """The layer after its 1x1 convolution: conv1(x) (B, 4g, h, w) -> the g new channels (B, g, h, w).
        valid None: nothing is padded."""
        out = self.drop(F.relu(self.bn1(h), inplace=True))  # (B, 4g, h, w)
        if valid is not None:
            out = out * valid  # padding reads as zeros
        return self.drop(F.relu(self.bn2(self.conv2(out)), inplace=True))  # (B, g, h, w)


def dense_block(layers: nn.ModuleList, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """x (B, C, h, w) through a dense block of n bottlenecks -> (B, C + n g, h, w).

    With autograd on, each layer concatenates (autograd keeps every input). Without, the channels go
    into one NHWC buffer: layer i's 1x1 convolution is a matmul of the buffer's first C + i g channels, a
    strided (pixels, C + i g) view, and its g new channels are written after them.
    """
    if bool(valid.all()):
        valid = None  # no padding: nothing to zero
    if torch.is_grad_enabled():
        for layer in layers:
            x = layer(x, valid)
        return x
    B, C, h, w = x.shape
    total = C + sum(layer.conv2.out_channels for layer in layers)
    buffer = torch.empty((B, total, h, w), dtype=x.dtype, device=x.device, memory_format=torch.channels_last)
    buffer[:, :C] = x
    pixels = buffer.permute(0, 2, 3, 1).view(B * h * w, total)  # (B h w, total): the same memory
    for layer in layers:
        conv1 = F.linear(pixels[:, :C], layer.conv1.weight.flatten(1))  # (B h w, 4g) = 1x1 conv, no bias
        new = layer.grow(conv1.view(B, h, w, -1).permute(0, 3, 1, 2), valid)  # (B, g, h, w)
        buffer[:, C : C + new.shape[1]] = new
        C += new.shape[1]
    return buffer


class Transition(nn.Module):
    """CoMER's transition: conv1x1 BN ReLU, then a 2x2 average pool (here over valid pixels only)."""

    def __init__(self, in_channels: int, out_channels: int, dropout: float):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.drop(F.relu(self.bn(self.conv(x))))  # (B, C', h, w)
        # the pools' divisors cancel, leaving the mean over valid pixels of each (possibly partial) window
        count = F.avg_pool2d(valid, 2, ceil_mode=True)  # (B, 1, h/2, w/2)
        out = F.avg_pool2d(out * valid, 2, ceil_mode=True) / count.clamp_min(1e-6)  # (B, C', h/2, w/2)
        return out, halve_valid(valid)


class DenseNet(nn.Module):
    """DenseNet-B of CoMER/BTTR: (B, 1, H, W) -> (B, 684, ceil(H/16), ceil(W/16)) for the defaults."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        g, p = config.growth_rate, config.encoder_dropout
        channels = 2 * g
        self.conv1 = nn.Conv2d(config.in_channels, channels, kernel_size=7, stride=2, padding=3, bias=False)
        self.norm1 = nn.BatchNorm2d(channels)
        self.blocks, self.transitions = nn.ModuleList(), nn.ModuleList()
        for block, n in enumerate(config.layers):
            self.blocks.append(nn.ModuleList(Bottleneck(channels + i * g, g, p) for i in range(n)))
            channels += n * g
            if block < DENSE_BLOCKS - 1:
                out = int(math.floor(channels * config.reduction))
                self.transitions.append(Transition(channels, out, p))
                channels = out
        self.post_norm = nn.BatchNorm2d(channels)
        self.out_channels = channels
        assert channels == config.encoder_channels
        self.to(memory_format=torch.channels_last)  # NHWC weights: activations follow (see the module docstring)

    def forward(self, images: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """images (B, C, H, W), valid (B, 1, H, W) 1.0 on image -> features (B, C', h, w), valid (B, 1, h, w)."""
        x = F.relu(self.norm1(self.conv1(images * valid)))  # (B, 2g, H/2, W/2)
        valid = halve_valid(valid)
        x = F.max_pool2d(x * valid, 2, ceil_mode=True)  # (B, 2g, H/4, W/4); x >= 0, so zeros never win
        valid = halve_valid(valid)
        for i, block in enumerate(self.blocks):
            x = dense_block(block, x, valid)  # (B, C + n g, h, w)
            if i < len(self.transitions):
                x, valid = self.transitions[i](x, valid)  # (B, C', h/2, w/2)
        return self.post_norm(x), valid  # (B, C, H/16, W/16), (B, 1, H/16, W/16)


class ResidualBlock(nn.Module):
    """Two 3x3 conv BN (ReLU between), plus the input (or its 1x1 strided projection when the shape changes)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, dropout: float):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = None
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(out_channels))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """x (B, C, h, w), zero on padding; valid (B, 1, h', w') of the output -> (B, C', h', w'), zero on padding."""
        out = F.relu(self.bn1(self.conv1(x)), inplace=True) * valid
        out = self.bn2(self.conv2(self.drop(out)))
        skip = x if self.shortcut is None else self.shortcut(x)
        return F.relu(out + skip, inplace=True) * valid


class ResNet(nn.Module):
    """The CPU encoder: a stride-2 3x3 stem, then three stages of residual blocks at strides 4, 8 and 16 (the first
    block of each stage halves the map with a strided convolution): fewer, wider convolutions than DenseNet-B,
    which oneDNN runs near its matmul rate. (B, 1, H, W) -> (B, stage_widths[-1], ceil(H/16), ceil(W/16)).
    Padding rule and padding independence as the DenseNet's (module docstring)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        p = config.encoder_dropout
        stem = config.stem_channels
        self.stem = nn.Sequential(nn.Conv2d(config.in_channels, stem, 3, stride=2, padding=1, bias=False),
                                  nn.BatchNorm2d(stem), nn.ReLU(inplace=True))
        self.stages = nn.ModuleList()
        channels = config.stem_channels
        for width, n in zip(config.stage_widths, config.layers):
            self.stages.append(nn.ModuleList(ResidualBlock(channels if i == 0 else width, width, 2 if i == 0 else 1, p)
                                             for i in range(n)))
            channels = width
        self.out_channels = channels
        self.to(memory_format=torch.channels_last)

    def forward(self, images: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """images (B, C, H, W), valid (B, 1, H, W) 1.0 on image -> features (B, C', h, w), valid (B, 1, h, w)."""
        x = self.stem(images * valid)
        valid = halve_valid(valid)
        x = x * valid  # (B, stem, H/2, W/2)
        for stage in self.stages:
            valid = halve_valid(valid)
            for block in stage:
                x = block(x, valid)
        return x, valid  # (B, C', H/16, W/16), (B, 1, H/16, W/16)


def fold_batchnorms(module: nn.Module) -> nn.Module:
    """For inference only: each BatchNorm of a ResNet (eval mode) folded into the convolution before it, its running
    statistics and affine becoming the convolution's weight and bias (`torch.nn.utils.fusion`): the same function
    up to float rounding, one activation tensor fewer per convolution. The module can no longer be trained, nor
    load or save its weights by their names. The DenseNet is left as it is (`dense_block` reads its 1x1
    convolutions' weights as bias-free matrices)."""
    resnets = [m for m in module.modules() if isinstance(m, ResNet)]
    for resnet in resnets:
        resnet.stem[0], resnet.stem[1] = fuse_conv_bn_eval(resnet.stem[0], resnet.stem[1]), nn.Identity()
        for block in (b for b in resnet.modules() if isinstance(b, ResidualBlock)):
            block.conv1, block.bn1 = fuse_conv_bn_eval(block.conv1, block.bn1), nn.Identity()
            block.conv2, block.bn2 = fuse_conv_bn_eval(block.conv2, block.bn2), nn.Identity()
            if block.shortcut is not None:
                block.shortcut[0], block.shortcut[1] = fuse_conv_bn_eval(*block.shortcut[:2]), nn.Identity()
        resnet.to(memory_format=torch.channels_last)  # the fused weights NHWC, as the ResNet's were
    return module


class Encoder(nn.Module):
    """DenseNet-B or ResNet, 1x1 projection to d_model, 2-D image positions, LayerNorm (CoMER's order); padding
    zeroed."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.backbone = DenseNet(config) if config.encoder == "densenet" else ResNet(config)
        self.proj = nn.Conv2d(self.backbone.out_channels, config.d_model, kernel_size=1)
        self.norm = nn.LayerNorm(config.d_model)

    def forward(self, images: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """images (B, 1, H, W), mask (B, H, W) True on padding -> features (B, h, w, d), feature_mask (B, h, w)."""
        valid = (~mask)[:, None].to(images.dtype)  # (B, 1, H, W)
        x, valid = self.backbone(images, valid)  # (B, C, h, w), (B, 1, h, w)
        x = self.proj(x).permute(0, 2, 3, 1)  # (B, h, w, d)
        feature_mask = valid[:, 0] == 0  # (B, h, w)
        x = self.norm(x + image_positions(feature_mask, self.config.d_model, self.config.pos_temperature))
        return x * valid[:, 0, :, :, None], feature_mask  # (B, h, w, d), (B, h, w)
