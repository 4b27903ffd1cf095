"""`maskmatch results` on the bundled examples (standing in for the three test splits) with a tiny model."""

import json
from importlib import resources
from pathlib import Path

import pytest
import torch

from maskmatch.cli import main
from maskmatch.model import HMERModel, ModelConfig
from maskmatch.recognizer import Recognizer
from maskmatch.results import PUBLISHED, ship
from maskmatch.weights import save_weights

EXAMPLES = Path(str(resources.files("maskmatch").joinpath("assets", "examples")))


@pytest.fixture
def run(tmp_path) -> Path:
    """A finetune-like run folder: the model and a log.jsonl of two training records and a validation."""
    torch.manual_seed(0)
    folder = tmp_path / "run"
    save_weights(folder / "model.safetensors", HMERModel(ModelConfig.tiny(max_len=6)),
                 {"metrics": {"validation": {"exprate": 1.5}}, "training": {"device": "CPU (1 threads)"}})
    records = [{"step": 10, "loss": 3.0, "images_per_s": 8.0, "elapsed_s": 60.0},
               {"step": 20, "loss": 2.0, "images_per_s": 12.0, "elapsed_s": 120.0},
               {"step": 20, "val_exprate": 1.5, "elapsed_s": 130.0}]
    (folder / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records), "utf-8")
    return folder


def test_training_rate_is_images_over_wall_time_not_the_median_window():
    """Two 60 s windows at 8 and 12 images/s, a 100 s validation, a 20 s window at 40: 2,000 images in 140 s of
    training, 14.3 images/s (the median window reads 12)."""
    from maskmatch.results import wall_rate

    records = [{"event": "start", "step": 0}, {"step": 10, "images_per_s": 8.0, "elapsed_s": 60.0},
               {"event": "checkpoint", "step": 20}, {"step": 20, "images_per_s": 12.0, "elapsed_s": 120.0},
               {"step": 20, "val_exprate": 1.5, "elapsed_s": 220.0},
               {"step": 30, "images_per_s": 40.0, "elapsed_s": 240.0}]
    assert wall_rate(records) == pytest.approx(2000 / 140)
    assert wall_rate([{"step": 0, "val_exprate": 0.0, "elapsed_s": 5.0}]) is None


def test_examples_are_an_offline_split_the_recognizer_reads():
    names = [line.split("\t")[0] for line in (EXAMPLES / "caption.txt").read_text("utf-8").splitlines()]
    assert len(names) >= 4 and all((EXAMPLES / "img" / f"{n}.png").is_file() for n in names)


def test_results_writes_tables_scores_and_training(run, tmp_path, capsys):
    data = tmp_path / "crohme"
    data.mkdir()
    for split in ("2014", "2016", "2019"):
        (data / split).symlink_to(EXAMPLES)
    out, readme = tmp_path / "results", tmp_path / "README.md"
    readme.write_text("# Project\n<!-- results:start -->\nold table\n<!-- results:end -->\nmore\n", "utf-8")
    code = main(["results", "--model", str(run / "model.safetensors"), "--data", str(data), "--out", str(out),
                 "--beam", "2", "--readme", str(readme)])
    assert code == 0
    scores = json.loads((out / "scores.json").read_text("utf-8"))
    n = len((EXAMPLES / "caption.txt").read_text("utf-8").splitlines())
    assert set(scores) == {"2014", "2016", "2019"}
    assert all(s[how]["n"] == n for s in scores.values() for how in ("greedy", "beam"))
    assert scores["2016"]["beam"]["decoding"] == "beam 2"
    training = json.loads((out / "training.json").read_text("utf-8"))
    assert training == {"device": "CPU (1 threads)",
                        "stages": {"finetune": {"minutes": 2.2, "steps": 20, "images_per_s": 10.0}}}
    table = (out / "README.md").read_text("utf-8")
    assert "maskmatch results --model" in table and "| beam 2 |" in table and "| greedy |" in table
    assert all(name in table for name in PUBLISHED)
    text = readme.read_text("utf-8")
    assert "old table" not in text and "| beam 2 |" in text and text.endswith("<!-- results:end -->\nmore\n")


def test_results_refuses_missing_splits_and_runs_without_logs(run, tmp_path, capsys):
    assert main(["results", "--model", str(run / "model.safetensors"), "--data", str(tmp_path)]) == 2
    assert "2014: not an offline split" in capsys.readouterr().err
    data = tmp_path / "crohme"
    data.mkdir()
    (data / "2014").symlink_to(EXAMPLES)
    (run / "log.jsonl").unlink()
    assert main(["results", "--model", str(run / "model.safetensors"), "--data", str(data), "--splits", "2014"]) == 2
    assert "no training log" in capsys.readouterr().err


def test_shipped_copy_loads_and_carries_the_test_scores(run, tmp_path):
    scores = {"2014": {"greedy": {"n": 6, "exprate": 50.0, "le1": 60.0, "le2": 70.0, "decoding": "greedy",
                                  "seconds": 1.0}}}
    target = ship(run / "model.safetensors", scores, "maskmatch results ...", tmp_path / "assets")
    rec = Recognizer.load(target)
    assert rec.manifest["metrics"]["test"]["2014"]["greedy"]["exprate"] == 50.0
    assert rec.manifest["metrics"]["validation"]["exprate"] == 1.5
    assert rec.manifest["results_command"] == "maskmatch results ..."


def test_shipped_weights_load_and_carry_their_test_scores():
    rec = Recognizer.load()  # the package's weights: what `make demo` and every command use by default
    test = rec.manifest["metrics"]["test"]
    assert set(test) == {"2014", "2016", "2019"} and all(set(s) == {"greedy", "beam"} for s in test.values())
    assert rec.manifest["results_command"].startswith("maskmatch results --model")
    assert {"device", "minutes"} <= set(rec.manifest["training"]) and rec.manifest["command"]
    first = next(p for p in sorted((EXAMPLES / "img").iterdir()))
    assert rec.recognize(first, beam_size=1).tokens  # decodes a bundled example to something
