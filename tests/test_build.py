"""`maskmatch data build` end to end: real CROHME files, broken and hostile ones, every source form."""

import json
import os
import shutil
import tarfile
import zipfile

import numpy as np
import pytest
from PIL import Image

from conftest import read_members
from maskmatch.cli import main
from maskmatch.data.build import build
from maskmatch.data.cache import Cache

TRAIN = ["train/MfrDB/MfrDB3088.inkml", "train/MfrDB/MfrDB0104.inkml", "train/KAIST/KME1G3_0_sub_10.inkml",
         "train/HAMEX/formulaire001-equation001.inkml", "train/expressmatch/101_Frank.inkml"]
TEST = ["2016/UN_101_em_0.inkml", "2016/UN_101_em_1.inkml", "2014/18_em_0.inkml"]
BOMB = b'<?xml version="1.0"?><!DOCTYPE ink [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;">]><ink>&b;</ink>'


@pytest.fixture(scope="module")
def source(crohme_archive, tmp_path_factory):
    """A small split folder of real files, nested at several depths, plus hostile ones."""
    root = tmp_path_factory.mktemp("source") / "crohme"
    for name, data in read_members(crohme_archive, TRAIN + TEST).items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    (root / "train" / "bomb.inkml").write_bytes(BOMB)
    (root / "train" / "nan.inkml").write_bytes(b"<ink><trace>nan 1, 2 inf</trace></ink>")
    return root


@pytest.fixture(scope="module")
def built(source, tmp_path_factory):
    out = tmp_path_factory.mktemp("built")
    return out, build(source, out, workers=2, progress=False)


def captions(split_dir):
    lines = (split_dir / "caption.txt").read_text("utf-8").splitlines()
    return dict(line.split("\t") for line in lines)


def test_bad_files_are_listed_and_the_rest_built(built):
    out, summaries = built
    train = summaries["train"]
    assert (train.files, train.built) == (7, 4)
    reasons = {s["file"]: s["reason"] for s in train.skipped}
    assert reasons["train/MfrDB/MfrDB3088.inkml"] == "empty file"
    assert "forbidden XML" in reasons["train/bomb.inkml"] and "no ink" in reasons["train/nan.inkml"]
    assert summaries["2016"].built == 2 and summaries["2014"].built == 1
    written = json.loads((out / "summary.json").read_text())
    assert written["train"]["skipped"] == train.skipped


def test_outputs_agree_with_each_other(built):
    out, _ = built
    for split in ("train", "2014", "2016"):
        caps = captions(out / split)
        cache = Cache.open(out / split)
        assert sorted(cache.names) == sorted(caps)  # no OOV among these files
        for n, name in enumerate(cache.names):
            image, ids = cache[n]
            np.testing.assert_array_equal(np.asarray(Image.open(out / split / "img" / f"{name}.png")), image)
            assert " ".join(cache.vocabulary[i] for i in ids) == caps[name]
    assert captions(out / "2016")["UN_101_em_0"] == "x ^ { 2 M } + x ^ { M - 1 }"


def test_offline_layout_and_archives_build_the_same_captions(built, source, tmp_path):
    out, _ = built
    offline = tmp_path / "offline"
    for split in ("train", "2016"):
        shutil.copytree(out / split, offline / split, ignore=shutil.ignore_patterns("cache"))
    with open(offline / "2016" / "caption.txt", "a") as f:
        f.write("ghost\tx + 1\n")
    rebuilt = build(offline, tmp_path / "rebuilt", workers=1, progress=False)
    assert rebuilt["train"].layout == "offline" and not rebuilt["train"].skipped
    assert rebuilt["2016"].skipped == [{"file": "2016/caption.txt:3", "reason": "no image img/ghost.png|bmp|jpg"}]
    for split in ("train", "2016"):
        assert captions(tmp_path / "rebuilt" / split) == captions(out / split)

    with tarfile.open(tmp_path / "src.tar.gz", "w:gz") as tar:
        tar.add(source, arcname="crohme")
    with zipfile.ZipFile(tmp_path / "src.zip", "w") as zf:
        for path in source.rglob("*"):
            zf.write(path, path.relative_to(source.parent))
    for archive in ("src.tar.gz", "src.zip"):
        build(tmp_path / archive, tmp_path / archive.replace(".", "_"), splits=["2016"], workers=1, progress=False)
        assert captions(tmp_path / archive.replace(".", "_") / "2016") == captions(out / "2016")


def test_cli_reports_user_mistakes_in_one_line(tmp_path, capsys):
    assert main(["data", "build", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err.strip().count("\n") == 0
    (tmp_path / "empty").mkdir()
    assert main(["data", "build", str(tmp_path / "empty"), "--out", str(tmp_path / "o")]) == 2
    assert "no split folders" in capsys.readouterr().err
    (tmp_path / "junk.zip").write_bytes(b"not a zip")
    assert main(["data", "build", str(tmp_path / "junk.zip"), "--out", str(tmp_path / "o")]) == 2
    assert "cannot unpack" in capsys.readouterr().err


def test_cli_rejects_unknown_split(source, tmp_path, capsys):
    assert main(["data", "build", str(source), "--out", str(tmp_path), "--splits", "2099", "--quiet"]) == 2
    assert "2099" in capsys.readouterr().err


def test_render_scale_is_chosen_at_build_and_kept_in_the_cache(source, built, tmp_path, capsys):
    """--symbol-size and --stroke-width render at that scale (smaller symbols, smaller images) and the cache says
    so: finetune copies the cache's render config into the model's manifest, which recognition then renders at."""
    out = tmp_path / "small"
    assert main(["data", "build", str(source), "--out", str(out), "--splits", "2016", "--quiet",
                 "--symbol-size", "20", "--stroke-width", "2"]) == 0
    render = json.loads((out / "2016" / "cache" / "meta.json").read_text("utf-8"))["render"]
    assert render["symbol_size"] == 20 and render["stroke_width"] == 2
    default_dir = built[0] / "2016" / "img"
    for png in sorted((out / "2016" / "img").glob("*.png")):
        small, default = Image.open(png), Image.open(default_dir / png.name)
        assert small.height < default.height and small.width < default.width
    with pytest.raises(SystemExit):
        main(["data", "build", str(source), "--out", str(out), "--symbol-size", "0"])
    assert "--symbol-size" in capsys.readouterr().err


def test_variants_of_the_train_split_only(source, built, tmp_path):
    """--variants K: train/variants/ holds K distorted renders of each cached expression, in the cache's order,
    same tokens, different pixels; rebuilt, the same bytes; the test splits get none."""
    from maskmatch.data.variants import VariantConfig

    out = tmp_path / "v"
    summaries = build(source, out, workers=2, progress=False, variants=VariantConfig(count=2, swap_share=0.5))
    plain, variants = Cache.open(out / "train"), Cache.open(out / "train" / "variants")
    assert variants.variants == 2 and len(variants) == 2 * len(plain) == 2 * summaries["train"].cached
    assert variants.names[:2] == [f"{plain.names[0]}#1", f"{plain.names[0]}#2"]
    for i in range(len(plain)):
        image, ids = plain[i]
        for v in (1, 2):
            other, other_ids = variants[2 * i + v - 1]
            assert np.array_equal(other_ids, ids) and other.shape != image.shape or not np.array_equal(other, image)
    assert summaries["train"].variants == 2 and summaries["2014"].variants == 0
    assert not (out / "2014" / "variants").exists() and not (out / "2016" / "variants").exists()
    again = tmp_path / "again"
    build(source, again, splits=["train"], workers=1, progress=False, variants=VariantConfig(count=2, swap_share=0.5))
    assert (again / "train/variants/images.u8").read_bytes() == (out / "train/variants/images.u8").read_bytes()


def test_a_build_killed_anywhere_and_rerun_is_complete_and_identical(source, built, tmp_path):
    """data build killed at several points, then run again into the same folder: every cache is complete and
    byte-identical to the uninterrupted build's; a half-written cache is never opened as complete."""
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "killed"
    command = [sys.executable, "-m", "maskmatch", "data", "build", str(source), "--out", str(out), "--workers", "2",
               "--quiet"]
    for delay in (0.3, 0.8, 1.5, 2.5):
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                   start_new_session=True)
        time.sleep(delay)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        for split in ("train", "2014", "2016"):
            if (out / split / "cache").is_dir() and not (out / split / "cache" / "meta.json").is_file():
                with pytest.raises(FileNotFoundError, match="no complete cache"):
                    Cache.open(out / split)
    assert subprocess.run(command, capture_output=True).returncode == 0
    reference, _ = built
    for split in ("train", "2014", "2016"):
        for name in ("images.u8", "index.npy", "tokens.npy", "token_offsets.npy", "expressions.npy", "meta.json"):
            assert (out / split / "cache" / name).read_bytes() == (reference / split / "cache" / name).read_bytes()
        assert (out / split / "caption.txt").read_text() == (reference / split / "caption.txt").read_text()


def test_subexpressions_of_the_train_split(source, tmp_path):
    """--subexpressions: train/subexpressions/ holds each cached expression's windows (NAME~k), their tokens a
    slice of the expression's; MfrDB0104 (c . (root 3 of 2)^2 + b . (root 3 of 2) + a = 0) gives three."""
    from maskmatch.data.variants import VariantConfig

    out = tmp_path / "s"
    summaries = build(source, out, splits=["train", "2014"], workers=1, progress=False,
                      variants=VariantConfig(subexpressions=True))
    plain, parts = Cache.open(out / "train"), Cache.open(out / "train" / "subexpressions")
    assert summaries["train"].subexpressions == len(parts) and summaries["2014"].subexpressions == 0
    assert summaries["train"].subexpression_sources == len({n.split("~")[0] for n in parts.names})
    assert [n for n in parts.names if n.startswith("MfrDB0104~")] == ["MfrDB0104~1", "MfrDB0104~2", "MfrDB0104~3"]
    for i, name in enumerate(parts.names):
        parent = plain[plain.names.index(name.split("~")[0])][1].tolist()
        ids = parts[i][1].tolist()
        assert any(parent[j:j + len(ids)] == ids for j in range(len(parent))) and len(ids) < len(parent)
    assert not (out / "2014" / "subexpressions").exists()
