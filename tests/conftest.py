"""Shared fixtures: the CROHME archive in ../shared, read but never copied into the repository."""

from __future__ import annotations

import tarfile
from pathlib import Path

import numpy as np
import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared"
ARCHIVE = SHARED / "data" / "crohme" / "crohme-inkml.tar.gz"


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module's tests (opt in: `pytestmark = pytest.mark.usefixtures("one_thread")`): on a
    busy 2-core machine, two OpenMP threads can run 100 times slower. The modules that train end to end use it."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def no_shipped_model(monkeypatch):
    """A broken install: the package holds neither its weights nor an ensemble file."""
    monkeypatch.setattr("maskmatch.recognizer.SHIPPED", "no-such-weights.safetensors")
    monkeypatch.setattr("maskmatch.recognizer.SHIPPED_ENSEMBLE", "no-such-ensemble.json")


@pytest.fixture(scope="session")
def crohme_archive() -> Path:
    if not ARCHIVE.is_file():
        pytest.skip(f"CROHME archive not found at {ARCHIVE}")
    return ARCHIVE


def read_members(archive: Path, names: list[str]) -> dict[str, bytes]:
    """The bytes of the named archive members (paths below `crohme/`)."""
    wanted = {f"crohme/{n}" for n in names}
    found = {}
    with tarfile.open(archive) as tar:
        for member in tar:
            if member.name in wanted:
                found[member.name.removeprefix("crohme/")] = tar.extractfile(member).read()
    assert set(found) == set(names), f"missing from archive: {set(names) - set(found)}"
    return found


def glyph(token: int) -> np.ndarray:
    """A 12x8 uint8 'symbol' (ink 255): a frame plus a 3x2 grid of blocks set by the token's low 6 bits."""
    g = np.zeros((12, 8), np.uint8)
    g[0, :] = g[-1, :] = g[:, 0] = g[:, -1] = 255
    for bit in range(6):
        if token >> bit & 1:
            r, c = 1 + 3 * (bit // 2), 1 + 3 * (bit % 2)
            g[r : r + 3, c : c + 3] = 255
    return g


def build_train_split(root: Path, n: int) -> Path:
    """root/train/cache as `maskmatch data build` writes it: n expressions of 3-5 glyphs drawn at twice the
    `glyph` size (24 x 16), 48 px high; returns root."""
    from dataclasses import asdict

    from maskmatch.data.cache import CacheWriter
    from maskmatch.data.render import RenderConfig
    from maskmatch.data.vocab import Vocabulary

    vocab = Vocabulary.load()
    ids = vocab.encode(list("0123456789abcdefxyz"))
    rng = np.random.default_rng(0)
    writer = CacheWriter(root / "train" / "cache", vocab.symbols, asdict(RenderConfig()))
    for k in range(n):
        seq = rng.choice(ids, rng.integers(3, 6)).tolist()
        image = np.zeros((48, 20 * len(seq) + 12), np.uint8)
        for i, t in enumerate(seq):
            top = rng.integers(4, 20)
            image[top : top + 24, 6 + 20 * i : 22 + 20 * i] = np.kron(glyph(t), np.ones((2, 2), np.uint8))
        writer.add(f"e{k:03d}", image, seq)
    writer.close()
    return root


def without_labels(root: Path, dest: Path) -> Path:
    """A copy of root/train in dest/train with its labels deleted (the cache's token files); returns dest."""
    import shutil

    shutil.copytree(root / "train", dest / "train")
    for name in ("tokens.npy", "token_offsets.npy"):
        (dest / "train" / "cache" / name).unlink()
    return dest


def kill_after_checkpoint(args: list[str], run_dir: Path, when) -> None:
    """Runs `python -m maskmatch *args` (one OpenMP thread) and SIGKILLs it as soon as run_dir's log records a
    checkpoint whose step satisfies `when(step)` (within 120 s); asserts that it was killed, not finished."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from maskmatch.engine.callbacks import read_log

    env = dict(os.environ, OMP_NUM_THREADS="1")
    process = subprocess.Popen([sys.executable, "-m", "maskmatch", *args], env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while process.poll() is None and time.monotonic() < deadline:
        saved = [r for r in read_log(run_dir / "log.jsonl") if r.get("event") == "checkpoint"]
        if any(when(r["step"]) for r in saved):
            process.send_signal(signal.SIGKILL)
            break
        time.sleep(0.01)
    stderr = process.communicate()[1].decode()
    assert process.returncode == -signal.SIGKILL, f"not killed mid-run (exit {process.returncode}): {stderr[-500:]}"
