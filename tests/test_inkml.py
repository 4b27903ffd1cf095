"""The InkML reader on real defective files and on hostile or broken XML."""

import time

import numpy as np
import pytest

from conftest import read_members
from maskmatch.data.inkml import InkmlError, read_inkml

DEFECTIVE = ["train/MfrDB/MfrDB3088.inkml", "train/MfrDB/MfrDB0104.inkml"]


def ink(traces: str, head: str = "") -> bytes:
    return f'<ink xmlns="http://www.w3.org/2003/InkML">{head}{traces}</ink>'.encode()


def test_known_defective_training_files(crohme_archive):
    files = read_members(crohme_archive, DEFECTIVE)
    with pytest.raises(InkmlError, match="empty file"):
        read_inkml(files["train/MfrDB/MfrDB3088.inkml"])
    # A non-UTF-8 byte inside MathML must not cost the ink or the truth.
    latin = read_inkml(files["train/MfrDB/MfrDB0104.inkml"])
    assert latin.truth and len(latin.strokes) > 0
    assert all(s.shape[1] == 2 and np.isfinite(s).all() for s in latin.strokes)


def test_billion_laughs_fails_fast():
    lol = '<!ENTITY lol "lol">' + "".join(
        f'<!ENTITY lol{i} "{"&lol%s;" % ("" if i == 1 else i - 1) * 10}">' for i in range(1, 10))
    bomb = f'<?xml version="1.0"?><!DOCTYPE ink [{lol}]><ink>&lol9;</ink>'.encode()
    start = time.perf_counter()
    with pytest.raises(InkmlError, match="forbidden XML"):
        read_inkml(bomb)
    assert time.perf_counter() - start < 1.0


def test_external_entity_is_refused_without_network():
    xxe = b'<?xml version="1.0"?><!DOCTYPE ink [<!ENTITY e SYSTEM "http://203.0.113.1/x">]><ink>&e;</ink>'
    with pytest.raises(InkmlError, match="forbidden XML"):
        read_inkml(xxe)
    with pytest.raises(InkmlError, match="forbidden XML"):
        read_inkml(b'<!DOCTYPE ink SYSTEM "file:///etc/passwd"><ink/>')


@pytest.mark.parametrize("data, reason", [
    (b"", "empty file"),
    (b"  \r\n ", "empty file"),
    (b"<ink><trace>1 2, 3", "not well-formed"),
    (b"<svg><trace>1 2</trace></svg>", "not <ink>"),
    (ink(""), "no ink"),
    (ink("<trace>nan nan, inf 1</trace>"), "no ink"),
    (ink("<trace>1 2, 1e300 5</trace>"), "absurd coordinate"),
    (ink("<trace>1 2, abc 5</trace>"), "unreadable point"),
    (ink("<trace>1 2, 3</trace>"), "need at least 2"),
])
def test_broken_files_give_one_line_reasons(data, reason):
    with pytest.raises(InkmlError, match=reason) as error:
        read_inkml(data)
    assert "\n" not in str(error.value)


def test_channels_crlf_and_non_finite_points():
    head = ('<traceFormat><channel name="T"/><channel name="X"/><channel name="Y"/>'
            '<channel name="F"/></traceFormat><annotation type="truth">$x$</annotation>')
    data = ink("<trace>\r\n0 10 20 1, 5 11 21 1,\r\n6 nan 22 1, 7 12 22 0\r\n</trace>", head)
    result = read_inkml(data.replace(b"\n", b"\r\n"))
    assert result.truth == "$x$"
    np.testing.assert_array_equal(result.strokes[0], [[10, 20], [11, 21], [12, 22]])


def test_undeclared_channels_take_the_first_two():
    result = read_inkml(ink("<trace>1 2 100, 3 4 200</trace><trace>5 6</trace>"))
    np.testing.assert_array_equal(result.strokes[0], [[1, 2], [3, 4]])
    assert result.truth is None and len(result.strokes) == 2


def test_missing_path_is_a_reason_not_a_crash(tmp_path):
    with pytest.raises(InkmlError, match="cannot read"):
        read_inkml(tmp_path / "nope.inkml")


def test_symbols_from_trace_groups_and_bad_groups_reported(crohme_archive):
    """CROHME's traceGroups give each symbol's label and strokes; a group without a label, with a reference to
    no ink, or sharing a stroke is reported and skipped, and the ink is still read."""
    from maskmatch.data.inkml import Symbol

    data = read_members(crohme_archive, ["train/MfrDB/MfrDB0104.inkml"])["train/MfrDB/MfrDB0104.inkml"]
    ink = read_inkml(data)
    assert ink.symbols[0] == Symbol("c", (0,)) and not ink.problems and ink.writer == "User002"
    assert sorted(i for s in ink.symbols for i in s.strokes) == list(range(len(ink.strokes)))
    bad = (b'<ink><trace id="a">0 0, 1 1</trace><trace id="b">2 2, 3 3</trace><traceGroup>'
           b'<traceGroup xml:id="g1"><annotation type="truth">x</annotation><traceView traceDataRef="a"/></traceGroup>'
           b'<traceGroup xml:id="g2"><annotation type="truth">y</annotation><traceView traceDataRef="a"/></traceGroup>'
           b'<traceGroup xml:id="g3"><traceView traceDataRef="b"/></traceGroup>'
           b'<traceGroup xml:id="g4"><annotation type="truth">z</annotation><traceView traceDataRef="q"/></traceGroup>'
           b'</traceGroup></ink>')
    ink = read_inkml(bad)
    assert ink.symbols == (Symbol("x", (0,)),) and len(ink.strokes) == 2
    assert [p.split(":")[0] for p in ink.problems] == ["traceGroup g2 (y)", "traceGroup g3", "traceGroup g4 (z)"]
