"""Stage recipes, initialisation copies, what trains, and the optimizer groups."""

import pytest
import torch

from trainkit import SyntheticPacked, save_random, small_config, tiny_spec
from vita_core.errors import InputError
from vita_core.model.checkpoint import load_model, random_model, read_state_dict, save_model
from vita_core.train.setup import init_model, lr_ratio, mtp_parameter_names, param_groups, set_trainable
from vita_core.train.stages import DEFAULT_RECIPE, load_stage

L = 2  # backbone layers of the tiny preset


def test_stage_recipes_carry_the_reference_values():
    specs = {s: load_stage(None, s) for s in (1, 2, 3, 4)}
    assert [specs[s].lr for s in (1, 2, 3, 4)] == [6e-5, 1e-3, 1e-3, 5e-5]
    assert [specs[s].max_steps for s in (1, 2, 3, 4)] == [8000, 4000, 8000, 4000]
    assert [specs[s].weight_decay for s in (1, 2, 3, 4)] == [0.0, 0.0, 0.0, 0.1]
    assert [specs[s].mtp_lr_mult for s in (1, 2, 3, 4)] == [1.0, 1.0, 1.0, 10.0]
    assert [specs[s].num_mtp for s in (1, 2, 3, 4)] == [0, 1, 10, 10]
    assert [specs[s].seq_len for s in (1, 2, 3, 4)] == [8192, 8192, 8192, 2048]
    assert [(specs[s].trainable, specs[s].detach_backbone) for s in (1, 2, 3, 4)] == [
        ("all", False), ("mtp", True), ("mtp", True), ("all", False)]
    for spec in specs.values():
        assert spec.adam_betas == (0.9, 0.95) and spec.adam_eps == 1e-8 and spec.max_grad_norm == 1.0
        assert spec.warmup_ratio == 0.03 and spec.min_lr_ratio == 0.1 and spec.grad_accum == 16
        assert spec.micro_batch_size == 1 and spec.gradient_checkpointing and spec.seed == 42


def test_bad_recipes_are_named(tmp_path):
    (tmp_path / "stage2.yaml").write_text("extends: ../nowhere.yaml\n")
    with pytest.raises(InputError, match="nowhere.yaml does not exist"):
        load_stage(tmp_path, 2)
    (tmp_path / "stage2.yaml").write_text("stage: 2\nname: x\nnum_mtp: 1\ntrainable: mtp\ndetach_backbone: true\n"
                                          "lr: 1e-3\nmax_steps: 5\nlearning_rate: 3\n")
    with pytest.raises(InputError, match="unknown field.*learning_rate"):
        load_stage(tmp_path, 2)
    (tmp_path / "stage2.yaml").write_text("stage: 2\nname: x\nnum_mtp: 1\ntrainable: all\ndetach_backbone: true\n"
                                          "lr: 1e-3\nmax_steps: 5\n")
    with pytest.raises(InputError, match="detach_backbone needs trainable 'mtp'"):
        load_stage(tmp_path, 2)
    (tmp_path / "one.yaml").write_text("extends: " + str(DEFAULT_RECIPE / "stage2.yaml")
                                       + "\nlr: 2e-3\nmax_steps: 7\n")
    spec = load_stage(tmp_path / "one.yaml", 2)  # PyYAML reads 2e-3 as a string; it becomes the number
    assert (spec.lr, spec.max_steps, spec.num_mtp, spec.trainable) == (2e-3, 7, 1, "mtp")
    assert load_stage("tiny", 3) == load_stage(DEFAULT_RECIPE.parent / "tiny", 3)  # a folder of recipes/
    with pytest.raises(InputError, match="describes stage 2, not stage 3"):
        load_stage(tmp_path / "one.yaml", 3)


def test_stage2_init_copies_the_last_llm_layer(tmp_path):
    save_random(tmp_path / "s1", 0, seed=1, random_norms=True)
    before = load_model(tmp_path / "s1").state_dict()
    model = init_model(tmp_path / "s1", tiny_spec(2))
    after = model.state_dict()
    assert model.num_mtp == 1 and model.num_backbone_layers == L
    for key, value in before.items():
        assert torch.equal(after[key], value), key
    layer_keys = [k for k in before if k.startswith(f"model.layers.{L - 1}.")]
    assert len(layer_keys) == 12
    for key in layer_keys:
        assert torch.equal(after[key.replace(f"layers.{L - 1}.", f"layers.{L}.")], before[key])
    assert torch.equal(after["mtp_embed_norms.0.weight"], torch.ones(32))
    assert torch.equal(after["mtp_hidden_norms.0.weight"], torch.ones(32))
    proj = after["mtp_projs.0.weight"]
    assert proj.shape == (32, 64) and abs(float(proj.std()) - 0.02) < 0.002 and abs(float(proj.mean())) < 0.002


def test_stage3_init_copies_each_module_from_the_one_before(tmp_path):
    save_random(tmp_path / "s2", 1, seed=2, random_norms=True)
    before = load_model(tmp_path / "s2").state_dict()
    after = init_model(tmp_path / "s2", tiny_spec(3, num_mtp=4)).state_dict()
    assert set(after) - set(before) == {
        *(k.replace(f"layers.{L}.", f"layers.{L + j}.") for k in before if k.startswith(f"model.layers.{L}.")
          for j in (1, 2, 3)),
        *(f"{part}.{j}.weight" for part in ("mtp_projs", "mtp_embed_norms", "mtp_hidden_norms") for j in (1, 2, 3)),
    }
    for key in before:
        assert torch.equal(after[key], before[key])
        if key.startswith(f"model.layers.{L}."):
            for j in (1, 2, 3):
                assert torch.equal(after[key.replace(f"layers.{L}.", f"layers.{L + j}.")], before[key])
        if key.startswith("mtp_"):
            for j in (1, 2, 3):
                assert torch.equal(after[key.replace(".0.", f".{j}.")], before[key])
    with pytest.raises(Exception, match="has 1 MCTP modules but stage 1 trains 0"):
        init_model(tmp_path / "s2", tiny_spec(1))


@pytest.mark.parametrize("stage,num_mtp", [(2, 1), (3, 3)])
def test_detached_stages_train_exactly_the_mtp_parameters(tmp_path, stage, num_mtp):
    save_random(tmp_path / "prev", stage - 2, seed=3)  # stage 2 starts from N=0, stage 3 from N=1
    spec = tiny_spec(stage, num_mtp=num_mtp)
    model = init_model(tmp_path / "prev", spec)
    set_trainable(model, spec)
    mtp = mtp_parameter_names(model)
    assert {n for n, p in model.named_parameters() if p.requires_grad} == mtp
    assert len(mtp) == num_mtp * 15  # 12 tensors per decoder layer + proj + 2 norms
    assert not any(n.startswith(("model.embed_tokens", "model.norm", "lm_head")) for n in mtp)
    batch = {k: v.unsqueeze(0) for k, v in SyntheticPacked(1, 64)[0].items() if k != "seq_lens"}
    out = model(**batch, detach_backbone=spec.detach_backbone)
    out.loss.backward()
    assert out.main_loss is None and len(out.mtp_losses) == num_mtp
    for name, param in model.named_parameters():
        if name in mtp:
            assert param.grad is not None and float(param.grad.abs().sum()) > 0, name
        else:
            assert param.grad is None, name


def test_stage4_groups_carry_ten_times_the_rate_for_mtp(tmp_path):
    save_random(tmp_path / "s3", 2, seed=4)
    spec = load_stage(None, 4).with_overrides(num_mtp=2)
    model = init_model(tmp_path / "s3", spec)
    set_trainable(model, spec)
    groups = {g["name"]: g for g in param_groups(model, spec)}
    assert {n: (g["lr"], g["weight_decay"]) for n, g in groups.items()} == {
        "backbone": (5e-5, 0.1), "backbone_no_decay": (5e-5, 0.0), "mtp": (5e-4, 0.1), "mtp_no_decay": (5e-4, 0.0)}
    names = {id(p): n for n, p in model.named_parameters()}
    mtp = mtp_parameter_names(model)
    for group_name, group in groups.items():
        for p in group["params"]:
            assert (names[id(p)] in mtp) == group_name.startswith("mtp")
            assert (p.ndim >= 2) == ("no_decay" not in group_name)
    grouped = [names[id(p)] for g in groups.values() for p in g["params"]]
    assert sorted(grouped) == sorted(names.values()) and len(set(grouped)) == len(grouped)
    assert "model.layers.2.self_attn.q_proj.bias" in [names[id(p)] for p in groups["mtp_no_decay"]["params"]]
    assert "lm_head.weight" in [names[id(p)] for p in groups["backbone"]["params"]]


def test_schedule_is_deepspeed_warmup_cosine():
    spec = load_stage(None, 1)
    ratios = [lr_ratio(s, 8000, spec) for s in range(8000)]
    assert ratios[0] == 0.0 and ratios[239] == pytest.approx(1.0, abs=0.002)  # log warm-up over 240 steps
    assert ratios[120] == pytest.approx(0.8747, abs=1e-3)  # log(121) / log(240)
    assert ratios[240] == pytest.approx(1.0, abs=1e-6) and ratios[-1] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(ratios[240:], ratios[241:]))


def test_stage1_grows_qwen_vocabulary_to_the_tokenizer(tmp_path, tokenizer):
    """Qwen2.5 ships 152064 rows; the audio tokens need 168069, padded to 168072 as the reference."""
    config = {**small_config(0), "vocab_size": 152064}
    save_model(random_model(config, seed=7), tmp_path / "qwen")
    before = read_state_dict(tmp_path / "qwen")
    model = init_model(tmp_path / "qwen", tiny_spec(1), vocab_size=len(tokenizer))
    assert len(tokenizer) == 168069 and model.config.vocab_size == 168072
    assert model.model.embed_tokens.weight.shape == model.lm_head.weight.shape == (168072, 32)
    assert torch.equal(model.model.embed_tokens.weight[:152064], before["model.embed_tokens.weight"])
    assert torch.equal(model.lm_head.weight[:152064], before["lm_head.weight"])
    assert model.upstream_config["vocab_size"] == 168072


def test_audio_accuracy_counts_exactly_the_audio_targets():
    from vita_core.model.attention import block_causal_mask
    from vita_core.train.evaluate import audio_accuracy

    model = random_model(small_config(2), seed=8)
    data = SyntheticPacked(2, 64, seed=3)
    labels = torch.cat([data[i]["labels"] for i in range(2)])
    audio = labels[(labels >= 151685) & (labels < 151685 + 16384)]
    first, second = torch.bincount(audio - 151685).topk(2).indices.tolist()
    with torch.no_grad():  # every head now answers one of the two commonest codes, by a hidden sign
        model.model.norm.weight.zero_()
        model.model.norm.weight[0] = 1.0
        model.lm_head.weight.zero_()
        model.lm_head.weight[151685 + first, 0] = 1000.0
        model.lm_head.weight[151685 + second, 0] = -1000.0
    acc = audio_accuracy(model, data, audio_offset=151685, num_codes=16384)
    assert acc.packs == 2 and acc.targets == len(audio) > 0 and acc.uniform == 1 / 16384
    assert acc.majority == float(torch.bincount(audio - 151685).max()) / len(audio)
    hits = 0
    with torch.no_grad():
        for i in range(2):
            item = data[i]
            pos = item["position_ids"][None]
            h = model.backbone(model.embed(item["input_ids"][None]), pos, block_causal_mask(pos))
            pred = model.logits(h)[0].argmax(-1)
            nxt = item["labels"][1:]
            is_audio = (nxt >= 151685) & (item["position_ids"][1:] > 0)
            hits += int((pred[:-1][is_audio] == nxt[is_audio]).sum())
    assert hits > 0 and acc.main_acc == hits / len(audio)
    assert len(acc.mtp_acc) == 2 and all(0 < a < 1 for a in acc.mtp_acc)


def test_a_preset_takes_the_vocabulary_of_its_tokenizer(small_tokenizer):
    """vita-mini's case: a preset trained from scratch on another codec gets exactly the tokenizer's ids."""
    from vita_core.model.checkpoint import preset_config
    from vita_core.tokens import layout_from_tokenizer

    lay = layout_from_tokenizer(small_tokenizer)
    config = preset_config("mini", tokens=lay)
    assert (config["vocab_size"], config["bos_token_id"], config["eos_token_id"]) == (1344, 300, 302)
    assert preset_config("mini")["vocab_size"] == 168072  # no tokenizer: the released vocabulary
    model = init_model("mini", tiny_spec(1), tokens=lay)
    assert model.model.embed_tokens.weight.shape == (1344, 256) and model.num_mtp == 0
    assert model.lm_head.weight is model.model.embed_tokens.weight  # tied, as Qwen2.5's small sizes
    lay.check_config(model.config.vocab_size)


def test_mini_recipe_fits_its_data_mixture_and_preset():
    """recipes/mini trains on recipes/data/mini.yaml's packs (same seq_len in every stage) and grows to the
    mini preset's MCTP module count, keeping the reference's stage semantics."""
    import yaml

    from vita_core.data.recipe import load_recipe
    from vita_core.model.checkpoint import preset_config
    from vita_core.train.stages import RECIPES

    data = load_recipe(RECIPES / "data" / "mini.yaml")
    modules = preset_config("mini")["num_nextn_predict_layers"]
    specs = [load_stage("mini", stage) for stage in (1, 2, 3, 4)]
    assert {s.seq_len for s in specs} == {data.seq_len} == {512}
    assert [s.num_mtp for s in specs] == [0, 1, modules, modules]
    assert [s.trainable for s in specs] == ["all", "mtp", "mtp", "all"]
    assert [s.detach_backbone for s in specs] == [False, True, True, False]
    assert data.ratio == (6, 18, 12, 18)
    assert yaml.safe_load((RECIPES / "data" / "mini.yaml").read_text())["sources"]["piper-tts"]["paths"] == [
        "prepared/piper-tts"]


def test_mixed_precision_is_a_recipe_choice():
    """auto keeps the reference's rule (bf16 autocast on CUDA, fp32 on CPU); bf16 forces autocast on a CPU
    (vita-mini's recipe, for CPUs with AMX); anything else is named."""
    from vita_core.train.trainer import mixed_precision

    tiny, mini = load_stage("tiny", 1), load_stage("mini", 1)
    assert (mixed_precision(tiny, cuda=False), mixed_precision(tiny, cuda=True)) == ("no", "bf16")
    assert {load_stage("mini", s).mixed_precision for s in (1, 2, 3, 4)} == {"bf16"}
    assert mixed_precision(mini, cuda=False) == "bf16"
    with pytest.raises(InputError, match="mixed_precision must be 'auto', 'bf16' or 'no', not 'fp8'"):
        load_stage("tiny", 1).with_overrides(mixed_precision="fp8")
