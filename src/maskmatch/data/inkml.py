"""A defensive InkML reader: pen strokes and the LaTeX truth, or one clear error.

The XML is parsed by defusedxml with DTDs, entities and external references forbidden, so
entity-expansion ("billion laughs") and external-entity files fail at once without network access.
Real CROHME files have CRLF line endings, 2 to 4 channels per point (X Y, sometimes T or F),
undeclared channels, a stray non-UTF-8 byte, and one empty file; all are handled here. Every
problem raises `InkmlError` with a one-line reason, so a build can list the file and go on.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from xml.etree.ElementTree import Element, ParseError

import numpy as np
from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring

MAX_FILE_BYTES = 16 * 1024 * 1024  # the largest CROHME file is ~200 KB
MAX_POINTS = 1_000_000
MAX_ABS_COORDINATE = 1e8  # CROHME spans ~1 to ~1e5; beyond this a file is broken, not just big

_POINT_SPLIT = re.compile(r"[,;]")


class InkmlError(ValueError):
    """Why an InkML file cannot be used, in one line."""


@dataclass(frozen=True)
class Symbol:
    label: str  # the truth label of its traceGroup, e.g. "x", "\\sqrt", "."
    strokes: tuple[int, ...]  # indices into Ink.strokes, in file order


@dataclass(frozen=True)
class Ink:
    strokes: list[np.ndarray]  # each (n_i, 2) float64 (x, y), y pointing down, all finite
    truth: str | None  # the raw LaTeX of <annotation type="truth">, None if absent
    symbols: tuple[Symbol, ...] = ()  # the symbol segmentation (CROHME's traceGroups), where it is consistent
    problems: tuple[str, ...] = ()  # why traceGroups were skipped, one line each (never fatal)
    writer: str | None = None  # <annotation type="writer">, where the file names one


def read_inkml(source: bytes | str | Path) -> Ink:
    """Reads an InkML file (path) or its bytes; raises InkmlError with the reason on failure."""
    data = _read_bytes(source) if not isinstance(source, bytes) else source
    if len(data) > MAX_FILE_BYTES:
        raise InkmlError(f"file too large ({len(data)} bytes > {MAX_FILE_BYTES})")
    if not data.strip():
        raise InkmlError("empty file")
    root = _parse_xml(data)
    if _local(root.tag) != "ink":
        raise InkmlError(f"root element is <{_local(root.tag)}>, not <ink>")
    x_index, y_index = _xy_channels(root)
    strokes, n_points, stroke_of = [], 0, {}
    for number, trace in enumerate(e for e in root.iter() if _local(e.tag) == "trace"):
        points = _parse_trace(trace.text or "", number, x_index, y_index)
        n_points += len(points)
        if n_points > MAX_POINTS:
            raise InkmlError(f"too many points (> {MAX_POINTS})")
        if len(points):
            stroke_of[trace.get("id", str(number))] = len(strokes)
            strokes.append(points)
    if not strokes:
        raise InkmlError("no ink: no trace has a finite point")
    symbols, problems = _symbols(root, stroke_of)
    return Ink(strokes=strokes, truth=_truth(root), symbols=symbols, problems=problems,
               writer=_annotation(root, "writer"))


def _read_bytes(path: str | Path) -> bytes:
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise InkmlError(f"file too large ({size} bytes > {MAX_FILE_BYTES})")
        return path.read_bytes()
    except OSError as e:
        raise InkmlError(f"cannot read: {e.strerror or e}") from None


def _parse_xml(data: bytes) -> Element:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        # A stray byte (e.g. Latin-1 inside MathML) must not cost us the ink: replace it.
        data = data.decode("utf-8", errors="replace").encode("utf-8")
    try:
        return fromstring(data, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DefusedXmlException as e:
        raise InkmlError(f"forbidden XML construct ({type(e).__name__}): DTDs and entities are refused") from None
    except ParseError as e:
        raise InkmlError(f"not well-formed XML: {e}") from None


def _local(tag: object) -> str:
    """The tag without its namespace; comments and processing instructions have no string tag."""
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


def _xy_channels(root: Element) -> tuple[int, int]:
    """Positions of X and Y among the declared channels; the first two when none are declared."""
    names = []
    for fmt in (e for e in root.iter() if _local(e.tag) == "traceFormat"):
        names = [c.get("name", "").upper() for c in fmt.iter() if _local(c.tag) == "channel"]
        break
    if "X" in names and "Y" in names:
        return names.index("X"), names.index("Y")
    return 0, 1


def _parse_trace(text: str, number: int, x_index: int, y_index: int) -> np.ndarray:
    """'x y [t [f]], x y, ...' -> (n, 2) float64 with non-finite points dropped."""
    rows = []
    for chunk in _POINT_SPLIT.split(text):
        values = chunk.split()
        if not values:
            continue
        if len(values) < 2:
            raise InkmlError(f"trace {number}: a point has {len(values)} value, need at least 2")
        if len(values) > 8:
            raise InkmlError(f"trace {number}: a point has {len(values)} values; are commas missing?")
        try:
            x, y = float(values[x_index]), float(values[y_index])
        except (ValueError, IndexError):
            raise InkmlError(f"trace {number}: unreadable point {chunk.strip()[:40]!r}") from None
        if not (math.isfinite(x) and math.isfinite(y)):
            continue
        if abs(x) > MAX_ABS_COORDINATE or abs(y) > MAX_ABS_COORDINATE:
            raise InkmlError(f"trace {number}: absurd coordinate ({x:g}, {y:g})")
        rows.append((x, y))
    return np.array(rows, dtype=np.float64).reshape(-1, 2)


def _symbols(root: Element, stroke_of: dict[str, int]) -> tuple[tuple[Symbol, ...], tuple[str, ...]]:
    """The innermost traceGroups with a truth label and trace references, as Symbols; a group whose label is
    missing, whose references name no stroke, or that shares a stroke with an earlier group is skipped and
    reported (one line each). A file whose groups are all skipped has no symbols."""
    symbols, problems, taken = [], [], set()
    groups = [g for g in root.iter() if _local(g.tag) == "traceGroup"]
    for g in groups:
        if any(_local(c.tag) == "traceGroup" for c in g):
            continue  # the segmentation's outer group
        name = g.get("{http://www.w3.org/XML/1998/namespace}id") or g.get("id") or "?"
        labels = [c.text for c in g if _local(c.tag) == "annotation" and c.get("type") == "truth"]
        refs = [c.get("traceDataRef") for c in g if _local(c.tag) == "traceView"]
        label = (labels[0] or "").strip() if labels else ""
        indices = [stroke_of.get(r) for r in refs]
        if not label:
            problems.append(f"traceGroup {name}: no truth label")
        elif not refs or None in indices:
            problems.append(f"traceGroup {name} ({label}): references traces that hold no ink: {refs}"[:200])
        elif taken & set(indices):
            problems.append(f"traceGroup {name} ({label}): shares a trace with another symbol")
        else:
            taken |= set(indices)
            symbols.append(Symbol(label, tuple(sorted(indices))))
    return tuple(symbols), tuple(problems)


def _truth(root: Element) -> str | None:
    return _annotation(root, "truth")


def _annotation(root: Element, kind: str) -> str | None:
    """The text of the file's top-level <annotation type=kind>, None if absent or empty."""
    for e in root:
        if _local(e.tag) == "annotation" and e.get("type") == kind:
            return (e.text or "").strip() or None
    return None
