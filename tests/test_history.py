"""The training history: entries from manifests, chained by what each run started from."""

from __future__ import annotations

import json

from maskmatch.cli import main
from maskmatch.history import add, add_ensemble, cumulative_hours, markdown


def manifest(sha: str, minutes: float, init: dict | None = None, config_init: str | None = None,
             beam_2014: float = 30.0) -> dict:
    training = {"device": "CPU (2 threads)", "minutes": minutes, "config": {"init": config_init}}
    if init:
        training["init"] = init
    return {"weights": {"sha256": sha}, "command": f"maskmatch finetune --out runs/{sha}", "training": training,
            "metrics": {"validation": {"exprate": 40.0},
                        "test": {"2014": {"greedy": {"exprate": 25.0}, "beam": {"exprate": beam_2014}}}}}


def test_continuations_add_up_their_cpu_hours(tmp_path):
    history = tmp_path / "history.json"
    add(history, manifest("a" * 64, 120.0))
    # an older run names only the shipped weights it continued; a newer one records their sha256
    add(history, manifest("b" * 64, 150.0, config_init="src/maskmatch/assets/model.safetensors"))
    entries = add(history, manifest("c" * 64, 60.0, init={"file": "x.safetensors", "sha256": "a" * 64}))
    assert cumulative_hours(entries) == [4.0, 9.0, 6.0]
    text = markdown(entries, "maskmatch history")
    assert "| 2 | bbbbbbbb | yes | #1 (aaaaaaaa) |" in text and "| 3 | cccccccc | yes | #1 (aaaaaaaa) |" in text
    assert "25.00 / 30.00 | - / - | - / - |" in text
    averaged = manifest("d" * 64, 60.0, init={"file": "x.safetensors", "sha256": "a" * 64})
    averaged["training"]["averaged_command"] = "maskmatch average runs/d/kept/1.ckpt runs/d/kept/2.ckpt"
    text = markdown(add(history, averaged), "maskmatch history")  # an average names its own command, then the run's
    assert "4. `maskmatch average runs/d/kept/1.ckpt runs/d/kept/2.ckpt, of the checkpoints of maskmatch finetune" in text


def test_a_run_that_was_not_shipped_is_recorded_but_not_continued(tmp_path):
    """A run kept out (--not-shipped) shows in the record; the next continuation of the shipped weights chains to
    the model that was shipped, not to it."""
    history = tmp_path / "history.json"
    add(history, manifest("a" * 64, 120.0))
    add(history, manifest("b" * 64, 150.0, config_init="src/maskmatch/assets/model.safetensors"), shipped=False)
    entries = add(history, manifest("c" * 64, 60.0, config_init="src/maskmatch/assets/model.safetensors"))
    assert cumulative_hours(entries) == [4.0, 9.0, 6.0]
    text = markdown(entries, "maskmatch history")
    assert "| 2 | bbbbbbbb | no | #1 (aaaaaaaa) |" in text and "| 3 | cccccccc | yes | #1 (aaaaaaaa) |" in text


def test_an_ensemble_counts_each_run_of_its_members_chains_once(tmp_path):
    """A shipped ensemble of two continuations of one model: its CPU-hours are the start's and both runs'; the
    member it adds (not shipped alone) comes before it; the next continuation of the shipped weights chains to
    its first member, which the package ships as its weights."""
    history = tmp_path / "history.json"
    add(history, manifest("a" * 64, 120.0))
    add(history, manifest("b" * 64, 60.0, init={"file": "x", "sha256": "a" * 64}), shipped=False)
    members = [manifest("b" * 64, 60.0, init={"file": "x", "sha256": "a" * 64}),
               manifest("c" * 64, 30.0, init={"file": "x", "sha256": "a" * 64})]
    record = {"command": "maskmatch ensemble b c", "metrics": {"validation": {"exprate": 45.0},
                                                                 "test": {"2014": {"beam": {"exprate": 40.0}}}}}
    add_ensemble(history, record, members)
    entries = add(history, manifest("d" * 64, 60.0, config_init="src/maskmatch/assets/model.safetensors"))
    assert [e["sha256"][0] for e in entries[:3]] == ["a", "b", "c"] and entries[3]["members"] == ["b" * 64, "c" * 64]
    assert cumulative_hours(entries) == [4.0, 6.0, 5.0, 7.0, 8.0]
    text = markdown(entries, "maskmatch history")
    assert "| 4 | " in text and "| yes | ensemble of #2 + #3 | - | - | 7.0 | 45.00 | - / 40.00 |" in text
    assert "| 5 | dddddddd | yes | #2 (bbbbbbbb) |" in text
    entries = add(history, members[1], shipped=False)  # a member added again stays before its ensemble
    assert [e["sha256"][0] for e in entries[:3]] == ["a", "b", "c"] and cumulative_hours(entries)[3] == 7.0


def test_shipping_again_replaces_the_entry(tmp_path):
    history = tmp_path / "history.json"
    add(history, manifest("a" * 64, 120.0))
    entries = add(history, manifest("a" * 64, 120.0, beam_2014=31.0))
    assert len(entries) == 1 and entries[0]["test"]["2014"]["beam"] == 31.0
    assert json.loads(history.read_text("utf-8")) == entries


def test_the_command_refuses_a_file_without_manifest(tmp_path, capsys):
    weights = tmp_path / "m.safetensors"
    weights.write_bytes(b"")
    assert main(["history", str(weights), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "m.json" in err
