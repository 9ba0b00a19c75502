"""Checkpoint format and the training forward."""

import json

import pytest
import torch
from safetensors.torch import save_file

from vita_core.errors import CheckpointError
from vita_core.model.checkpoint import load_model, preset_config, random_model, save_model

H, I, L, N, HEADS, KV, V = 32, 64, 2, 3, 4, 2, 168072


def upstream_state_dict(layers, mtp, tied=False):
    """Key names and shapes written out by hand from the reference's Qwen2MTPForCausalLM."""
    hd = H // HEADS
    g = torch.Generator().manual_seed(0)
    t = lambda *s: torch.randn(*s, generator=g) * 0.02  # noqa: E731
    sd = {"model.embed_tokens.weight": t(V, H), "model.norm.weight": torch.ones(H)}
    if not tied:
        sd["lm_head.weight"] = t(V, H)
    for i in range(layers + mtp):
        p = f"model.layers.{i}."
        sd.update({
            p + "self_attn.q_proj.weight": t(HEADS * hd, H), p + "self_attn.q_proj.bias": t(HEADS * hd),
            p + "self_attn.k_proj.weight": t(KV * hd, H), p + "self_attn.k_proj.bias": t(KV * hd),
            p + "self_attn.v_proj.weight": t(KV * hd, H), p + "self_attn.v_proj.bias": t(KV * hd),
            p + "self_attn.o_proj.weight": t(H, HEADS * hd),
            p + "mlp.gate_proj.weight": t(I, H), p + "mlp.up_proj.weight": t(I, H), p + "mlp.down_proj.weight": t(H, I),
            p + "input_layernorm.weight": torch.ones(H), p + "post_attention_layernorm.weight": torch.ones(H),
        })
    for k in range(mtp):
        sd[f"mtp_projs.{k}.weight"] = t(H, 2 * H)
        sd[f"mtp_embed_norms.{k}.weight"] = torch.ones(H)
        sd[f"mtp_hidden_norms.{k}.weight"] = torch.ones(H)
    return sd


def write_upstream(folder, mtp, tied=False, drop=None, extra=None):
    folder.mkdir(parents=True, exist_ok=True)
    config = {  # the fields of config_7B_mtp10.json, tiny sizes
        "architectures": ["Qwen2MTPForCausalLM" if mtp else "Qwen2ForCausalLM"], "attention_dropout": 0.0,
        "bos_token_id": 151643, "eos_token_id": 151645, "hidden_act": "silu", "hidden_size": H,
        "initializer_range": 0.02, "intermediate_size": I, "max_position_embeddings": 32768, "max_window_layers": L,
        "model_type": "qwen2_mtp" if mtp else "qwen2", "num_attention_heads": HEADS, "num_hidden_layers": L + mtp,
        "num_key_value_heads": KV, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0, "sliding_window": 131072,
        "tie_word_embeddings": tied, "torch_dtype": "float32", "transformers_version": "4.48.3", "use_cache": True,
        "use_sliding_window": False, "vocab_size": V,
    }
    if mtp:
        config["num_nextn_predict_layers"] = mtp
    (folder / "config.json").write_text(json.dumps(config))
    sd = upstream_state_dict(L, mtp, tied)
    if drop:
        sd.pop(drop)
    sd.update(extra or {})
    names = sorted(sd)
    half = len(names) // 2
    shards = {"model-00001-of-00002.safetensors": names[:half], "model-00002-of-00002.safetensors": names[half:]}
    for fname, keys in shards.items():
        save_file({k: sd[k] for k in keys}, str(folder / fname), metadata={"format": "pt"})
    index = {"metadata": {}, "weight_map": {k: f for f, ks in shards.items() for k in ks}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    return sd


@pytest.mark.parametrize("mtp,tied", [(N, False), (10, False), (0, False), (N, True)])
def test_upstream_layout_loads_exactly(tmp_path, mtp, tied):
    sd = write_upstream(tmp_path / "ck", mtp, tied)
    model = load_model(tmp_path / "ck")
    assert model.num_mtp == mtp and model.num_backbone_layers == L
    loaded = model.state_dict()
    for key, value in sd.items():
        assert torch.equal(loaded[key], value), key
    assert (model.lm_head.weight is model.model.embed_tokens.weight) == tied


def test_missing_unexpected_and_misshaped_weights_are_named(tmp_path):
    write_upstream(tmp_path / "a", N, drop="mtp_projs.1.weight")
    with pytest.raises(CheckpointError, match=r"missing 1 \(e.g. mtp_projs.1.weight\)"):
        load_model(tmp_path / "a")
    write_upstream(tmp_path / "b", N, extra={"mtp_projs.3.weight": torch.zeros(H, 2 * H)})
    with pytest.raises(CheckpointError, match=r"unexpected 1 \(e.g. mtp_projs.3.weight\)"):
        load_model(tmp_path / "b")
    write_upstream(tmp_path / "c", N, extra={"mtp_projs.0.weight": torch.zeros(H, H)})
    with pytest.raises(CheckpointError, match=r"mtp_projs.0.weight has shape \(32, 32\)"):
        load_model(tmp_path / "c")
    with pytest.raises(CheckpointError, match="no config.json"):
        load_model(tmp_path)
    (tmp_path / "c" / "model-00002-of-00002.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_model(tmp_path / "c")


def test_save_load_round_trip_gives_identical_logits(tmp_path):
    model = random_model(preset_config("tiny", num_mtp=2), seed=1)
    save_model(model, tmp_path / "m", max_shard_size="6MB")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["num_hidden_layers"] == 4 and config["num_nextn_predict_layers"] == 2
    assert config["model_type"] == "qwen2_mtp" and config["vocab_size"] == 168072 and "rope_theta" in config
    assert (tmp_path / "m" / "model.safetensors.index.json").is_file()
    again = load_model(tmp_path / "m")
    ids = torch.randint(0, 1000, (1, 9))
    pos = torch.arange(9).unsqueeze(0)
    with torch.no_grad():
        for m in (model, again):
            h = m.backbone(m.embed(ids), pos, None)
            m.out = (m.logits(h), m.logits(m.mtp(1, m.embed(ids), h, pos, None)))
    assert torch.equal(model.out[0], again.out[0]) and torch.equal(model.out[1], again.out[1])


def sample(n, seed):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 5000, (n,), generator=g)
    labels = ids.clone()
    labels[: n // 3] = -100  # the prompt part is not supervised
    return ids, labels


def test_packed_loss_equals_samples_one_by_one():
    model = random_model(preset_config("tiny", num_mtp=3), seed=2, dtype=torch.float64)
    samples = [sample(n, s) for s, n in enumerate([9, 3, 14, 6])]
    ids = torch.cat([s[0] for s in samples]).unsqueeze(0)
    labels = torch.cat([s[1] for s in samples]).unsqueeze(0)
    pos = torch.cat([torch.arange(len(s[0])) for s in samples]).unsqueeze(0)
    packed = model(ids, pos, labels)
    singles = [model(s[0].unsqueeze(0), torch.arange(len(s[0])).unsqueeze(0), s[1].unsqueeze(0)) for s in samples]
    main = sum(o.main_loss * o.main_count for o in singles) / sum(o.main_count for o in singles)
    assert packed.main_count == sum(o.main_count for o in singles)
    assert torch.allclose(packed.main_loss, main, atol=1e-10)
    for k in range(3):
        count = sum(o.mtp_counts[k] for o in singles)
        assert packed.mtp_counts[k] == count > 0
        expected = sum(o.mtp_losses[k] * o.mtp_counts[k] for o in singles) / count
        assert torch.allclose(packed.mtp_losses[k], expected, atol=1e-10)
    assert torch.allclose(packed.loss, packed.main_loss + torch.stack(packed.mtp_losses).mean())
    # a batch of two rows is the same as one row holding both
    two = model(ids[:, :12].reshape(2, 6), torch.cat([torch.arange(6)] * 2).view(2, 6), labels[:, :12].reshape(2, 6))
    one = model(ids[:, :12], torch.cat([torch.arange(6)] * 2).view(1, 12), labels[:, :12])
    assert torch.allclose(two.loss, one.loss)


def test_mtp_loss_matches_cache_free_chain():
    """Module k's loss uses x_p and h_k(p-1) for p >= k+1: recompute it directly for one sample."""
    model = random_model(preset_config("tiny", num_mtp=2), seed=3, dtype=torch.float64)
    ids, labels = sample(10, 5)
    out = model(ids.unsqueeze(0), torch.arange(10).unsqueeze(0), labels.unsqueeze(0))
    emb = model.embed(ids.unsqueeze(0))
    h = model.backbone(emb, torch.arange(10).unsqueeze(0), None)
    for k in range(2):
        h = model.mtp(k, emb[:, k + 1 :], h[:, :-1], torch.arange(k + 1, 10).unsqueeze(0), None)
        logits = model.logits(h)[0, :-1]
        target = labels[k + 2 :]
        valid = target != -100
        ce = torch.nn.functional.cross_entropy(logits[valid], target[valid])
        assert torch.allclose(out.mtp_losses[k], ce, atol=1e-10)


def test_detached_backbone_gets_no_gradient_and_no_main_loss():
    model = random_model(preset_config("tiny", num_mtp=2), seed=4).train()
    ids, labels = sample(12, 1)
    out = model(ids.unsqueeze(0), torch.arange(12).unsqueeze(0), labels.unsqueeze(0), detach_backbone=True)
    assert out.main_loss is None
    out.loss.backward()
    for name, p in model.named_parameters():
        is_mtp = name.startswith("mtp_") or any(name.startswith(f"model.layers.{L + k}.") for k in range(2))
        if is_mtp:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
        elif name not in ("lm_head.weight", "model.norm.weight"):
            assert p.grad is None or p.grad.abs().sum() == 0, name
