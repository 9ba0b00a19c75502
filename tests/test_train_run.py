"""Whole training runs on the tiny recipe: resume equals uninterrupted, stages chain, loss falls."""

import importlib.util
import os
import subprocess
import sys
import json
import re
import shutil

import pytest
import torch
from typer.testing import CliRunner

from datakit import make_tiny_prepared
from trainkit import SyntheticPacked, save_random, tiny_spec
from vita_cli.main import app
from vita_core.data.pack import pack
from vita_core.data.recipe import load_recipe
from vita_core.errors import DiskFullError, InputError
from vita_core.model.checkpoint import load_model, read_state_dict
from vita_core.tokens import layout_from_tokenizer, load_tokenizer
from vita_core.train.setup import lr_ratio, mtp_parameter_names
from vita_core.train.stages import RECIPES
from vita_core.train.trainer import train


def rows(folder):
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


class Kill(Exception):
    pass


def test_killed_and_resumed_run_is_bit_identical(tmp_path, tokenizer_dir):
    save_random(tmp_path / "s3", 2, seed=5, tokenizer_dir=tokenizer_dir)
    data = SyntheticPacked(4, 64, seed=1)  # 2 steps per epoch: the resumed run crosses an epoch
    spec = tiny_spec(4, num_mtp=2, grad_accum=2, max_steps=3)
    full = train(spec, tmp_path / "s3", data, tmp_path / "full")

    def kill_at_2(kind, payload):
        if kind == "step" and payload.step == 2:
            raise Kill  # after step 2's update, before its checkpoint

    with pytest.raises(Kill):
        train(spec, tmp_path / "s3", data, tmp_path / "cut", save_every=1, progress=kill_at_2)
    assert sorted(p.name for p in (tmp_path / "cut").glob("checkpoint-*")) == ["checkpoint-0000001"]
    state = torch.load(tmp_path / "cut" / "checkpoint-0000001" / "train_state" / "optimizer.bin", weights_only=False)
    groups = {g["name"]: (g["initial_lr"], g["lr"], g["weight_decay"]) for g in state["param_groups"]}
    now = spec.lr * lr_ratio(1, 3, spec)  # the stage-4 groups, one step into the schedule
    expected = {"backbone": (1e-3, now, 0.1), "backbone_no_decay": (1e-3, now, 0.0),
                "mtp": (1e-2, 10 * now, 0.1), "mtp_no_decay": (1e-2, 10 * now, 0.0)}
    assert groups.keys() == expected.keys()
    for name, values in expected.items():
        assert groups[name] == pytest.approx(values, rel=1e-12), name
    with pytest.raises(Exception, match="pass --resume"):
        train(spec, tmp_path / "s3", data, tmp_path / "cut")
    resumed = train(spec, tmp_path / "s3", data, tmp_path / "cut", save_every=1, resume=True)
    assert [m.step for m in resumed.history] == [2, 3]
    a, b = read_state_dict(full.model_dir), read_state_dict(resumed.model_dir)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert rows(tmp_path / "full") == rows(tmp_path / "cut")  # the killed step 2 row was replaced
    assert [r["step"] for r in rows(tmp_path / "cut")] == [1, 2, 3]
    with pytest.raises(Exception, match="different recipe"):
        train(spec.with_overrides(lr=1e-4), tmp_path / "s3", data, tmp_path / "cut", resume=True)


@pytest.fixture(scope="module")
def packed(tmp_path_factory, tokenizer):
    """The tiny corpus through the real `prepare` and `pack` (recipes/data/tiny.yaml, 256 tokens)."""
    root = make_tiny_prepared(tmp_path_factory.mktemp("tiny"), tokenizer)
    pack(load_recipe(RECIPES / "data" / "tiny.yaml", root), root / "packed")
    return root / "packed"


def test_four_stages_chain_and_the_loss_falls(tmp_path, tokenizer_dir, packed):
    """recipes/tiny end to end through `vita train`, shortened: every checkpoint loads in the next."""
    save_random(tmp_path / "base", 0, seed=6, tokenizer_dir=tokenizer_dir)
    init = tmp_path / "base"
    for stage, steps in ((1, 8), (2, 1), (3, 1), (4, 1)):
        out = tmp_path / f"stage{stage}"
        result = CliRunner().invoke(app, [
            "train", "--stage", str(stage), "--recipe", str(RECIPES / "tiny"), "--init", str(init),
            "--data", str(packed), "--output-dir", str(out), "--max-steps", str(steps), "--eval-packs", "1"])
        assert result.exit_code == 0, result.output
        model = load_model(out / "model")  # exact keys, or CheckpointError
        assert model.num_mtp == [0, 1, 10, 10][stage - 1] and model.num_backbone_layers == 2
        for f in tokenizer_dir.iterdir():  # the tokenizer travels with the weights
            assert (out / "model" / f.name).read_bytes() == f.read_bytes()
        if stage == 2:  # counts in words: "1 MCTP module", not "1 MCTP modules"
            assert "1 MCTP module, " in result.output and re.search(r"1 process[,\s]", result.output)
        if stage > 1:  # (tokens.py reads <|endoftext|> as missing under a plain-qwen2 config.json)
            assert layout_from_tokenizer(load_tokenizer(out / "model")).audio_offset == 151685
            assert f"MCTP {model.num_mtp - 1}" in result.output and "audio targets" in result.output
        config = json.loads((out / "model" / "config.json").read_text())
        assert config["model_type"] == ("qwen2" if stage == 1 else "qwen2_mtp")
        if stage in (2, 3):  # only the MCTP parameters moved
            before, after = read_state_dict(init), read_state_dict(out / "model")
            mtp = mtp_parameter_names(model)
            assert len(mtp - set(before)) == (15 if stage == 2 else 9 * 15)  # the new modules
            for key in before:
                assert torch.equal(before[key], after[key]) == (key not in mtp), key
        if stage == 1:
            losses = [r["main_loss"] for r in rows(out)]
            assert len(losses) == 8 and sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.5, losses
        init = out / "model"
    last = rows(tmp_path / "stage4")[-1]
    assert len(last["mtp_loss"]) == 10 and all(0 <= a <= 1 for a in last["mtp_acc"])


def test_eval_data_scores_each_checkpoint_on_held_out_audio(tmp_path, tokenizer_dir, packed):
    """--eval-data: an 'eval' row at each save and at the end; the last is audio_accuracy of the saved model."""
    from vita_core.train.evaluate import audio_accuracy
    from vita_core.data.packed import PackedDataset

    save_random(tmp_path / "base", 0, seed=6, tokenizer_dir=tokenizer_dir)
    out = tmp_path / "s2"
    result = CliRunner().invoke(app, [
        "train", "--stage", "2", "--recipe", str(RECIPES / "tiny"), "--init", str(tmp_path / "base"),
        "--data", str(packed), "--eval-data", str(packed), "--output-dir", str(out), "--max-steps", "2",
        "--save-every", "1", "--eval-packs", "0"])
    assert result.exit_code == 0, result.output
    evals = [r for r in rows(out) if "eval" in r]
    assert [r["step"] for r in evals] == [1, 2] and len([r for r in rows(out) if "eval" not in r]) == 2
    assert "held-out at step 2 (" in result.output and "MCTP 0:" in result.output
    layout = layout_from_tokenizer(load_tokenizer(out / "model"))
    data = PackedDataset(packed)
    again = audio_accuracy(load_model(out / "model"), data, layout.audio_offset, layout.num_codes, len(data))
    last = evals[-1]["eval"]
    assert last["targets"] == again.targets > 0 and last["main_acc"] == again.main_acc
    assert last["main_loss"] == pytest.approx(again.main_loss, rel=1e-5) and len(last["mtp_loss"]) == 1
    assert last["mtp_loss"][0] == pytest.approx(again.mtp_loss[0], rel=1e-5) and last["mtp_acc"] == again.mtp_acc
    assert evals[0]["eval"]["mtp_loss"] != last["mtp_loss"]  # the module trained between the two


def test_cli_reports_bad_flags_in_one_line(tmp_path, packed):
    result = CliRunner().invoke(app, ["train", "--stage", "2", "--recipe", str(RECIPES / "tiny"), "--init", "nowhere",
                                      "--data", str(packed), "--output-dir", str(tmp_path / "out")])
    assert result.exit_code == 1
    assert result.output == "error: --init nowhere is neither a checkpoint folder nor a preset (tiny, mini, 0.5b, 7b, 72b)\n"
    result = CliRunner().invoke(app, ["train", "--stage", "1", "--init", "tiny", "--data", str(tmp_path),
                                      "--output-dir", str(tmp_path / "out")])
    assert result.exit_code == 1 and "has no manifest.json" in result.output


def test_a_run_whose_model_would_have_no_tokenizer_is_refused_before_training(tmp_path, packed):
    base = ["train", "--stage", "1", "--recipe", str(RECIPES / "tiny"), "--data", str(packed), "--max-steps", "1"]
    result = CliRunner().invoke(app, [*base, "--init", "tiny", "--output-dir", str(tmp_path / "out")])
    assert result.exit_code == 1
    assert result.output == ("error: --init tiny is a size preset (random weights, no tokenizer); pass --tokenizer "
                             "FOLDER, the --model folder the data was prepared with, so the trained model can be "
                             "loaded\n")
    assert not (tmp_path / "out").exists()
    save_random(tmp_path / "bare", 0, seed=1)
    result = CliRunner().invoke(app, [*base, "--init", str(tmp_path / "bare"), "--output-dir", str(tmp_path / "out")])
    assert result.exit_code == 1 and "is a folder without tokenizer files; pass --tokenizer" in result.output
    result = CliRunner().invoke(app, [*base, "--init", "tiny", "--tokenizer", str(tmp_path / "bare"),
                                      "--output-dir", str(tmp_path / "out")])
    assert result.exit_code == 1 and "holds no tokenizer.json or vocab.json" in result.output
    result = CliRunner().invoke(app, [*base, "--init", "tiny", "--tokenizer", str(tmp_path / "nowhere"),
                                      "--output-dir", str(tmp_path / "out")])
    assert result.exit_code == 1 and "--tokenizer" in result.output and "is not a folder" in result.output
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(importlib.util.find_spec("deepspeed") is not None, reason="DeepSpeed is installed")
def test_deepspeed_config_without_deepspeed_says_how_to_get_it(tmp_path):
    result = CliRunner().invoke(app, ["train", "--stage", "1", "--init", "tiny", "--data", str(tmp_path),
                                      "--output-dir", str(tmp_path / "out"), "--distributed",
                                      str(RECIPES / "distributed" / "zero2.json")])
    assert result.exit_code == 1 and "needs DeepSpeed: pip install deepspeed" in result.output


def test_data_packed_to_another_length_is_refused(tmp_path, packed):
    result = CliRunner().invoke(app, ["train", "--stage", "1", "--init", "tiny", "--data", str(packed),
                                      "--output-dir", str(tmp_path / "out"), "--max-steps", "1"])
    assert result.exit_code == 1
    assert "packed to 256 tokens but the stage recipe says seq_len 8192" in result.output
    assert "vita pack --seq-len 8192" in result.output


def test_two_processes_match_one_for_the_same_global_batch(tmp_path, tokenizer_dir, packed):
    """torchrun, two gloo processes x accumulation 1 against one process x accumulation 2."""
    save_random(tmp_path / "base", 0, seed=9, tokenizer_dir=tokenizer_dir)
    flags = ["train", "--stage", "1", "--recipe", str(RECIPES / "tiny"), "--init", str(tmp_path / "base"),
             "--data", str(packed), "--max-steps", "3"]
    one = CliRunner().invoke(app, [*flags, "--grad-accum", "2", "--output-dir", str(tmp_path / "one")])
    assert one.exit_code == 0, one.output
    env = {**os.environ, "PYTHONPATH": str(RECIPES.parent), "OMP_NUM_THREADS": "1"}
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "vita_cli",
                          *flags, "--grad-accum", "1", "--output-dir", str(tmp_path / "two")],
                         env=env, capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-2000:]
    assert "2 processes, global batch 2" in " ".join(two.stdout.split())
    a, b = rows(tmp_path / "one"), rows(tmp_path / "two")
    assert [r["step"] for r in a] == [r["step"] for r in b] == [1, 2, 3]
    for ra, rb in zip(a, b):
        assert ra["tokens"] == rb["tokens"] and ra["loss"] == pytest.approx(rb["loss"], rel=1e-5)
    wa, wb = read_state_dict(tmp_path / "one" / "model"), read_state_dict(tmp_path / "two" / "model")
    assert max(float((wa[k] - wb[k]).abs().max()) for k in wa) < 1e-5


def _snapshot(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_finished_run_is_not_replaced_without_overwrite(tmp_path, tokenizer_dir):
    save_random(tmp_path / "init", 1, seed=5, tokenizer_dir=tokenizer_dir)
    data, spec = SyntheticPacked(4, 64, seed=1), tiny_spec(2, max_steps=1)
    train(spec, tmp_path / "init", data, tmp_path / "out")
    before = _snapshot(tmp_path / "out")
    assert {"metrics.jsonl", "model/config.json", "model/model.safetensors", "model/tokenizer.json"} <= set(before)
    with pytest.raises(InputError) as err:
        train(spec, tmp_path / "init", data, tmp_path / "out")
    assert str(err.value) == (f"{tmp_path / 'out'} already holds a run (model/, metrics.jsonl); pass --overwrite to "
                              "replace it, or choose another --output-dir")
    with pytest.raises(InputError, match="it has no checkpoint to resume from; pass --overwrite"):
        train(spec, tmp_path / "init", data, tmp_path / "out", resume=True)
    assert _snapshot(tmp_path / "out") == before
    again = train(spec.with_overrides(lr=1e-4), tmp_path / "init", data, tmp_path / "out", overwrite=True)
    assert [m.step for m in again.history] == [1] and len(rows(tmp_path / "out")) == 1
    assert _snapshot(tmp_path / "out")["model/model.safetensors"] != before["model/model.safetensors"]


def test_a_save_killed_with_sigkill_is_removed_and_resume_names_its_checkpoint(tmp_path, packed, tokenizer_dir):
    save_random(tmp_path / "init", 0, seed=6, tokenizer_dir=tokenizer_dir)
    out = tmp_path / "out"
    args = ["train", "--stage", "1", "--recipe", str(RECIPES / "tiny"), "--init", str(tmp_path / "init"),
            "--data", str(packed), "--output-dir", str(out), "--max-steps", "3", "--save-every", "1"]
    result = CliRunner().invoke(app, [*args, "--resume"])
    assert result.exit_code == 0, result.output
    assert f"--resume: no checkpoint in {out}, starting at step 0" in result.output
    # What `kill -9` during the step-3 save leaves: its staging folders, and no model/ yet.
    shutil.rmtree(out / "model")
    (out / ".checkpoint-0000003.partial" / "train_state").mkdir(parents=True)
    (out / "..checkpoint-0000003.partial.partial-x1y2" / "model.safetensors").parent.mkdir()
    (out / "..checkpoint-0000003.partial.partial-x1y2" / "model.safetensors").write_bytes(b"\0" * 1000)
    result = CliRunner().invoke(app, [*args, "--resume"])
    assert result.exit_code == 0, result.output
    assert f"removed {out / '.checkpoint-0000003.partial'}, left by an interrupted save" in result.output
    assert f"resuming from {out / 'checkpoint-0000002'} (step 2)" in result.output
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint-0000001", "checkpoint-0000002", "metrics.jsonl", "model"]
    assert [r["step"] for r in rows(out)] == [1, 2, 3]


def test_full_disk_during_training_is_one_error_and_leaves_no_partial(tmp_path, full_disk, monkeypatch, tokenizer_dir):
    import safetensors.torch
    from safetensors import SafetensorError

    save_random(tmp_path / "init", 1, seed=5, tokenizer_dir=tokenizer_dir)
    data, spec = SyntheticPacked(4, 64, seed=1), tiny_spec(2, max_steps=2)
    out = full_disk.folder / "run"
    with pytest.raises(DiskFullError) as err:  # the first metrics row does not fit
        train(spec, tmp_path / "init", data, out)
    assert str(err.value) == f"cannot write {out / 'metrics.jsonl'}: no space left on device; free some space or write elsewhere"
    full_disk.left = 10**9

    def full(*args, **kwargs):  # what safetensors raises on ENOSPC (measured on a full tmpfs)
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(safetensors.torch, "save_file", full)
    with pytest.raises(DiskFullError, match=f"cannot write {out / 'checkpoint-0000001'}: no space left on device"):
        train(spec, tmp_path / "init", data, out, save_every=1, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["metrics.jsonl"]


def test_checkpoints_generate_with_the_layout_they_were_trained_on(tmp_path, tokenizer_dir, packed):
    """generation_config.json's mtp_inference_mode becomes the packed data's ratio (as upstream's training
    writes its text-audio ratio there); the init's other generation fields are kept."""
    from vita_core.speech import checkpoint_defaults, read_generation_config

    root = packed.parent
    pack(load_recipe(RECIPES / "data" / "tiny.yaml", root), root / "packed-1-6-3-8", ratio=[1, 6, 3, 8])
    save_random(tmp_path / "init", 1, seed=3, tokenizer_dir=tokenizer_dir)
    (tmp_path / "init" / "generation_config.json").write_text(json.dumps(
        {"do_sample": True, "temperature": 0.7, "mtp_inference_mode": [1, 10, 4, 10]}))
    args = ["train", "--stage", "2", "--recipe", str(RECIPES / "tiny"), "--init", str(tmp_path / "init"),
            "--data", str(root / "packed-1-6-3-8"), "--output-dir", str(tmp_path / "out"), "--max-steps", "2",
            "--save-every", "1", "--eval-packs", "1"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    for folder in (tmp_path / "out" / "model", tmp_path / "out" / "checkpoint-0000001"):
        gen = read_generation_config(folder)
        assert gen == {"do_sample": True, "temperature": 0.7, "mtp_inference_mode": [1, 6, 3, 8]}
        assert checkpoint_defaults(gen, 1)[:2] == ([1, 6, 3, 8], [1, 6, 3, 8])


def test_seed_flag_sets_the_initial_weights_and_data_order(tmp_path, tokenizer_dir, packed):
    """--seed replaces the recipe's seed: the same seed gives the same run, another one another run."""
    flags = ["train", "--stage", "1", "--recipe", str(RECIPES / "tiny"), "--init", "tiny", "--tokenizer",
             str(tokenizer_dir), "--data", str(packed), "--max-steps", "1"]
    for name, seed in (("a", "3"), ("b", "3"), ("c", "4")):
        result = CliRunner().invoke(app, [*flags, "--seed", seed, "--output-dir", str(tmp_path / name)])
        assert result.exit_code == 0, result.output
    a, b, c = (read_state_dict(tmp_path / name / "model") for name in "abc")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)
