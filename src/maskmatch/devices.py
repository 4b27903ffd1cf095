"""The torch device of recognition, one rule for the CLI and the API: CUDA when this torch has it, else the CPU."""

from __future__ import annotations

import torch


def resolve_device(name: str | torch.device | None = None) -> torch.device:
    """None or "auto": cuda if available, else cpu; otherwise the named device, checked: ValueError (one line)
    for a malformed name or a device this torch build or machine does not have."""
    if name is None or name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ValueError(f"device {name!r} is not a torch device (e.g. cpu, cuda, cuda:1)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            build = "a CPU build" if torch.version.cuda is None else "no visible GPU"
            raise ValueError(f"device {name!r}: CUDA is not available (torch {torch.__version__}, {build}); use cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"device {name!r}: only {torch.cuda.device_count()} CUDA device(s)")
    elif device.type != "cpu":
        raise ValueError(f"device {name!r}: maskmatch recognizes on cpu or cuda")
    return device
