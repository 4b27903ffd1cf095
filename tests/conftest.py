"""Shared fixtures: the CROHME archive in ../shared, read but never copied into the repository."""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared"
ARCHIVE = SHARED / "data" / "crohme" / "crohme-inkml.tar.gz"


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
