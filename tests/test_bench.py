"""`vita bench` runs end to end on the tiny preset (figures are reported, never asserted)."""

import json

import pytest
import torch
from typer.testing import CliRunner

from vita_cli.main import app


def test_bench_json_has_every_mode_and_forward_counts():
    result = CliRunner().invoke(app, ["bench", "--preset", "tiny", "--new-tokens", "28", "--repeats", "1",
                                      "--warmup", "0", "--modes", "boost,turbo", "--threads", "1", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    modes = {m["mode"]: m for m in data["modes"]}
    assert set(modes) == {"vanilla", "boost", "turbo"}
    assert modes["vanilla"]["backbone_forwards"] == 28 and modes["vanilla"]["speedup"] == 1.0
    assert (modes["boost"]["backbone_forwards"], modes["boost"]["mtp_forwards"]) == (8, 20)
    assert (modes["turbo"]["backbone_forwards"], modes["turbo"]["mtp_forwards"]) == (3, 25)
    assert all(m["first_audio_block_ms"] > 0 for m in modes.values())
    assert data["threads"] >= 1 and data["fast_path"] is True and data["read_gb_per_s"] > 0
    assert data["engine_path"] == "fast path (prepacked oneDNN)"  # the static cache only where CUDA is
    assert data["hf_generate"] is None
    for m in modes.values():
        assert m["limit_tokens_per_s"] > 0 and m["percent_of_limit"] > 0
    # the limits follow the forward mix: turbo's 3 backbone passes read less than vanilla's 28
    assert modes["turbo"]["limit_speedup"] > modes["boost"]["limit_speedup"] > 1.0 == modes["vanilla"]["limit_speedup"]


def test_bench_against_hf_and_threads():
    result = CliRunner().invoke(app, ["bench", "--preset", "tiny", "--new-tokens", "16", "--repeats", "1",
                                      "--warmup", "0", "--modes", "turbo", "--threads", "1", "--against-hf", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["threads"] == 1
    hf = data["hf_generate"]
    assert hf["tokens_per_s"] > 0 and abs(hf["vanilla_over_hf"] - data["modes"][0]["tokens_per_s"] / hf["tokens_per_s"]) < 1e-6
    table = CliRunner().invoke(app, ["bench", "--preset", "tiny", "--new-tokens", "16", "--repeats", "1",
                                     "--warmup", "0", "--modes", "turbo", "--threads", "1"], env={"COLUMNS": "240"})
    assert table.exit_code == 0 and "1 thread(s)" in table.output and "limit" in table.output


def test_hf_backbone_shares_the_weights_and_generates_what_vanilla_does():
    from vita_core.bench import RELEASED_LAYOUT, hf_backbone
    from vita_core.generate import Engine, generate_ids
    from vita_core.model.checkpoint import preset_config, random_model

    model = random_model(preset_config("tiny", num_mtp=2), seed=4, dtype=torch.float32)
    hf = hf_backbone(model)
    assert hf.model.embed_tokens.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    prompt = [151644, 872, 198, 40, 1079, 264]
    ids = torch.tensor([prompt])
    with torch.inference_mode():
        ref = hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=12, do_sample=False,
                          eos_token_id=None, pad_token_id=0)[0, len(prompt):].tolist()
    assert generate_ids(Engine(model, RELEASED_LAYOUT), prompt, max_new_tokens=12, stop_ids=()).tokens == ref


def test_bench_rejects_bad_flags():
    runner = CliRunner()
    bad = runner.invoke(app, ["bench", "--preset", "huge"])
    assert bad.exit_code == 1 and "unknown model preset 'huge'" in bad.output
    bad = runner.invoke(app, ["bench", "--preset", "tiny", "--modes", "warp"])
    assert bad.exit_code == 1 and "schedule" in bad.output
    bad = runner.invoke(app, ["bench", "--preset", "tiny", "--new-tokens", "4"])
    assert bad.exit_code == 1 and "--new-tokens 4 is too small" in bad.output
    bad = runner.invoke(app, ["bench", "--preset", "tiny", "--threads", "0"])
    assert bad.exit_code == 1 and "--threads 0 must be at least 1" in bad.output


def test_decoder_bench_times_every_chunk(decoder_dir):
    result = CliRunner().invoke(app, ["bench", "--decoder", str(decoder_dir), "--decoder-chunks", "3", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert len(data["chunk_ms"]) == 3 and data["first_chunk_codes"] == 8 and data["chunk_codes"] == 20
    # 8 + 3 * 20 codes -> int(68 / 12.5 * 22050 / 256) frames of 256 samples
    assert round(data["audio_seconds"] * 22050) == 468 * 256
    assert data["first_chunk_audio_ms"] > 0 and data["stream_rtf"] > 0 and data["reference_last_over_first"] > 0


def test_decoder_bench_rejects_bad_flags(decoder_dir):
    result = CliRunner().invoke(app, ["bench", "--decoder", str(decoder_dir), "--decoder-chunks", "1"])
    assert result.exit_code != 0 and "at least 2 chunks" in result.output
    result = CliRunner().invoke(app, ["bench", "--decoder", "/nonexistent/decoder"])
    assert result.exit_code != 0 and "lacks config.yaml" in result.output


def test_bench_sizes_the_preset_by_a_tokenizer(small_tokenizer_dir, small_tokenizer):
    from vita_core.model.checkpoint import preset_config, random_model
    from vita_core.tokens import layout_from_tokenizer

    result = CliRunner().invoke(app, ["bench", "--preset", "tiny", "--new-tokens", "28", "--repeats", "1",
                                      "--warmup", "0", "--modes", "boost", "--json",
                                      "--tokenizer", str(small_tokenizer_dir)])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    config = preset_config("tiny", tokens=layout_from_tokenizer(small_tokenizer))
    assert config["vocab_size"] == 1344
    assert data["parameters"] == sum(p.numel() for p in random_model(config).parameters())
    boost = next(m for m in data["modes"] if m["mode"] == "boost")
    assert (boost["backbone_forwards"], boost["mtp_forwards"]) == (8, 20) and boost["first_audio_block_ms"] > 0


TINY = ["bench", "--preset", "tiny", "--new-tokens", "16", "--repeats", "1", "--warmup", "0"]


def test_table_fits_80_columns_and_each_mode_shows_as_it_finishes():
    r = CliRunner().invoke(app, [*TINY, "--modes", "boost"], env={"COLUMNS": "80"}, terminal_width=80)
    assert r.exit_code == 0, r.output
    assert max(len(line) for line in r.stdout.splitlines()) <= 80 and "…" not in r.stdout
    for header in ("tokens/s", "speedup", "first audio block", "limit tok/s", "% of limit", "limit speedup",
                   "backbone fwd", "MCTP fwd", "ms/backbone", "ms/catch-up", "ms/MCTP"):
        assert header in r.stdout, header  # whole, on one line
    rows = [line for line in r.stdout.splitlines() if line.startswith("│ boost")]
    assert len(rows) == 3 and "x │" in rows[0]  # the speed, the limit and the forwards tables
    log = r.stderr.splitlines()
    done = next(i for i, line in enumerate(log) if line.startswith("vanilla: ") and "tokens/s (1.00x)" in line)
    assert done < next(i for i, line in enumerate(log) if "boost: run 1/1" in line)


def test_ctrl_c_still_shows_the_finished_modes(monkeypatch):
    import vita_core.bench

    real = vita_core.bench._one_run

    def stop_at_turbo(engine, prompt, mode, *args):
        if mode == "turbo":
            raise KeyboardInterrupt
        return real(engine, prompt, mode, *args)

    monkeypatch.setattr(vita_core.bench, "_one_run", stop_at_turbo)
    r = CliRunner().invoke(app, [*TINY, "--modes", "boost,turbo"], env={"COLUMNS": "200"})
    assert r.exit_code == 130
    assert "(interrupted)" in r.stdout
    rows = [line.split("│")[1].strip() for line in r.stdout.splitlines() if line.startswith("│ ")]
    assert rows == ["vanilla", "boost"]
    r = CliRunner().invoke(app, [*TINY, "--modes", "boost,turbo", "--json"])
    assert r.exit_code == 130
    data = json.loads(r.stdout)
    assert data["interrupted"] and [m["mode"] for m in data["modes"]] == ["vanilla", "boost"]
def test_bench_batch_reports_total_and_per_request_speed():
    result = CliRunner().invoke(app, ["bench", "--preset", "tiny", "--new-tokens", "20", "--repeats", "1",
                                      "--warmup", "0", "--modes", "turbo", "--threads", "1", "--batch", "3", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["batch"] == 3
    for m in data["modes"]:
        assert m["batch_tokens_per_s"] > 0 and m["batch_request_tokens_per_s"] > 0
        assert len(m["batch_first_audio_block_ms"]) == 3  # 20 strict tokens hold one closed block each
    table = CliRunner().invoke(app, ["bench", "--preset", "tiny", "--new-tokens", "16", "--repeats", "1",
                                     "--warmup", "0", "--modes", "turbo", "--threads", "1", "--batch", "2",
                                     "--against-hf"], env={"COLUMNS": "300"})
    assert table.exit_code == 0 and "batch of 2" in table.output, table.output
    bad = CliRunner().invoke(app, ["bench", "--preset", "tiny", "--batch", "0"])
    assert bad.exit_code == 1 and "--batch 0 must be at least 1" in bad.output


def test_limit_is_each_forwards_reads_or_its_arithmetic_whichever_is_slower():
    from vita_core.model.checkpoint import preset_config, random_model
    from vita_core.roofline import WeightBytes, limit_tokens_per_s
    from vita_core.schedule import BACKBONE

    model = random_model(preset_config("tiny", num_mtp=2), seed=0, dtype=torch.float32)
    w = WeightBytes.of(model)
    layer = sum(p.numel() for p in model.model.layers[0].parameters()) * 4
    norm = model.config.hidden_size * 4
    assert w.backbone == model.num_backbone_layers * layer + norm
    assert w.mtp[1] == layer + 2 * model.config.hidden_size ** 2 * 4 + 3 * norm  # layer, 2H->H proj, 3 norms
    assert w.logit_row == model.config.hidden_size * 4
    forwards = [(BACKBONE, 1, 100), (0, 1, 16385), (1, 1, 0)]
    total = w.backbone + 100 * w.logit_row + w.mtp[0] + 16385 * w.logit_row + w.mtp[1]
    assert abs(limit_tokens_per_s(w, forwards, 3, 1e9) - 3e9 / total) < 1e-9
    # one position: 2 FLOPs per weight read (4 bytes in fp32), so at 1 GB/s and 0.5 GFLOP/s the reads bind;
    # eleven positions of the backbone do 11x the work: the arithmetic binds
    assert w.flops(BACKBONE, 1, 100) == 2 * (w.backbone + 100 * w.logit_row) // 4
    assert limit_tokens_per_s(w, forwards, 3, 1e9, 0.5e9) == pytest.approx(limit_tokens_per_s(w, forwards, 3, 1e9))
    eleven = [(BACKBONE, 11, 100)]
    assert limit_tokens_per_s(w, eleven, 11, 1e9, 1e9) == pytest.approx(11e9 / w.flops(BACKBONE, 11, 100))
    assert limit_tokens_per_s(w, eleven, 11, 1e9, 1e9) < limit_tokens_per_s(w, eleven, 11, 1e9)
