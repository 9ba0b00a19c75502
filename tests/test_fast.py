"""The CPU fast path (prepacked oneDNN layers) against Hugging Face's layers, token for token."""

import pytest
import torch

from vita_core.errors import InputError
from vita_core.generate import Engine, ForwardEvent, GenerationState, Sampling, generate_ids
from vita_core.kv_cache import KVCache
from vita_core.model.checkpoint import preset_config, random_model
from vita_core.model.fast import FastModel, fast_path_supported
from vita_core.schedule import BOOST_RATIO, Layout
from vita_core.bench import RELEASED_LAYOUT as LAY

PROMPT = [151644, 872, 198, 40, 1079, 264, 1273, 13, 151645, 198, 151644, 77091, 198]
MODES = ["vanilla", "balance", "boost", "turbo", [2, 3, 1, 6]]
LAYOUTS = {"free": Layout(None), "boost": Layout(BOOST_RATIO),
           "strict": Layout(BOOST_RATIO, strict=True)}


@pytest.fixture(scope="module", params=[10, 3], ids=["10-modules", "3-modules"])
def engines(request):
    model = random_model(preset_config("tiny", num_mtp=request.param), seed=2, dtype=torch.float32)
    fast, slow = Engine(model, LAY), Engine(model, LAY, fast=False)
    assert fast.fast is not None and slow.fast is None
    return fast, slow


@pytest.mark.parametrize("layout", LAYOUTS, ids=str)
@pytest.mark.parametrize("mode", MODES, ids=str)
def test_fast_path_gives_the_same_tokens_in_fp32(engines, mode, layout):
    fast, slow = engines
    kw = dict(mode=mode, layout=LAYOUTS[layout], max_new_tokens=48, stop_ids=())
    a, b = generate_ids(fast, PROMPT, **kw), generate_ids(slow, PROMPT, **kw)
    assert a.tokens == b.tokens and a.producers == b.producers
    assert (a.backbone_forwards, a.mtp_forwards) == (b.backbone_forwards, b.mtp_forwards)


def test_fast_path_samples_the_same_and_reads_prompt_embeddings(engines):
    fast, slow = engines
    hidden = fast.model.config.hidden_size
    embeds = torch.randn(len(PROMPT), hidden, generator=torch.Generator().manual_seed(0)) * 0.02
    kw = dict(mode="boost", layout=LAYOUTS["boost"], max_new_tokens=40, stop_ids=(), prompt_embeds=embeds,
              sampling=Sampling(temperature=0.9, top_k=40, top_p=0.95, repetition_penalty=1.2, seed=5))
    a, b = generate_ids(fast, PROMPT, **kw), generate_ids(slow, PROMPT, **kw)
    assert a.tokens == b.tokens
    plain = generate_ids(fast, PROMPT, **{**kw, "prompt_embeds": None})
    assert plain.tokens != a.tokens  # the embeddings did reach the backbone


def test_forward_events_count_the_logit_rows_each_token_read(engines):
    fast, _ = engines
    events = [e for e in fast.generate(PROMPT, mode="turbo", layout=LAYOUTS["strict"], max_new_tokens=14,
                                       stop_ids=()) if isinstance(e, ForwardEvent)]
    # strict 1 10 4 10: text, BOA, 8 codes, EOA, text x4 (the first event is the prefill)
    rows = [e.logit_rows for e in events]
    assert rows == [LAY.audio_offset, 0] + [LAY.num_codes + 1] * 8 + [0] + [LAY.audio_offset] * 3


def _last_logits(model, fast: bool):
    """Logits at the prompt's last position and module 0's step there, through either path."""
    cache = KVCache(model.config, 64, range(model.config.num_hidden_layers), torch.device("cpu"),
                    model.lm_head.weight.dtype)
    with torch.inference_mode():
        emb = model.embed(torch.tensor(PROMPT))
        if fast:
            runner = FastModel(model)
            (h0,) = runner.backbone([emb], [0], [cache])
            (h1,) = runner.mtp(0, [emb[1:]], [h0[:-1]], [1], [cache])
        else:
            t = len(PROMPT)
            h0 = model.backbone(emb[None], torch.arange(t)[None], None)[0]
            h1 = model.mtp(0, emb[None, 1:], h0[None, :-1], torch.arange(1, t)[None], None)[0]
        return model.logits(h0[-1]).float(), model.logits(h1[-1]).float()


def test_bf16_fast_path_logits_match_fp32_within_bf16_tolerance():
    model = random_model(preset_config("tiny"), seed=3, dtype=torch.float32)
    ref = _last_logits(model, fast=False)
    low = random_model(preset_config("tiny"), seed=3, dtype=torch.bfloat16)
    assert fast_path_supported(low) == bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    if not fast_path_supported(low):
        pytest.skip("this CPU has no oneDNN bf16 kernels")
    got = _last_logits(low, fast=True)
    for r, g in zip(ref, got):
        scale = r.abs().max()
        assert (r - g).abs().max() < 0.03 * scale  # bf16 keeps 8 bits: ~0.4% per rounding, a few layers
        assert torch.corrcoef(torch.stack([r, g]))[0, 1] > 0.999
    engine = Engine(low, LAY)
    done = generate_ids(engine, PROMPT, mode="turbo", layout=LAYOUTS["boost"], max_new_tokens=30, stop_ids=())
    assert len(done.tokens) == 30 and engine.fast is not None


def test_fast_path_is_refused_where_unsupported():
    model = random_model(preset_config("tiny", num_mtp=1), seed=0, dtype=torch.float64)
    assert Engine(model, LAY).fast is None  # auto: Hugging Face's layers
    with pytest.raises(InputError, match="fast path needs a CPU model in float32 or bfloat16"):
        Engine(model, LAY, fast=True)


def test_repetition_penalty_reaches_end_of_audio_after_the_codes(engines):
    """The code head's last row is <|end_of_audio|>: its penalty reads that id's presence."""
    fast, _ = engines
    state = GenerationState(tokens=[], embeds=torch.zeros(1), token_embeds=torch.zeros(1), hidden=torch.zeros(1),
                            seen=[0], cache=None, presence=torch.zeros(LAY.vocab_size, dtype=torch.bool))
    state.presence[LAY.end_of_audio] = True
    logits = torch.zeros(LAY.num_codes + 1)
    logits[-1], logits[7] = 2.0, 1.5  # EOA first, until its penalty halves it
    assert fast._pick(logits, state, Sampling(repetition_penalty=2.0), LAY.audio_offset) == 7
    assert fast._pick(logits, state, Sampling(), LAY.audio_offset) == LAY.num_codes


def _batch(engine, requests):
    from vita_core.generate import DoneEvent

    done, order = {}, {}
    for i, event in engine.generate_batch(requests):
        assert i not in done  # nothing after a request's DoneEvent
        order.setdefault(i, []).append(event)
        if isinstance(event, DoneEvent):
            done[i] = event
    return [done[i] for i in range(len(requests))], order


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "hf-layers"])
def test_batched_requests_equal_each_request_alone(engines, fast):
    from vita_core.generate import Request

    engine = engines[0] if fast else engines[1]
    first = generate_ids(engine, PROMPT, mode="vanilla", layout=LAYOUTS["boost"], max_new_tokens=3, stop_ids=())
    requests = [
        Request(PROMPT, "turbo", LAYOUTS["boost"], max_new_tokens=40, stop_ids=()),
        Request(PROMPT[:7], "boost", LAYOUTS["strict"], max_new_tokens=33, stop_ids=()),
        Request(PROMPT[3:], "vanilla", LAYOUTS["free"], max_new_tokens=21, stop_ids=()),
        Request(PROMPT, "balance", LAYOUTS["boost"], max_new_tokens=40, stop_ids=()),
        Request(PROMPT, "vanilla", LAYOUTS["boost"], max_new_tokens=30, stop_ids=(first.tokens[2],)),  # stops at 3
        Request(PROMPT[:-2], [2, 3, 1, 6], LAYOUTS["boost"], max_new_tokens=37, stop_ids=(),
                sampling=Sampling(temperature=0.8, top_k=20, seed=1)),
    ]
    batched, events = _batch(engine, requests)
    for r, got, evs in zip(requests, batched, events.values()):
        alone = [e for e in engine.generate(r.prompt, mode=r.mode, layout=r.layout, sampling=r.sampling,
                                            max_new_tokens=r.max_new_tokens, stop_ids=r.stop_ids)]
        assert got.tokens == alone[-1].tokens and got.producers == alone[-1].producers
        assert [type(e) for e in evs] == [type(e) for e in alone]
    assert batched[4].stop_reason == "stop" and len(batched[4].tokens) == 3
