"""The static-KV-cache path (the GPU fast path, run eagerly on CPU) against the dynamic engine."""

import json
from collections import Counter

import pytest
import torch
from typer.testing import CliRunner

from vita_core.bench import RELEASED_LAYOUT as LAY
from vita_core.errors import InputError
from vita_core.generate import DoneEvent, Engine, ForwardEvent, Request, Sampling, generate_ids
from vita_core.model.checkpoint import preset_config, random_model
from vita_core.model.static import WARMUP, StaticModel, _Graph
from vita_core.schedule import BACKBONE, BOOST_RATIO, Layout

PROMPT = [151644, 872, 198, 40, 1079, 264, 1273, 13, 151645, 198, 151644, 77091, 198]
MODES = ["vanilla", "balance", "boost", "turbo", [2, 3, 1, 6]]
LAYOUTS = {"free": Layout(None), "boost": Layout(BOOST_RATIO)}
LENGTH = 64  # the static caches' preallocated positions in these tests


@pytest.fixture(scope="module", params=[10, 3], ids=["10-modules", "3-modules"])
def engines(request):
    """Dynamic (the CPU fast path) and static engines over one fp32 model; 3 modules restart the chain."""
    model = random_model(preset_config("tiny", num_mtp=request.param), seed=2, dtype=torch.float32)
    dynamic, static = Engine(model, LAY), Engine(model, LAY, static_cache=True, static_len=LENGTH)
    assert dynamic.static is None and static.static is not None and static.fast is None
    return dynamic, static


@pytest.mark.parametrize("mode,layout", [(m, "boost") for m in MODES] + [("turbo", "free")], ids=str)
def test_static_cache_gives_the_dynamic_tokens_and_producers(engines, mode, layout):
    dynamic, static = engines
    kw = dict(mode=mode, layout=LAYOUTS[layout], max_new_tokens=48, stop_ids=())
    a, b = generate_ids(dynamic, PROMPT, **kw), generate_ids(static, PROMPT, **kw)
    assert b.tokens == a.tokens and b.producers == a.producers
    assert (b.backbone_forwards, b.mtp_forwards) == (a.backbone_forwards, a.mtp_forwards)
    if static.model.num_mtp == 3 and mode in ("boost", "turbo"):  # the run of ten restarts the chain
        assert b.producers[:11] == [BACKBONE, 0, 1, 2, BACKBONE, 0, 1, 2, BACKBONE, 0, 1]


def test_static_cache_samples_the_same_and_reads_prompt_embeddings(engines):
    dynamic, static = engines
    embeds = torch.randn(len(PROMPT), static.model.config.hidden_size, generator=torch.Generator().manual_seed(0))
    kw = dict(mode="boost", layout=LAYOUTS["boost"], max_new_tokens=40, stop_ids=(), prompt_embeds=embeds * 0.02,
              sampling=Sampling(temperature=0.9, top_k=40, top_p=0.95, repetition_penalty=1.2, seed=5))
    a, b = generate_ids(dynamic, PROMPT, **kw), generate_ids(static, PROMPT, **kw)
    assert b.tokens == a.tokens
    assert generate_ids(static, PROMPT, **{**kw, "prompt_embeds": None}).tokens != b.tokens


def test_a_request_that_fills_the_cache_exactly_fits_and_a_longer_one_grows_it():
    model = random_model(preset_config("tiny", num_mtp=3), seed=4, dtype=torch.float32)
    dynamic, static = Engine(model, LAY), Engine(model, LAY, static_cache=True, static_len=LENGTH)
    kw = dict(mode="boost", layout=LAYOUTS["boost"], stop_ids=())
    budget = LENGTH - len(PROMPT)  # prompt + budget = the preallocated positions
    assert generate_ids(static, PROMPT, max_new_tokens=budget, **kw).tokens == \
        generate_ids(dynamic, PROMPT, max_new_tokens=budget, **kw).tokens
    assert (static.static.max_len, static.static.caches_made) == (LENGTH, 1)
    longer = generate_ids(static, PROMPT, max_new_tokens=budget + 1, **kw)
    assert longer.tokens == generate_ids(dynamic, PROMPT, max_new_tokens=budget + 1, **kw).tokens
    assert (static.static.max_len, static.static.caches_made) == (2 * LENGTH, 2)
    assert len(longer.tokens) == budget + 1
    generate_ids(static, PROMPT, max_new_tokens=8, **kw)  # the grown cache came back and serves again
    assert static.static.caches_made == 2
    assert [c.max_len for c in static.static._free] == [2 * LENGTH]  # the short cache was dropped


def test_caches_return_to_the_pool_after_a_batch_and_an_early_stop(engines):
    dynamic, static = engines
    made = static.static.caches_made
    requests = [Request(PROMPT, "turbo", LAYOUTS["boost"], max_new_tokens=40, stop_ids=()),
                Request(PROMPT[:7], "boost", LAYOUTS["boost"], max_new_tokens=33, stop_ids=()),
                Request(PROMPT[3:], "vanilla", LAYOUTS["boost"], max_new_tokens=21, stop_ids=())]
    done = {i: e for i, e in static.generate_batch(requests) if isinstance(e, DoneEvent)}
    for i, r in enumerate(requests):
        alone = generate_ids(dynamic, r.prompt, mode=r.mode, layout=r.layout, max_new_tokens=r.max_new_tokens,
                             stop_ids=())
        assert done[i].tokens == alone.tokens and done[i].producers == alone.producers
    assert static.static.caches_made <= made + 3
    made = static.static.caches_made
    events = static.generate(PROMPT, mode="turbo", max_new_tokens=30, stop_ids=())
    next(events)
    events.close()  # the caller stops reading: the cache still goes back
    generate_ids(static, PROMPT, mode="turbo", max_new_tokens=30, stop_ids=())
    assert static.static.caches_made == made


class _ReplayOnCPU:
    """Stands in for a CUDA graph on CPU: a replay recomputes the pass from the captured input buffers
    into the captured output buffer, so stale inputs or a missed copy change the tokens."""

    def __init__(self, replay) -> None:
        self._replay, self.replays = replay, 0

    def replay(self) -> None:
        self._replay()
        self.replays += 1


def _capture_on_cpu(self, producer, cache, args):
    static = [a.clone() for a in args]
    for _ in range(WARMUP):  # the warm-up passes write the same keys and values the replay will
        self._pass(producer, cache, *static)
    out = self._pass(producer, cache, *static)
    return _Graph(_ReplayOnCPU(lambda: out.copy_(self._pass(producer, cache, *static))), static, out)


@pytest.mark.parametrize("mode", ["vanilla", "boost", "turbo"])
def test_graph_replay_bookkeeping_keeps_the_tokens(engines, monkeypatch, mode):
    """The capture-once-then-replay logic of `StaticModel.run`, with the graph emulated on CPU."""
    dynamic, _ = engines
    model = dynamic.model
    monkeypatch.setattr(StaticModel, "_capture", _capture_on_cpu)
    graphed = Engine(model, LAY, static_cache=True, static_len=LENGTH)
    graphed.static.graphs = True
    assert graphed.path == "static KV cache + CUDA graphs"
    kw = dict(mode=mode, layout=LAYOUTS["boost"], max_new_tokens=48, stop_ids=())
    events = list(graphed.generate(PROMPT, **kw))
    assert events[-1].tokens == generate_ids(dynamic, PROMPT, **kw).tokens
    passes = Counter((e.producer, e.positions) for e in events if isinstance(e, ForwardEvent))
    (cache,) = graphed.static._free
    # a pass shape seen once (the prefill) ran eagerly; one seen n times: eager, captured, n - 1 replays
    assert set(cache.graphs) == {key for key, n in passes.items() if n > 1} != set()
    replays = sum(g.graph.replays for g in cache.graphs.values())
    assert replays == sum(n - 1 for n in passes.values() if n > 1)
    again = generate_ids(graphed, PROMPT[2:], **kw)  # the next request replays the same graphs
    assert again.tokens == generate_ids(dynamic, PROMPT[2:], **kw).tokens
    assert sum(g.graph.replays for g in cache.graphs.values()) > replays


def test_selection_is_dynamic_on_cpu_unless_asked():
    model = random_model(preset_config("tiny", num_mtp=1), seed=0, dtype=torch.float32)
    assert Engine(model, LAY).path == "fast path (prepacked oneDNN)"
    assert Engine(model, LAY, static_cache=True).path == "static KV cache (eager)"
    assert Engine(model, LAY, fast=False).path == "Hugging Face layers"
    with pytest.raises(InputError, match="static KV cache and the CPU fast path"):
        Engine(model, LAY, fast=True, static_cache=True)
    with pytest.raises(InputError, match="static_len 0"):
        Engine(model, LAY, static_cache=True, static_len=0)


def test_bench_reports_which_path_ran():
    from vita_cli.main import app

    result = CliRunner().invoke(app, ["bench", "--preset", "tiny", "--new-tokens", "16", "--repeats", "1", "--warmup",
                                      "0", "--modes", "turbo", "--threads", "1", "--static-cache", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["engine_path"] == "static KV cache (eager)" and data["fast_path"] is False


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: the real graphs (the CPU runs emulate them)")
@pytest.mark.parametrize("mode", ["vanilla", "boost", "turbo"])
def test_cuda_graphs_give_the_tokens_of_the_dynamic_engine_on_gpu(mode):
    model = random_model(preset_config("tiny", num_mtp=3), seed=2, dtype=torch.float32, device="cuda",
                         attn_implementation="sdpa")  # flash-attn has no float32 kernels
    graphed, dynamic = Engine(model, LAY), Engine(model, LAY, static_cache=False)
    assert graphed.path == "static KV cache + CUDA graphs" and dynamic.path == "Hugging Face layers"
    kw = dict(mode=mode, layout=LAYOUTS["boost"], max_new_tokens=48, stop_ids=())
    for prompt in (PROMPT, PROMPT[2:]):  # the second request replays the first one's graphs
        a, b = generate_ids(dynamic, prompt, **kw), generate_ids(graphed, prompt, **kw)
        assert b.tokens == a.tokens and b.producers == a.producers
    (cache,) = graphed.static._free
    assert cache.graphs
