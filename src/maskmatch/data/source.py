"""Where the data comes from: an archive or a folder whose top-level folders are splits.

A split holds either InkML files at any depth, or the offline layout (`caption.txt` with
`name<TAB>tokens` lines, and `img/<name>.{png,bmp,jpg}`). Archives are unpacked into a temporary
folder with tarfile's `data` filter (no links out, no absolute paths, no devices) and, for zip, a
bound on the unpacked size.
"""

from __future__ import annotations

import contextlib
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from maskmatch.errors import UserError

MAX_UNPACKED_BYTES = 20 * 1024**3  # refuses zip bombs; the CROHME archive unpacks to ~300 MB
IMAGE_SUFFIXES = (".png", ".bmp", ".jpg", ".jpeg")


@dataclass(frozen=True)
class Item:
    name: str  # unique within its split: the file stem
    path: Path  # the InkML file or the image
    caption: str | None = None  # offline layout only: the caption as written


@dataclass(frozen=True)
class Split:
    name: str
    folder: Path
    layout: str  # "inkml" or "offline"
    items: list[Item]
    problems: list[tuple[str, str]]  # (file, reason) found while listing, e.g. a caption without image


@contextlib.contextmanager
def open_source(source: str | Path) -> Iterator[Path]:
    """Yields a folder holding the splits: the folder itself, or an archive unpacked for the duration."""
    source = Path(source)
    if source.is_dir():
        yield _descend(source)
        return
    if not source.is_file():
        raise UserError(f"{source}: no such file or folder")
    with tempfile.TemporaryDirectory(prefix="maskmatch-") as tmp:
        _unpack(source, Path(tmp))
        yield _descend(Path(tmp))


def list_splits(root: Path) -> list[Split]:
    """The splits under root, sorted by name; folders with neither layout are ignored."""
    splits = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        if (folder / "caption.txt").is_file():
            splits.append(offline_split(folder))
        else:
            files = sorted(folder.rglob("*.inkml"))
            if files:
                splits.append(_inkml_split(folder, files))
    if not splits:
        raise UserError(f"{root}: no split folders with InkML files or caption.txt found")
    return splits


def _unpack(archive: Path, dest: Path) -> None:
    name = archive.name.lower()
    try:
        if name.endswith((".tar.gz", ".tgz", ".tar")):
            with tarfile.open(archive) as tar:
                tar.extractall(dest, filter="data")
        elif name.endswith(".zip"):
            with zipfile.ZipFile(archive) as zf:
                total = sum(info.file_size for info in zf.infolist())
                if total > MAX_UNPACKED_BYTES:
                    raise UserError(f"{archive}: unpacks to {total} bytes, over the {MAX_UNPACKED_BYTES} limit")
                zf.extractall(dest)
        else:
            raise UserError(f"{archive}: not a folder, .tar.gz, .tar or .zip")
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError) as e:
        raise UserError(f"{archive}: cannot unpack: {e}") from None


def _descend(root: Path) -> Path:
    """Steps into wrapper folders (an archive's `crohme/`) until the splits appear."""
    while True:
        entries = [p for p in root.iterdir() if not p.name.startswith(".")]
        if len(entries) == 1 and entries[0].is_dir() and not (entries[0] / "caption.txt").exists():
            inner = entries[0]
            if any(p.is_dir() for p in inner.iterdir()):
                root = inner
                continue
        return root


def _inkml_split(folder: Path, files: list[Path]) -> Split:
    items, problems, seen = [], [], {}
    for path in files:
        name = path.stem
        if name in seen:
            # Two files of one name in different subfolders: keep both, distinguish the second.
            name = "_".join(path.relative_to(folder).with_suffix("").parts)
            if name in seen:
                problems.append((str(path.relative_to(folder)), f"duplicate name {name!r}"))
                continue
        seen[name] = path
        items.append(Item(name=name, path=path))
    return Split(folder.name, folder, "inkml", items, problems)


def offline_split(folder: Path) -> Split:
    images = {}
    img_dir = folder / "img"
    if img_dir.is_dir():
        for p in img_dir.iterdir():
            if p.suffix.lower() in IMAGE_SUFFIXES:
                images.setdefault(p.stem, p)
    items, problems, seen = [], [], set()
    text = (folder / "caption.txt").read_text("utf-8", errors="replace")
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        name, sep, caption = line.partition("\t")
        if not sep:
            name, _, caption = line.strip().partition(" ")
        name = name.strip()
        if name in seen:
            problems.append((f"caption.txt:{number}", f"duplicate name {name!r}"))
        elif name not in images:
            problems.append((f"caption.txt:{number}", f"no image img/{name}.png|bmp|jpg"))
        else:
            seen.add(name)
            items.append(Item(name=name, path=images[name], caption=caption.strip()))
    return Split(folder.name, folder, "offline", items, problems)
