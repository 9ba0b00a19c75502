"""The engine against Hugging Face generate and against a cache-free reference, per mode."""

import pytest
import torch
from transformers import Qwen2ForCausalLM

from reference_engine import reference_generate
from vita_core.generate import Engine, Sampling, generate_ids
from vita_core.model.checkpoint import hf_config, load_model
from vita_core.schedule import BACKBONE, BOOST_RATIO, BALANCE_RATIO, Layout, get_mode
from vita_core.tokens import layout_from_tokenizer

MODES = ["vanilla", "balance", "boost", "turbo", [2, 3, 1, 6]]


@pytest.fixture(scope="module")
def model(tiny_checkpoint):
    return load_model(tiny_checkpoint)


@pytest.fixture(scope="module")
def lay(tokenizer):
    return layout_from_tokenizer(tokenizer)


@pytest.fixture(scope="module")
def engine(model, lay):
    return Engine(model, lay)


PROMPT = [151644, 872, 198, 40, 1079, 264, 1273, 13, 151645, 198, 151644, 77091, 198]


def test_vanilla_greedy_equals_hf_generate(model, engine):
    cfg = hf_config({**model.upstream_config, "num_hidden_layers": model.num_backbone_layers,
                     "num_nextn_predict_layers": 0}, "sdpa")
    hf = Qwen2ForCausalLM(cfg).to(torch.float64).eval()
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("mtp_")}
    state = {k: v for k, v in state.items()
             if not k.startswith("model.layers.") or int(k.split(".")[2]) < model.num_backbone_layers}
    hf.load_state_dict(state, strict=True)
    ids = torch.tensor([PROMPT])
    ref = hf.generate(ids, max_new_tokens=24, do_sample=False, eos_token_id=None, pad_token_id=0,
                      attention_mask=torch.ones_like(ids))[0, len(PROMPT):].tolist()
    ours = generate_ids(engine, PROMPT, mode="vanilla", max_new_tokens=24, stop_ids=())
    assert ours.tokens == ref
    assert ours.backbone_forwards == 24 and ours.mtp_forwards == 0


@pytest.mark.parametrize("mode", MODES, ids=str)
@pytest.mark.parametrize("ratio,strict", [(None, False), (BOOST_RATIO, False), (BALANCE_RATIO, False), (BOOST_RATIO, True)],
                         ids=["free", "boost-layout", "balance-layout", "strict-boost"])
def test_cached_engine_equals_cache_free_reference(model, engine, lay, mode, ratio, strict):
    layout = Layout(ratio, strict=strict)
    m = get_mode(mode)
    ours = generate_ids(engine, PROMPT, mode=m, layout=layout, max_new_tokens=40, stop_ids=())
    ref_tokens, ref_producers = reference_generate(model, lay, PROMPT, m, layout, 40)
    assert ours.tokens == ref_tokens
    assert ours.producers == ref_producers


@pytest.fixture(scope="module")
def model3():
    """Three MCTP modules: runs of ten MCTP positions restart the chain after a backbone step."""
    from vita_core.model.checkpoint import preset_config, random_model

    return random_model(preset_config("tiny", num_mtp=3), seed=1, dtype=torch.float64)


@pytest.mark.parametrize("mode", ["balance", "boost", "turbo", [2, 3, 1, 6]], ids=str)
def test_three_modules_engine_equals_cache_free_reference(model3, lay, mode):
    layout, m = Layout(BOOST_RATIO), get_mode(mode)
    ours = generate_ids(Engine(model3, lay), PROMPT, mode=m, layout=layout, max_new_tokens=40, stop_ids=())
    ref_tokens, ref_producers = reference_generate(model3, lay, PROMPT, m, layout, 40)
    assert ours.tokens == ref_tokens and ours.producers == ref_producers
    if m.name in ("boost", "turbo"):  # the first run of ten MCTP positions restarts the chain twice
        assert ours.producers[:11] == [BACKBONE, 0, 1, 2, BACKBONE, 0, 1, 2, BACKBONE, 0, 1]
    assert ours.mtp_forwards == sum(p != BACKBONE for p in ref_producers) > 0


@pytest.mark.parametrize("mode", ["vanilla", "balance", "boost", "turbo"])
def test_each_mode_follows_its_schedule(engine, mode):
    done = generate_ids(engine, PROMPT, mode=mode, layout=Layout(BOOST_RATIO), max_new_tokens=60, stop_ids=())
    expected = {
        "vanilla": [BACKBONE] * 60,
        "boost": ([BACKBONE] + list(range(10)) + ([BACKBONE] * 4 + list(range(10))) * 4)[:60],
        "balance": ([BACKBONE] + list(range(4)) + [BACKBONE] * 3 + list(range(8))
                    + ([BACKBONE] * 4 + list(range(10))) * 4)[:60],
        "turbo": (([BACKBONE] + list(range(10))) * 6)[:60],
    }[mode]
    assert done.producers == expected
    assert done.backbone_forwards == expected.count(BACKBONE)
    assert done.mtp_forwards == 60 - expected.count(BACKBONE)


@pytest.mark.parametrize("ratio", [BOOST_RATIO, BALANCE_RATIO])
def test_audio_blocks_hold_only_audio_ids(engine, lay, ratio):
    done = generate_ids(engine, PROMPT, mode="boost", layout=Layout(ratio),
                        sampling=Sampling(temperature=1.0, seed=3), max_new_tokens=120, stop_ids=())
    inside, blocks, text_run = False, 0, 0
    for tok in done.tokens:
        if inside:
            assert lay.is_audio_code(tok) or tok == lay.end_of_audio
            inside = tok != lay.end_of_audio
        else:
            assert not lay.is_audio_code(tok) and tok != lay.end_of_audio
            if tok == lay.begin_of_audio:
                inside, blocks, text_run = True, blocks + 1, 0
            else:
                text_run += 1
    assert blocks >= 1
    assert done.tokens[ratio[0]] == lay.begin_of_audio  # the first block starts after t1 text tokens


def test_text_only_layout_never_emits_audio(engine, lay):
    done = generate_ids(engine, PROMPT, mode="vanilla", layout=Layout(None, text_only=True),
                        sampling=Sampling(temperature=1.5, seed=0), max_new_tokens=50, stop_ids=())
    assert all(t < lay.audio_offset and t != lay.begin_of_audio for t in done.tokens)


def test_sampling_is_seeded(engine):
    kw = dict(mode="boost", layout=Layout(BOOST_RATIO), max_new_tokens=30, stop_ids=())
    a = generate_ids(engine, PROMPT, sampling=Sampling(temperature=0.8, top_k=50, top_p=0.9,
                                                       repetition_penalty=1.1, seed=7), **kw)
    b = generate_ids(engine, PROMPT, sampling=Sampling(temperature=0.8, top_k=50, top_p=0.9,
                                                       repetition_penalty=1.1, seed=7), **kw)
    c = generate_ids(engine, PROMPT, sampling=Sampling(temperature=0.8, top_k=50, top_p=0.9,
                                                       repetition_penalty=1.1, seed=8), **kw)
    assert a.tokens == b.tokens and a.tokens != c.tokens


def test_stops_on_im_end(engine, lay):
    first = generate_ids(engine, PROMPT, mode="vanilla", max_new_tokens=1, stop_ids=()).tokens[0]
    done = generate_ids(engine, PROMPT, mode="vanilla", max_new_tokens=10, stop_ids=(first,))
    assert done.tokens == [first] and done.stop_reason == "stop"


def test_strict_layout_gives_the_nominal_mix(engine, lay):
    done = generate_ids(engine, PROMPT, mode="turbo", layout=Layout(BOOST_RATIO, strict=True),
                        max_new_tokens=39, stop_ids=())
    B, E = lay.begin_of_audio, lay.end_of_audio
    shape = ["a" if lay.is_audio_code(t) else "B" if t == B else "E" if t == E else "t" for t in done.tokens]
    assert "".join(shape) == "tB" + "a" * 8 + "E" + ("tttt" + "B" + "a" * 8 + "E") * 2
