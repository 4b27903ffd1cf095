"""Recognizer API, `maskmatch recognize` and `maskmatch evaluate`, with a tiny random model (garbage output,
but well-formed) and, for the scoring loop, a decoder that is told the references."""

import contextlib
import io
import json
import math
import struct
import subprocess
import sys
import zlib
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from maskmatch.cli import main
from maskmatch.data.cache import CacheWriter
from maskmatch.data.render import RenderConfig, render_strokes
from maskmatch.data.vocab import Vocabulary
from maskmatch.model import Decoder, HMERModel, ModelConfig
from maskmatch.recognizer import Recognition, Recognizer, agreed
from maskmatch.weights import save_weights

CROSS = [[[0, 0], [10, 10]], [[10, 0], [0, 10]]]  # an "x" as two strokes
EXPRESSIONS = {  # name -> (strokes, reference caption)
    "plus": ([[[0, 5], [10, 5]], [[5, 0], [5, 10]]], "+"),
    "cross": (CROSS, "x"),
    "minus": ([[[0, 5], [12, 5]]], "-"),
    "x2": (CROSS + [[[14, -6], [18, -6], [14, -1], [18, -1]]], "x ^ { 2 }"),
}
INKML = """<ink xmlns="http://www.w3.org/2003/InkML">
<annotation type="truth">$x$</annotation>
<trace>0 0, 10 10</trace>
<trace>10 0, 0 10</trace>
</ink>"""


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    save_weights(path, HMERModel(ModelConfig.tiny(max_len=6)), {"command": "test"})
    return path


@pytest.fixture(scope="module")
def recognizer(model_path) -> Recognizer:
    return Recognizer.load(model_path)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """Inputs for the CLI: a good PNG (bright ink), a good JPEG (dark ink, large canvas), an InkML file,
    and bad ones: garbage bytes, a PNG whose header claims 100000 x 100000 pixels, a missing file."""
    folder = tmp_path_factory.mktemp("inputs")
    image = render_strokes(CROSS)
    Image.fromarray(image).save(folder / "good.png")
    canvas = np.full((600, 900), 250, np.uint8)
    canvas[100 : 100 + image.shape[0], 200 : 200 + image.shape[1]] -= image // 2  # grey ink on white
    Image.fromarray(canvas).save(folder / "dark.jpg", quality=90)
    (folder / "x.inkml").write_text(INKML, "utf-8")
    (folder / "garbage.png").write_bytes(b"\x89PNG not really" * 10)
    (folder / "bomb.png").write_bytes(png_header_only(100_000, 100_000))
    return {p.stem: p for p in folder.iterdir()} | {"missing": folder / "missing.png"}


def png_header_only(width: int, height: int) -> bytes:
    """A PNG signature, an IHDR claiming width x height 8-bit gray, an empty IDAT and IEND: ~60 bytes."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def well_formed(r: Recognition) -> None:
    vocabulary = Vocabulary.load()
    assert isinstance(r, Recognition) and r.latex == " ".join(r.tokens)
    assert all(t in vocabulary for t in r.tokens) and len(r.tokens) <= 6
    assert math.isfinite(r.score) and r.ms > 0


# ---------------------------------------------------------------- Python API


def test_recognizer_accepts_paths_images_arrays_strokes_and_bytes(recognizer, files):
    image = np.asarray(Image.open(files["good"]))
    by_path = recognizer.recognize(files["good"], beam_size=2)
    for x in (str(files["good"]), Image.open(files["good"]), image, 255 - image, image.astype(np.float32) / 255,
              files["good"].read_bytes()):
        r = recognizer.recognize(x, beam_size=2)
        well_formed(r)
        assert r.tokens == by_path.tokens  # polarity, dtype and container do not change the normalized image
    for x in (CROSS, [np.array(s, float) for s in CROSS], files["x"], INKML.encode(), files["dark"]):
        well_formed(recognizer.recognize(x, beam_size=2))


def test_batch_greedy_and_single_agree(recognizer, files):
    xs = [files["good"], CROSS, EXPRESSIONS["x2"][0], files["dark"]]
    batch = recognizer.recognize_batch(xs, beam_size=1)
    assert [r.tokens for r in batch] == [recognizer.recognize(x, beam_size=1).tokens for x in xs]
    images = [recognizer.preprocess(x) for x in xs]
    collated = torch.zeros(1, 1, images[2].shape[0], images[2].shape[1])
    collated[0, 0] = torch.from_numpy(images[2] / 255.0)
    mask = torch.zeros(1, *images[2].shape, dtype=torch.bool)
    greedy = recognizer.model.greedy(collated, mask, grammar=recognizer.grammar)[0]
    assert batch[2].tokens == recognizer.vocabulary.decode(greedy.ids)


def test_the_answer_most_reads_give_is_kept_a_tie_going_to_the_first():
    def read(latex: str, ms: float) -> Recognition:
        return Recognition(latex, latex.split(), -1.0, ms)

    assert agreed([read("x", 1), read("y", 2), read("y", 3)]).latex == "y"
    assert agreed([read("x", 1), read("y", 2), read("z", 3)]).latex == "x"
    assert agreed([read("x", 1), read("y", 2), read("z", 3)]).ms == 6  # the cost of all the reads
    assert agreed([read("x", 1.5)]).ms == 1.5


def test_reading_at_several_scales(recognizer, files):
    for x in (CROSS, files["dark"]):
        images, _ = recognizer.read(x, (1.0, 1.5))
        assert images[0].shape == recognizer.preprocess(x).shape and images[1].shape[0] > images[0].shape[0]
        # two reads at 1.5 agree and outvote the one at 1: the answer is that of 1.5 alone
        assert (recognizer.recognize(x, beam_size=1, scales=(1.0, 1.5, 1.5)).tokens
                == recognizer.recognize(x, beam_size=1, scales=(1.5,)).tokens)
    assert recognizer.recognize(CROSS, scales=(1.0,)).tokens == recognizer.recognize(CROSS).tokens
    with pytest.raises(ValueError, match="between 0.5 and 2"):
        recognizer.recognize(CROSS, scales=(1.0, 3.0))


# ---------------------------------------------------------------- per-token attention


@pytest.mark.parametrize("beam", [1, 3])
def test_attention_leaves_decoding_unchanged_and_maps_each_token(recognizer, files, beam):
    xs = [CROSS, EXPRESSIONS["x2"][0], files["dark"]]  # different sizes: padded in one batch
    plain = recognizer.recognize_batch(xs, beam_size=beam)
    seen = recognizer.recognize_batch(xs, beam_size=beam, attention=True)
    assert [(r.tokens, r.score) for r in seen] == [(r.tokens, r.score) for r in plain]
    assert all(r.attention is None for r in plain)
    for x, r in zip(xs, seen):
        H, W = recognizer.preprocess(x).shape
        assert r.attention.shape == (len(r.tokens), math.ceil(H / 16), math.ceil(W / 16))
        assert r.attention.dtype == np.float32 and (r.attention >= 0).all()
        np.testing.assert_allclose(r.attention.sum((1, 2)), 1.0, atol=1e-5)  # all of it on this image's cells
        alone = recognizer.recognize(x, beam_size=beam, attention=True).attention  # not padded
        np.testing.assert_allclose(r.attention, alone, atol=1e-4)


def test_captured_cross_attention_is_what_the_decoder_applies():
    """Each layer's captured weights, applied to the memory's values, give the layer's cross-attention output;
    capturing does not change the logits; the average is over heads and layers."""
    torch.manual_seed(1)
    decoder = Decoder(ModelConfig.tiny(num_decoder_layers=2)).eval()
    features = torch.randn(2, 3, 5, decoder.config.d_model)  # (N, h, w, d)
    mask = torch.zeros(2, 3, 5, dtype=torch.bool)
    mask[1, 2:, :] = mask[1, :, 4:] = True  # image 1 is smaller: padding cells
    tokens = torch.tensor([[1, 5, 7, 9], [1, 8, 0, 0]])  # SOS, ids, PAD
    calls = []  # each layer's cross-attention call: (inputs, keyword inputs, output)
    hooks = [layer.cross_attn.register_forward_hook(lambda m, a, kw, out: calls.append((a, kw, out)), with_kwargs=True)
             for layer in decoder.layers]
    captured = []
    with torch.inference_mode():
        logits = decoder.decode(tokens, decoder.init_cache(features, mask), captured)
        for hook in hooks:
            hook.remove()
        assert torch.equal(logits, decoder(features, mask, tokens))
        for layer, w, ((h, k, v), kw, out) in zip(decoder.layers, captured, calls):
            y = layer.cross_attn.out((w @ v).transpose(1, 2).reshape(out.shape))  # weights applied to the values
            torch.testing.assert_close(y, out)
        maps = decoder.cross_attention(features, mask, tokens)
    assert len(captured) == len(decoder.layers) and captured[0].shape == (2, decoder.config.nhead, 4, 15)
    torch.testing.assert_close(maps, torch.stack(captured).mean((0, 2)).view(2, 4, 3, 5))
    assert maps[1][:, mask[1]].abs().max() == 0  # nothing on padding
    torch.testing.assert_close(maps.sum((2, 3)), torch.ones(2, 4))


@pytest.mark.parametrize("x, message", [
    ([[[0, 0, 1]]], "stroke 0 has shape"),
    ([["a", "b"]], "stroke 0 is not"),
    ([], "no ink"),
    (np.zeros((50, 80), np.uint8), "no ink"),
    (42, "cannot recognize a int"),
    ("no/such/file.png", "no such file"),
])
def test_bad_inputs_are_one_line_value_errors(recognizer, x, message):
    with pytest.raises(ValueError, match=message) as info:
        recognizer.recognize(x)
    assert "\n" not in str(info.value)


def crosses(pen: int) -> Image.Image:
    """Three 80 px crosses 40 px apart, drawn with a `pen` px pen, dark on white."""
    image = Image.new("L", (400, 120), 255)
    draw = ImageDraw.Draw(image)
    for x in (20, 140, 260):
        draw.line([(x, 20), (x + 80, 100)], fill=0, width=pen)
        draw.line([(x + 80, 20), (x, 100)], fill=0, width=pen)
    return image


def test_a_pen_thick_for_the_writing_is_warned_about(recognizer, model_path, tmp_path, capsys):
    """A picture whose pen is over THICK_PEN of its symbols' size gets a warning (the API, --json and stderr); the
    same crosses drawn thin, and strokes, get none."""
    assert recognizer.recognize(crosses(4), beam_size=1).warnings == []
    assert recognizer.recognize(CROSS, beam_size=1).warnings == []
    [warning] = recognizer.recognize(crosses(24), beam_size=1).warnings
    assert "pen is thick" in warning
    crosses(24).save(tmp_path / "thick.png")
    assert main(["recognize", str(tmp_path / "thick.png"), "--model", str(model_path), "--greedy"]) == 0
    assert f"{tmp_path / 'thick.png'}: warning: the pen is thick" in capsys.readouterr().err
    assert main(["recognize", str(tmp_path / "thick.png"), "--model", str(model_path), "--greedy", "--json"]) == 0
    assert "pen is thick" in json.loads(capsys.readouterr().out)["warnings"][0]


def test_beam_size_below_one_and_missing_shipped_weights(recognizer, no_shipped_model):
    with pytest.raises(ValueError, match="beam_size"):
        recognizer.recognize(CROSS, beam_size=0)
    with pytest.raises(ValueError, match="no shipped weights in this version; pass a model path"):
        Recognizer.load()


def test_import_stays_light():
    code = "import sys, maskmatch; assert 'torch' not in sys.modules; from maskmatch import Recognizer; print(Recognizer.__name__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "Recognizer"


# ---------------------------------------------------------------- maskmatch recognize


def test_recognize_reports_bad_files_and_continues(model_path, files, capsys):
    paths = [files[k] for k in ("good", "garbage", "missing", "bomb", "dark")]
    code = main(["recognize", *map(str, paths), "--model", str(model_path), "--beam", "2"])
    out, err = capsys.readouterr()
    assert code == 1
    lines = out.splitlines()
    assert [line.split("\t")[0] for line in lines] == [str(files["good"]), str(files["dark"])]
    assert all(len(line.split("\t")) == 2 for line in lines)
    errors = err.splitlines()
    assert len(errors) == 3 and "Traceback" not in err
    assert errors[0].startswith(f"{files['garbage']}: not a readable image")
    assert errors[1] == f"{files['missing']}: no such file or folder"
    assert errors[2].startswith(f"{files['bomb']}: image too large")
    assert main(["recognize", *map(str, paths), "--model", str(model_path), "--greedy", "--json"]) == 1
    out, err = capsys.readouterr()
    records = [json.loads(line) for line in out.splitlines()]  # errors in the stream, in input order
    assert [r["path"] for r in records] == [str(p) for p in paths] and not err
    assert [("error" in r) for r in records] == [False, True, True, True, False]
    assert records[2]["error"] == "no such file or folder"


def test_recognize_reads_standard_input(model_path, files, capsys, monkeypatch):
    import io as std_io
    import sys as std_sys

    for data, ok in ((files["good"].read_bytes(), True), (b"", False)):
        monkeypatch.setattr(std_sys, "stdin", std_io.TextIOWrapper(std_io.BytesIO(data)))
        assert main(["recognize", "-", "--model", str(model_path), "--greedy"]) == (0 if ok else 1)
        out, err = capsys.readouterr()
        assert out.startswith("-\t") if ok else err == "-: standard input is empty\n"


def test_recognize_json_lines(model_path, files, capsys):
    assert main(["recognize", str(files["good"]), str(files["x"]), "--model", str(model_path), "--greedy", "--json"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["path"] for r in records] == [str(files["good"]), str(files["x"])]
    for r in records:
        assert set(r) == {"path", "latex", "output", "score", "confidence", "ms"} and r["output"] == r["latex"]
        assert isinstance(r["latex"], str) and isinstance(r["score"], float) and r["ms"] > 0
        assert r["confidence"] is None  # the test model has no calibration


def test_recognize_n_best(model_path, files, capsys):
    assert main(["recognize", str(files["good"]), "--model", str(model_path), "--beam", "4", "--n-best", "3",
                 "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    alternatives = record["alternatives"]
    assert 1 <= len(alternatives) <= 3 and alternatives[0]["latex"] == record["latex"]
    assert [a["score"] for a in alternatives] == sorted((a["score"] for a in alternatives), reverse=True)
    assert main(["recognize", str(files["good"]), "--model", str(model_path), "--beam", "4", "--n-best", "3"]) == 0
    assert capsys.readouterr().out.rstrip("\n").split("\t")[1:] == [a["latex"] for a in alternatives]
    assert main(["recognize", str(files["good"]), "--model", str(model_path), "--greedy", "--format", "mathml"]) == 0
    assert capsys.readouterr().out.split("\t")[1].startswith("<math")


def test_recognize_folder_recursively(model_path, tmp_path, files, capsys):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.PNG").write_bytes(files["good"].read_bytes())
    (tmp_path / "a.inkml").write_text(INKML, "utf-8")
    (tmp_path / "notes.txt").write_text("not an input", "utf-8")
    assert main(["recognize", str(tmp_path), "--model", str(model_path), "--greedy"]) == 0
    out = capsys.readouterr().out
    assert [line.split("\t")[0] for line in out.splitlines()] == [str(tmp_path / "a.inkml"), str(tmp_path / "sub" / "b.PNG")]


def test_recognize_without_model_is_a_user_error(capsys, no_shipped_model):
    assert main(["recognize", "anything.png"]) == 2
    assert capsys.readouterr().err.strip() == "maskmatch: error: no shipped weights in this version; pass a model path (--model)"


# ---------------------------------------------------------------- maskmatch evaluate


def make_split(folder: Path, cached: bool) -> dict[str, np.ndarray]:
    """An offline split as `maskmatch data build` writes it (with cache/meta.json if cached); name -> image."""
    (folder / "img").mkdir(parents=True)
    images = {name: render_strokes(strokes) for name, (strokes, _) in EXPRESSIONS.items()}
    for name, image in images.items():
        Image.fromarray(image if cached else 255 - image).save(folder / "img" / f"{name}.png")
    (folder / "caption.txt").write_text("".join(f"{n}\t{c}\n" for n, (_, c) in EXPRESSIONS.items()), "utf-8")
    if cached:
        vocabulary = Vocabulary.load()
        writer = CacheWriter(folder / "cache", vocabulary.symbols, asdict(RenderConfig()))
        for name, image in images.items():
            writer.add(name, image, vocabulary.encode(EXPRESSIONS[name][1].split()))
        writer.close()
    return images


def test_evaluate_writes_scores_and_predictions(model_path, tmp_path, capsys):
    make_split(tmp_path / "2014", cached=False)  # dark ink on white: normalized on the way in
    scores, predictions = tmp_path / "scores.json", tmp_path / "predictions.tsv"
    code = main(["evaluate", str(tmp_path / "2014"), "--model", str(model_path), "--greedy", "--batch-size", "3",
                 "--json", str(scores), "--predictions", str(predictions)])
    out = capsys.readouterr().out
    assert code == 0 and out.splitlines()[0].startswith("split") and "greedy" in out.splitlines()[1]
    result = json.loads(scores.read_text("utf-8"))
    assert list(result) == ["2014"]
    assert {"n", "exprate", "le1", "le2", "raw_exprate", "seconds", "expr_per_s", "decoding"} <= set(result["2014"])
    assert result["2014"]["n"] == 4 and result["2014"]["decoding"] == "greedy"
    rows = [line.split("\t") for line in predictions.read_text("utf-8").splitlines()]
    assert rows[0] == ["split", "name", "reference", "prediction", "distance"]
    assert [(r[0], r[1], r[2]) for r in rows[1:]] == [("2014", n, c) for n, (_, c) in EXPRESSIONS.items()]


def test_evaluate_scoring_with_a_decoder_told_the_references(model_path, tmp_path, capsys, monkeypatch):
    images = make_split(tmp_path / "2016", cached=True)  # meta.json matches: images reach decode as they are
    answer = {images[n].tobytes(): c for n, (_, c) in EXPRESSIONS.items()}
    answer[images["x2"].tobytes()] = "x^2"  # canonical-equal spelling: exact, but not raw-exact
    seen = []

    def decode(self, batch, beam_size=10, attention=False, n_best=1):
        seen.append(len(batch))
        return [Recognition(answer[image.tobytes()], answer[image.tobytes()].split(), 0.0, 1.0) for image in batch]

    monkeypatch.setattr(Recognizer, "decode", decode)
    scores, predictions = tmp_path / "scores.json", tmp_path / "predictions.jsonl"
    argv = ["evaluate", str(tmp_path / "2016"), "--model", str(model_path), "--batch-size", "3",
            "--json", str(scores), "--predictions", str(predictions)]
    assert main(argv) == 0
    result = json.loads(scores.read_text("utf-8"))["2016"]
    assert (result["n"], result["exprate"], result["le2"], result["raw_exprate"]) == (4, 100.0, 100.0, 75.0)
    assert result["decoding"] == "beam 10" and sorted(seen) == [1, 3]
    assert all(json.loads(line)["distance"] == 0 for line in predictions.read_text("utf-8").splitlines())
    capsys.readouterr()

    (tmp_path / "2016" / "img" / "x2.png").write_bytes(b"corrupted")  # unreadable: counted as wrong
    answer[images["plus"].tobytes()] = "\\div"  # one token off: within <= 1
    assert main(argv) == 0
    err = capsys.readouterr().err
    result = json.loads(scores.read_text("utf-8"))["2016"]
    assert (result["n"], result["exprate"], result["le1"], result["le2"]) == (4, 50.0, 75.0, 75.0)
    assert err.count("\n") == 1 and "x2.png: not a readable image" in err and "counted as wrong" in err
    rows = {r["name"]: r for r in map(json.loads, predictions.read_text("utf-8").splitlines())}
    assert rows["x2"]["prediction"] == "" and rows["x2"]["distance"] == 5
    assert rows["plus"]["distance"] == 1 and rows["minus"]["distance"] == 0
    assert result["unparsed"] == 0

    answer[images["plus"].tobytes()] = "x ^ { 2"  # unbalanced: counted as not parsed
    assert main([*argv, "--unconstrained"]) == 0
    result = json.loads(scores.read_text("utf-8"))["2016"]
    assert result["unparsed"] == 1 and result["decoding"] == "beam 10, unconstrained"
    capsys.readouterr()


def test_evaluate_and_recognize_at_several_scales(model_path, tmp_path, files, capsys):
    make_split(tmp_path / "pictures", cached=False)
    scores = tmp_path / "scores.json"
    assert main(["evaluate", str(tmp_path / "pictures"), "--model", str(model_path), "--greedy", "--scales",
                 "1,1.12,1.25", "--json", str(scores)]) == 0
    assert json.loads(scores.read_text("utf-8"))["pictures"]["n"] == 4
    make_split(tmp_path / "built", cached=True)
    assert main(["evaluate", str(tmp_path / "built"), "--model", str(model_path), "--greedy", "--scales", "1,1.2"]) == 2
    assert "already at the model's scale" in capsys.readouterr().err
    assert main(["recognize", str(files["good"]), str(files["x"]), "--model", str(model_path), "--greedy",
                 "--scales", "1,1.12,1.25"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2
    for bad in ("1,3", "1,x"):
        with pytest.raises(SystemExit) if bad == "1,x" else contextlib.nullcontext():
            code = main(["recognize", str(files["good"]), "--model", str(model_path), "--scales", bad])
            assert code == 2
        err = capsys.readouterr().err.strip().splitlines()[-1]  # argparse prints its usage above
        assert err.endswith("(shares of the model's symbol size)" if bad == "1,3" else "e.g. 1,1.12,1.25")


def test_evaluate_refuses_a_folder_without_captions(model_path, tmp_path, capsys):
    assert main(["evaluate", str(tmp_path), "--model", str(model_path)]) == 2
    assert "no caption.txt" in capsys.readouterr().err


def test_recognize_prints_in_input_order_whatever_the_size_batches(model_path, files, capsys):
    """recognize decodes a window of inputs in batches of like size, and still prints them in the order given."""
    paths = ([str(files["good"]), str(files["dark"]), str(files["x"])] * 4)[:11]
    assert main(["recognize", "--model", str(model_path), "--greedy", "--batch-size", "2", *paths]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[0] for line in lines] == paths


def test_size_batches_group_like_sizes_within_the_budget():
    from maskmatch.inference_commands import PIXEL_BUDGET, size_batches

    images = [np.zeros((h, w), np.uint8) for h, w in [(40, 300), (40, 80), (200, 900), (40, 90), (40, 310)]]
    batches = size_batches(images, 2)
    assert sorted(j for b in batches for j in b) == list(range(5)) and all(len(b) <= 2 for b in batches)
    assert [1, 3] in batches and [0, 4] in batches  # like sizes together
    assert size_batches([], 4) == [] and size_batches([np.zeros((3000, 3000), np.uint8)], 4) == [[0]]
    assert PIXEL_BUDGET < 3000 * 3000  # a lone image over the budget still gets its batch


def test_heap_growth_is_limited_on_linux():
    """recognize and serve fix glibc's mmap threshold (memory.py); elsewhere it is a no-op, never an error."""
    from maskmatch.memory import limit_heap_growth

    assert limit_heap_growth() is sys.platform.startswith("linux")


def test_devices_one_rule_and_one_line_errors(model_path, capsys):
    """CLI and API pick the same default device; a device this torch lacks is a one-line error, not a traceback."""
    from maskmatch.devices import resolve_device

    auto = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device() == resolve_device("auto") == Recognizer.load(model_path).device == auto
    with pytest.raises(ValueError, match="not a torch device"):
        resolve_device("gpu0")
    with pytest.raises(ValueError, match="cpu or cuda"):
        resolve_device("meta")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")
        assert main(["recognize", "--model", str(model_path), "--device", "cuda", str(model_path)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "CUDA is not available" in err


def test_version(capsys):
    from maskmatch import __version__

    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0 and capsys.readouterr().out.strip() == f"maskmatch {__version__}"


def test_a_48_megapixel_phone_photo_is_decoded_reduced(recognizer):
    """8064 x 6048, dark ink on grey paper as a phone takes it: decoded at a reduced scale (JPEG draft), then
    recognized; a PNG of that size is still refused (it cannot be decoded reduced)."""
    from PIL import ImageDraw

    from maskmatch.data.images import WORK_PIXELS, load_image

    photo = Image.new("L", (8064, 6048), 200)
    draw = ImageDraw.Draw(photo)
    draw.line([(2000, 2000), (3000, 4000), (4000, 2000)], fill=30, width=60)
    draw.line([(4500, 3000), (6000, 3000)], fill=30, width=60)
    buffer = io.BytesIO()
    photo.save(buffer, "JPEG", quality=80)
    image = load_image(buffer.getvalue())
    assert image.shape[0] * image.shape[1] <= WORK_PIXELS and image.shape[1] / image.shape[0] == pytest.approx(4 / 3, 0.01)
    assert recognizer.recognize(buffer.getvalue(), beam_size=1).ms > 0
    buffer = io.BytesIO()
    photo.save(buffer, "PNG", compress_level=1)
    with pytest.raises(ValueError, match="image too large"):
        load_image(buffer.getvalue())


def test_adversarial_inputs_take_bounded_time():
    """Noise at the largest working size and a scribble of 5,000 strokes, through the shipped model with beam 10:
    decoding stops at the length bound (max_len, the grammar closes everything in time), so each input takes
    seconds, not minutes."""
    import time

    rec = Recognizer.load(device="cpu")
    rng = np.random.default_rng(0)
    noise = (rng.random((3000, 4000)) * 255).astype(np.uint8)
    scribble = [rng.random((5, 2)) * 1000 for _ in range(5000)]
    for x in (noise, scribble):
        start = time.perf_counter()
        r = rec.recognize(x, beam_size=10)
        assert time.perf_counter() - start < 30 and len(r.tokens) < rec.model.config.max_len
