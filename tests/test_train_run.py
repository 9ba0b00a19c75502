"""Whole training runs on the tiny recipe: resume equals uninterrupted, stages chain, loss falls."""

import json

import pytest
import torch
from typer.testing import CliRunner

from trainkit import SyntheticPacked, save_random, tiny_spec
from vita_core.model.checkpoint import load_model, read_state_dict
from vita_core.tokens import layout_from_tokenizer, load_tokenizer
from vita_core.train.setup import mtp_parameter_names
from vita_core.train.trainer import train


def rows(folder):
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


class Kill(Exception):
    pass


def test_killed_and_resumed_run_is_bit_identical(tmp_path):
    save_random(tmp_path / "s3", 2, seed=5)
    data = SyntheticPacked(4, 64, seed=1)  # 2 steps per epoch: the resumed run crosses an epoch
    spec = tiny_spec(4, num_mtp=2, grad_accum=2, max_steps=3)
    full = train(spec, tmp_path / "s3", data, tmp_path / "full")

    def kill_at_2(kind, payload):
        if kind == "step" and payload.step == 2:
            raise Kill  # after step 2's update, before its checkpoint

    with pytest.raises(Kill):
        train(spec, tmp_path / "s3", data, tmp_path / "cut", save_every=1, progress=kill_at_2)
    assert sorted(p.name for p in (tmp_path / "cut").glob("checkpoint-*")) == ["checkpoint-0000001"]
    with pytest.raises(Exception, match="pass --resume"):
        train(spec, tmp_path / "s3", data, tmp_path / "cut")
    resumed = train(spec, tmp_path / "s3", data, tmp_path / "cut", save_every=1, resume=True)
    assert [m.step for m in resumed.history] == [2, 3]
    a, b = read_state_dict(full.model_dir), read_state_dict(resumed.model_dir)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert rows(tmp_path / "full") == [{**r, "grad_norm": r["grad_norm"]} for r in rows(tmp_path / "cut")]
    assert [r["step"] for r in rows(tmp_path / "cut")] == [1, 2, 3]
    with pytest.raises(Exception, match="different recipe"):
        train(spec.with_overrides(lr=1e-4), tmp_path / "s3", data, tmp_path / "cut", resume=True)


def test_four_stages_chain_and_the_loss_falls(tmp_path, tokenizer_dir):
    save_random(tmp_path / "base", 0, seed=6, tokenizer_dir=tokenizer_dir)
    data = SyntheticPacked(8, 64, seed=2)
    init = tmp_path / "base"
    for stage, steps in ((1, 12), (2, 1), (3, 1), (4, 1)):
        spec = tiny_spec(stage, max_steps=steps)
        result = train(spec, init, data, tmp_path / f"stage{stage}")
        model = load_model(result.model_dir)  # exact keys, or CheckpointError
        assert model.num_mtp == spec.num_mtp and model.num_backbone_layers == 2
        for f in tokenizer_dir.iterdir():  # the tokenizer travels with the weights
            assert (result.model_dir / f.name).read_bytes() == f.read_bytes()
        if stage > 1:  # (tokens.py reads <|endoftext|> as missing under a plain-qwen2 config.json)
            assert layout_from_tokenizer(load_tokenizer(result.model_dir)).audio_offset == 151685
        config = json.loads((result.model_dir / "config.json").read_text())
        assert config["model_type"] == ("qwen2" if stage == 1 else "qwen2_mtp")
        if stage in (2, 3):  # only the MCTP parameters moved
            before, after = read_state_dict(init), read_state_dict(result.model_dir)
            mtp = mtp_parameter_names(model)
            assert len(mtp - set(before)) == (15 if stage == 2 else 9 * 15)  # the new modules
            for key in before:
                assert torch.equal(before[key], after[key]) == (key not in mtp), key
        if stage == 1:
            losses = [m.main_loss for m in result.history]
            assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.4, losses
        init = result.model_dir
    history = result.history[-1]
    assert len(history.mtp_loss) == 10 and all(0 <= a <= 1 for a in history.mtp_acc)


def test_cli_reports_bad_flags_in_one_line(tmp_path):
    from vita_cli.main import app

    result = CliRunner().invoke(app, ["train", "--stage", "2", "--init", "nowhere", "--data", str(tmp_path),
                                      "--output-dir", str(tmp_path / "out")])
    assert result.exit_code == 1
    assert "--init nowhere is neither a checkpoint folder nor a preset" in result.output
