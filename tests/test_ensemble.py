"""Ensembles (model/ensemble.py): a model with itself decodes as the model alone, two models' step log-probs are
the normalized mean of theirs, and Recognizer / the CLI take several weight files with one-line errors."""

import shutil

import pytest
import torch

from test_model import synthetic_batch

from maskmatch.cli import main
from maskmatch.data.render import RenderConfig
from maskmatch.data.vocab import PAD, SOS, Vocabulary
from maskmatch.ensemble_file import make_ensemble, read_ensemble
from maskmatch.model import HMERModel, ModelConfig, search
from maskmatch.model.ensemble import Ensemble
from maskmatch.recognizer import Recognizer
from maskmatch.results import ship
from maskmatch.weights import read_manifest, save_weights


def tiny(seed: int, **overrides) -> HMERModel:
    torch.manual_seed(seed)
    return HMERModel(ModelConfig.tiny(max_len=8, **overrides)).eval()


def test_a_model_with_itself_decodes_as_the_model_alone():
    model = tiny(0)
    pair = Ensemble([model, model]).eval()
    images, mask, _, _ = synthetic_batch()
    for alone, together in [(model.greedy(images, mask), pair.greedy(images, mask)),
                            (model.beam_search(images, mask, beam_size=3), pair.beam_search(images, mask, beam_size=3))]:
        assert [h.ids for h in together] == [h.ids for h in alone]
        assert [h.score for h in together] == pytest.approx([h.score for h in alone], abs=1e-5)


def test_two_models_step_on_the_normalized_mean_of_their_log_probs():
    a, b = tiny(0), tiny(1, d_model=32, nhead=2)  # memories of different widths, split again per member
    pair = Ensemble([a, b]).eval()
    images, mask, _, _ = synthetic_batch()
    tokens = torch.full((len(images),), SOS)
    with torch.no_grad():
        got = search.next_logprobs(pair.decoder, tokens, pair.decoder.init_cache(*pair.encode(images, mask)))
        members = [m.decoder.step(tokens, m.decoder.init_cache(*m.encode(images, mask))).log_softmax(-1)
                   for m in (a, b)]
    mean = (members[0] + members[1]) / 2
    mean[:, [PAD, SOS]] = float("-inf")
    assert torch.allclose(got, mean.log_softmax(-1), atol=1e-5)
    hyps = pair.beam_search(images, mask, beam_size=3, n_best=True)
    assert len(hyps) == len(images) and all(0 < len(r) <= 3 for r in hyps)


def test_teacher_forcing_an_ensemble_scores_what_its_decoding_steps_score():
    a, b = tiny(0), tiny(1, d_model=32, nhead=2)
    pair = Ensemble([a, b]).eval()
    images, mask, _, _ = synthetic_batch()
    prefix = torch.tensor([[SOS, 5, 7]] * len(images))
    with torch.no_grad():
        forced = pair(images, mask, prefix).log_softmax(-1)  # (B, 3, V)
        cache = pair.decoder.init_cache(*pair.encode(images, mask))
        stepped = [search.next_logprobs(pair.decoder, prefix[:, t], cache) for t in range(3)]
    for t, step in enumerate(stepped):
        shown = torch.isfinite(step)  # PAD and SOS, which decoding never emits, aside
        renormalized = forced[:, t].masked_fill(~shown, float("-inf")).log_softmax(-1)
        assert torch.allclose(renormalized[shown], step[shown], atol=1e-5)


def test_members_must_share_the_vocabulary_and_the_stride():
    with pytest.raises(ValueError, match="vocabularies of"):
        Ensemble([tiny(0), tiny(1, vocab_size=50)])
    with pytest.raises(ValueError, match="at least two"):
        Ensemble([tiny(0)])


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("ensemble")
    paths = {name: folder / f"{name}.safetensors" for name in ("a", "b", "scaled")}
    save_weights(paths["a"], tiny(0), {"command": "test", "calibration": {"greedy": {"a": 1.0, "b": 0.0}}})
    save_weights(paths["b"], tiny(1), {"command": "test"})
    save_weights(paths["scaled"], tiny(2), {"command": "test"}, render=RenderConfig(symbol_size=28))
    return paths


def test_recognizer_loads_several_weight_files_as_one_ensemble(weights):
    rec = Recognizer.load([weights["a"], weights["b"]], "cpu")
    assert isinstance(rec.model, Ensemble) and rec.manifest["ensemble"] == [str(weights["a"]), str(weights["b"])]
    assert "calibration" not in rec.manifest  # fitted to one member's scores, not the ensemble's
    assert rec.recognize([[[0, 0], [10, 10]], [[10, 0], [0, 10]]], beam_size=2).tokens
    assert isinstance(Recognizer.load([weights["a"]], "cpu").model, HMERModel)  # a list of one: that model
    with pytest.raises(ValueError, match="another scale"):
        Recognizer.load([weights["a"], weights["scaled"]], "cpu")
    with pytest.raises(ValueError, match="torch runtime"):
        Recognizer.load([weights["a"], weights["b"]], "cpu", runtime="onnx")


def test_recognize_takes_model_twice(weights, tmp_path, capsys):
    image = tmp_path / "x.inkml"
    image.write_text('<ink xmlns="http://www.w3.org/2003/InkML"><trace>0 0, 10 10</trace></ink>', "utf-8")
    assert main(["recognize", str(image), "--model", str(weights["a"]), "--model", str(weights["b"]), "--greedy"]) == 0
    assert all(t in Vocabulary.load() for t in capsys.readouterr().out.split("\t")[-1].split())
    assert main(["recognize", str(image), "--model", str(weights["a"]), "--model", str(weights["scaled"])]) != 0
    assert "another scale" in capsys.readouterr().err


def test_an_ensemble_file_names_its_members_and_refuses_others(weights, tmp_path):
    """make_ensemble copies the members beside ensemble.json; a member swapped for another model, a missing one
    or a damaged file is a one-line ValueError, never a silent other ensemble."""
    path = make_ensemble([weights["a"], weights["b"]], tmp_path / "pair", {"metrics": {"validation": {"exprate": 9.0}}})
    rec = Recognizer.load(path, "cpu")
    assert rec.members == 2 and rec.manifest["metrics"] == {"validation": {"exprate": 9.0}}
    assert rec.manifest["ensemble"] == [str(tmp_path / "pair" / n) for n in ("model.safetensors", "model-2.safetensors")]
    assert rec.manifest["weights"]["parameters"] == 2 * read_manifest(weights["a"])["weights"]["parameters"]
    assert rec.recognize([[[0, 0], [10, 10]]], beam_size=2).tokens
    swapped = tmp_path / "swapped"
    shutil.copytree(tmp_path / "pair", swapped)
    shutil.copyfile(weights["a"], swapped / "model-2.safetensors")
    shutil.copyfile(weights["a"].with_suffix(".json"), swapped / "model-2.json")
    with pytest.raises(ValueError, match="not the model this ensemble was made of"):
        Recognizer.load(swapped / "ensemble.json", "cpu")
    (swapped / "model-2.safetensors").unlink()
    with pytest.raises(ValueError, match="no such weights file"):
        Recognizer.load(swapped / "ensemble.json", "cpu")
    (swapped / "ensemble.json").write_text("{", "utf-8")
    with pytest.raises(ValueError, match="not valid JSON"):
        Recognizer.load(swapped / "ensemble.json", "cpu")
    with pytest.raises(ValueError, match="cannot be a member"):
        Recognizer.load([path, weights["a"]], "cpu")


def test_shipping_an_ensemble_then_one_model_leaves_what_was_shipped_last(weights, tmp_path):
    """results --ship writes an ensemble's members and file into the assets folder; shipping one model after it
    removes them, so that Recognizer.load() never reads a stale ensemble."""
    scores = {"2014": {"beam": {"n": 6, "exprate": 50.0, "le1": 60.0, "le2": 70.0, "decoding": "beam 2"}}}
    pair = make_ensemble([weights["a"], weights["b"]], tmp_path / "pair", {"command": "maskmatch ensemble ..."})
    assets = tmp_path / "assets"
    shipped = ship(pair, scores, "maskmatch results ...", assets)
    assert shipped == assets / "ensemble.json"
    assert sorted(p.name for p in assets.iterdir()) == ["ensemble.json", "model-2.json", "model-2.safetensors",
                                                        "model.json", "model.safetensors"]
    _, record = read_ensemble(shipped)
    assert record["metrics"]["test"]["2014"]["beam"]["exprate"] == 50.0 and record["command"] == "maskmatch ensemble ..."
    manifest = Recognizer.load(shipped, "cpu").manifest  # the first member's training command, and the ensemble's
    assert manifest["command"] == "test" and manifest["ensemble_command"] == "maskmatch ensemble ..."
    assert ship(weights["b"], scores, "maskmatch results ...", assets) == assets / "model.safetensors"
    assert sorted(p.name for p in assets.iterdir()) == ["model.json", "model.safetensors"]
    ship(assets / "model.safetensors", scores, "maskmatch results ... again", assets)  # the shipped one, again
    assert read_manifest(assets / "model.safetensors")["results_command"] == "maskmatch results ... again"


def test_a_reordered_ensemble_made_over_itself_keeps_both_models(weights, tmp_path):
    """Members copied onto each other's files (the second first, in the same folder) are read before any is
    overwritten; a model given twice is refused."""
    folder = tmp_path / "pair"
    make_ensemble([weights["a"], weights["b"]], folder, {})
    make_ensemble([folder / "model-2.safetensors", folder / "model.safetensors"], folder, {})
    members, _ = read_ensemble(folder / "ensemble.json")
    assert [read_manifest(m)["weights"]["sha256"] for m in members] == [
        read_manifest(weights[k])["weights"]["sha256"] for k in ("b", "a")]
    with pytest.raises(ValueError, match="given twice"):
        make_ensemble([weights["a"], weights["a"]], tmp_path / "twice", {})


def test_export_of_an_ensemble_writes_its_first_member(weights, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    pair = make_ensemble([weights["a"], weights["b"]], tmp_path / "pair", {})
    assert main(["export", "--onnx", "--model", str(pair), "--out", str(tmp_path / "onnx")]) == 0
    assert "exporting its first member" in capsys.readouterr().out
    assert Recognizer.load(tmp_path / "onnx").members == 1
