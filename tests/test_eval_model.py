"""`vita eval ... --model`: outputs generated through the library with the tiny checkpoint and the fake codec,
resumed without redoing finished work, then scored exactly as the given-outputs paths score them."""

import json

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

import speech_fakes
import vita_core.tts_batch
from vita_cli.main import app
from vita_core.eval.datasets import AudioItem
from vita_core.eval.model_runs import in_mode, parse_modes
from vita_core.eval.wavs import is_complete_wav, write_wav
from vita_core.speech import load_speech_model
from vita_core.tts import synthesize, voice_prompt

runner = CliRunner(env={"COLUMNS": "200"})
TEXTS = {"a": "Hello, world.", "b": "Doesn't it rain?", "c": "Twenty one."}
TEXTS_D, TEXTS_E = "On and on it goes.", "Yes."


@pytest.fixture
def meta(tmp_path):
    """Three Seed-TTS lines, each with its own voice-prompt recording."""
    path = tmp_path / "set" / "meta.lst"
    (path.parent / "prompts").mkdir(parents=True)
    for i, utt in enumerate(TEXTS):
        t = np.arange(8000 + 4000 * i) / 16000
        sf.write(str(path.parent / "prompts" / f"{utt}.wav"), 0.2 * np.sin(2 * np.pi * (150 + 40 * i) * t), 16000)
    path.write_text("".join(f"{u}|p|prompts/{u}.wav|{t}\n" for u, t in TEXTS.items()), encoding="utf-8")
    return path


@pytest.fixture
def calls(monkeypatch):
    """Every text the library is asked to synthesize, in order (`calls.batches`: the texts of each batch)."""

    class Calls(list):
        def __init__(self):
            super().__init__()
            self.batches = []

    seen = Calls()
    real = vita_core.tts_batch.synthesize_batch

    def counting(speech, jobs, *args, **kwargs):
        seen.extend((speech.mode.name, job.text) for job in jobs)
        seen.batches.append([job.text for job in jobs])
        return real(speech, jobs, *args, **kwargs)

    monkeypatch.setattr(vita_core.tts_batch, "synthesize_batch", counting)
    return seen


@pytest.fixture
def seed_args(meta, tiny_checkpoint_f32, codec_dirs, whisper_pt, tmp_path):
    enc, dec = codec_dirs
    return ["eval", "seed-tts", "--meta", str(meta), "--model", str(tiny_checkpoint_f32), "--tokenizer-dir", str(enc),
            "--decoder-dir", str(dec), "--device", "cpu", "--max-new-tokens", "16", "--asr-model", str(whisper_pt),
            "--out-dir", str(tmp_path / "out")]


def test_two_modes_write_every_wav_then_score_like_wav_dir(seed_args, calls, meta, tiny_checkpoint_f32, tmp_path):
    out = tmp_path / "out"
    r = runner.invoke(app, [*seed_args, "--modes", "vanilla,boost"])
    assert r.exit_code == 0, r.output
    assert sorted(calls) == sorted((m, t) for m in ("vanilla", "boost") for t in TEXTS.values())
    progress = [line for line in r.stderr.splitlines() if line.startswith("synthesize ")]  # not a terminal: lines
    assert progress == [f"synthesize {m}: {n}/3" for m in ("vanilla", "boost") for n in (1, 2, 3)]
    for mode in ("vanilla", "boost"):
        assert sorted(p.name for p in (out / mode).iterdir()) == [".vita-run.json", "a.wav", "b.wav", "c.wav"]
    report = json.loads((out / "seed-tts.json").read_text())
    assert [m["mode"] for m in report["modes"]] == ["vanilla", "boost"] and report["baseline"] == "vanilla"
    assert all(m["n"] == 3 for m in report["modes"])

    # the wav is what the library gives for that text, voice prompt and mode (16-bit PCM)
    speech = load_speech_model(tiny_checkpoint_f32, device="cpu")
    speech.encoder, speech.decoder = speech_fakes.FakeEncoder(), speech_fakes.FakeDecoder()
    chunks = []
    voice = voice_prompt(speech, meta.parent / "prompts" / "b.wav")
    synthesize(in_mode(speech, "boost"), TEXTS["b"], chunks.append, voice=voice, max_new_tokens=16)
    wav, rate = sf.read(str(out / "boost" / "b.wav"), dtype="float32")
    assert rate == 22050 and wav.size == sum(c.size for c in chunks) > 0
    np.testing.assert_allclose(wav, np.concatenate(chunks), atol=1 / 32767 + 1e-6)

    # scoring the same folders through --wav-dir gives the same report
    args = [a for a in seed_args]
    i = args.index("--model")
    del args[i : i + 6]  # --model, --tokenizer-dir, --decoder-dir and their values
    args[args.index("--out-dir") + 1] = str(tmp_path / "given")
    r = runner.invoke(app, [*args, "--wav-dir", f"vanilla={out / 'vanilla'}", "--wav-dir", f"boost={out / 'boost'}"])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "given" / "seed-tts.json").read_text()) == report


def test_rerun_keeps_finished_wavs_and_redoes_broken_ones(seed_args, calls, tmp_path):
    out = tmp_path / "out"
    r = runner.invoke(app, [*seed_args, "--modes", "turbo"])
    assert r.exit_code == 0, r.output
    assert len(calls) == 3
    stamps = {p.name: p.stat().st_mtime_ns for p in (out / "turbo").iterdir()}
    r = runner.invoke(app, [*seed_args, "--modes", "turbo"])
    assert r.exit_code == 0 and len(calls) == 3 and "synthesized 0 wavs" in r.output
    assert {p.name: p.stat().st_mtime_ns for p in (out / "turbo").iterdir()} == stamps

    whole = (out / "turbo" / "a.wav").read_bytes()
    (out / "turbo" / "a.wav").write_bytes(whole[: len(whole) // 2])  # cut short, as by a killed writer
    (out / "turbo" / "c.wav").write_bytes(b"")
    r = runner.invoke(app, [*seed_args, "--modes", "turbo"])
    assert r.exit_code == 0, r.output
    assert calls[3:] == [("turbo", TEXTS["a"]), ("turbo", TEXTS["c"])]
    assert (out / "turbo" / "a.wav").read_bytes() == whole  # greedy: the same audio again
    assert (out / "turbo" / "b.wav").stat().st_mtime_ns == stamps["b.wav"]

    # outputs of other settings are never mixed into one score
    other = [*seed_args, "--modes", "turbo"]
    other[other.index("--max-new-tokens") + 1] = "12"
    r = runner.invoke(app, other)
    assert r.exit_code == 1 and "turbo holds outputs made with other settings (max_new_tokens)" in r.stderr
    (out / "boost").mkdir()
    (out / "boost" / "a.wav").write_bytes(whole)
    r = runner.invoke(app, [*seed_args, "--modes", "boost"])
    assert r.exit_code == 1 and "boost already holds files not made by vita eval --model" in r.stderr
    assert len(calls) == 5


def test_batched_run_writes_the_wavs_of_batch_one_and_resumes(seed_args, calls, meta, tmp_path):
    """Greedy fp32: five lines in batches (default 8, then 2) give the wavs of one line at a time, byte for byte."""
    with meta.open("a", encoding="utf-8") as f:
        f.write(f"d|p|prompts/a.wav|{TEXTS_D}\ne|p|prompts/b.wav|{TEXTS_E}\n")
    one, many = tmp_path / "one", tmp_path / "many"
    args = [*seed_args, "--modes", "turbo,vanilla"]
    r = runner.invoke(app, [*args, "--synth-batch", "1", "--out-dir", str(one)])
    assert r.exit_code == 0, r.output
    assert [len(b) for b in calls.batches] == [1] * 10
    calls.batches.clear()
    r = runner.invoke(app, [*args, "--out-dir", str(many)])
    assert r.exit_code == 0, r.output
    assert [len(b) for b in calls.batches] == [5, 5] and "synthesized 10 wavs" in r.stderr
    wavs = sorted(p.relative_to(one) for p in one.rglob("*.wav"))
    assert len(wavs) == 10 and sorted(p.relative_to(many) for p in many.rglob("*.wav")) == wavs
    assert all((many / w).read_bytes() == (one / w).read_bytes() for w in wavs)
    assert sum(sf.info(str(one / w)).frames for w in wavs) > 0

    (many / "vanilla" / "b.wav").unlink()  # as a run killed in its last batch leaves the folder
    (many / "vanilla" / "e.wav").write_bytes((one / "vanilla" / "e.wav").read_bytes()[:100])
    (many / "turbo" / "d.wav").unlink()
    calls.batches.clear()
    r = runner.invoke(app, [*args, "--synth-batch", "2", "--out-dir", str(many)])
    assert r.exit_code == 0, r.output
    assert calls.batches == [[TEXTS_D], [TEXTS["b"], TEXTS_E]] and "synthesized 3 wavs" in r.stderr
    assert all((many / w).read_bytes() == (one / w).read_bytes() for w in wavs)
    r = runner.invoke(app, [*args, "--synth-batch", "0", "--out-dir", str(many)])
    assert r.exit_code == 2 and "--synth-batch" in r.output


def test_utterances_without_audio_are_counted_not_dropped(seed_args, calls, tmp_path):
    args = [*seed_args, "--modes", "boost,vanilla", "--no-voice-prompt"]
    args[args.index("--max-new-tokens") + 1] = "1"  # one text token: no audio at all
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    assert "left out of the mean" in r.output
    modes = json.loads((tmp_path / "out" / "seed-tts.json").read_text())["modes"]
    assert [(m["mode"], m["n"], m["scored"], m["empty"], m["missing"]) for m in modes] == [
        ("boost", 3, 0, 3, 0), ("vanilla", 3, 0, 3, 0)]
    assert sf.info(str(tmp_path / "out" / "boost" / "a.wav")).frames == 0
    r = runner.invoke(app, [*args, "--missing-as-error"])
    assert r.exit_code == 0 and len(calls) == 6  # a recorded "no audio" is a finished result
    modes = json.loads((tmp_path / "out" / "seed-tts.json").read_text())["modes"]
    assert [u["wer"] for m in modes for u in m["utterances"]] == [1.0] * 6


@pytest.mark.parametrize("extra, message", [
    (["--modes", "vanilla,warp"], "--modes 'vanilla,warp': choose from vanilla, balance, boost, turbo"),
    (["--modes", "boost,boost"], "each mode once"),
    (["--wav-dir", "x"], "--model generates the outputs to score; drop --wav-dir"),
    (["--model", "nowhere"], "--model points at nowhere, which is not a folder"),
    (["--asr-model", "no-asr.pt"], "no-asr.pt: ASR model not found"),
])
def test_bad_inputs_fail_in_one_line(seed_args, calls, tmp_path, monkeypatch, extra, message):
    monkeypatch.chdir(tmp_path)
    r = runner.invoke(app, [*seed_args, *extra])
    assert r.exit_code == 1
    assert message in r.stderr.strip().splitlines()[-1] and "Traceback" not in r.output
    assert calls == [] and not (tmp_path / "out").exists()


def test_missing_prompt_wav_and_modes_without_model(seed_args, meta, whisper_pt, tmp_path):
    (meta.parent / "prompts" / "c.wav").unlink()
    r = runner.invoke(app, seed_args)
    assert r.exit_code == 1 and "1 prompt wav(s) of the meta list not found" in r.stderr
    assert "--no-voice-prompt" in r.stderr
    base = ["eval", "seed-tts", "--meta", str(meta), "--asr-model", str(whisper_pt)]
    r = runner.invoke(app, [*base, "--modes", "boost"])
    assert r.exit_code == 1 and "--modes goes with --model" in r.stderr
    r = runner.invoke(app, base)
    assert r.exit_code == 1 and "nothing to score" in r.stderr


def test_parse_modes_and_complete_wavs(tmp_path):
    assert parse_modes("Turbo, vanilla balance") == ["turbo", "vanilla", "balance"]
    write_wav(tmp_path / "ok.wav", np.full(100, 0.1, np.float32), 16000)
    write_wav(tmp_path / "silent.wav", np.zeros(0, np.float32), 16000)
    data = (tmp_path / "ok.wav").read_bytes()
    (tmp_path / "cut.wav").write_bytes(data[:-2])
    (tmp_path / "junk.wav").write_bytes(b"RIFF" + bytes(40))
    assert [is_complete_wav(tmp_path / n) for n in ("ok.wav", "silent.wav", "cut.wav", "junk.wav", "none.wav")] == [
        True, True, False, False, False]


def _questions(tmp_path):
    data = tmp_path / "q.jsonl"
    rows = [{"id": "q1", "audio": "q1.wav", "answers": ["Paris"]}, {"id": "q2", "audio": "q2.wav", "answers": "three"}]
    for i, row in enumerate(rows):
        sf.write(str(tmp_path / row["audio"]), 0.2 * np.sin(np.arange(12000 + 4000 * i) / (4 + i)), 16000)
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return data


def test_sqa_answers_with_the_model_per_mode_and_resumes(tmp_path, tiny_checkpoint_f32, codec_dirs, whisper_pt,
                                                         monkeypatch):
    import vita_core.eval.model_runs as model_runs

    asked = []
    real = model_runs.spoken_answerer

    def counting(speech, mode, **kwargs):
        answer = real(speech, mode, **kwargs)
        return lambda question: asked.append((mode, question.audio.name)) or answer(question)

    monkeypatch.setattr(model_runs, "spoken_answerer", counting)
    enc, dec = codec_dirs
    out = tmp_path / "out"
    args = ["eval", "sqa", "--data", str(_questions(tmp_path)), "--model", str(tiny_checkpoint_f32), "--tokenizer-dir",
            str(enc), "--decoder-dir", str(dec), "--device", "cpu", "--max-new-tokens", "16", "--modes",
            "vanilla,turbo", "--asr-model", str(whisper_pt), "--out-dir", str(out)]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    assert sorted(asked) == sorted((m, q) for m in ("vanilla", "turbo") for q in ("q1.wav", "q2.wav"))
    runs = json.loads((out / "sqa.json").read_text())
    assert [(s["mode"], s["stream"]) for s in runs] == [
        ("vanilla", "S->T text"), ("vanilla", "S->S transcript"), ("turbo", "S->T text"), ("turbo", "S->S transcript")]
    for mode in ("vanilla", "turbo"):
        assert sorted(p.name for p in (out / mode / "speech").iterdir()) == ["q1.wav", "q2.wav"]
        texts = {p.stem: p.read_text() for p in (out / mode / "text").iterdir()}
        assert [j["prediction"] for j in runs[0 if mode == "vanilla" else 2]["items"]] == [texts["q1"], texts["q2"]]

    # the saved answer is the library's answer to that question
    speech = load_speech_model(tiny_checkpoint_f32, device="cpu")
    speech.encoder, speech.decoder = speech_fakes.FakeEncoder(), speech_fakes.FakeDecoder()
    reply = real(speech, "turbo", max_new_tokens=16)(AudioItem("q2", tmp_path / "q2.wav", ""))
    assert reply.text == (out / "turbo" / "text" / "q2.txt").read_text()
    wav, _ = sf.read(str(out / "turbo" / "speech" / "q2.wav"), dtype="float32")
    np.testing.assert_allclose(wav, reply.wav, atol=1 / 32767 + 1e-6)

    r = runner.invoke(app, args)
    assert r.exit_code == 0 and len(asked) == 4
    cut = out / "turbo" / "speech" / "q1.wav"
    cut.write_bytes(cut.read_bytes()[:100])  # a speech answer cut short: that question is asked again
    r = runner.invoke(app, args)
    assert r.exit_code == 0 and asked[4:] == [("turbo", "q1.wav")] and is_complete_wav(cut)
    r = runner.invoke(app, [*args, "--hyp-text", str(out / "turbo" / "text")])
    assert r.exit_code == 1 and "drop --hyp-text" in r.stderr


def test_asr_set_transcribed_by_the_model(tmp_path, tiny_checkpoint_f32, codec_dirs):
    from vita_core.asr import transcribe

    data = tmp_path / "kaldi"
    data.mkdir()
    for i in range(2):
        sf.write(data / f"u{i}.wav", (0.2 * np.sin(np.arange(12000) / (3 + i))).astype(np.float32), 16000)
    sf.write(data / "u2.wav", np.zeros(400, np.float32), 16000)  # too short for one code: an empty transcript
    (data / "wav.scp").write_text("u0 u0.wav\nu1 u1.wav\nu2 u2.wav\n")
    (data / "text").write_text("u0 HELLO WORLD\nu1 TWENTY ONE\nu2 HI\n")
    args = ["eval", "asr", "--data", str(data), "--model", str(tiny_checkpoint_f32), "--tokenizer-dir",
            str(codec_dirs[0]), "--device", "cpu", "--out-dir", str(tmp_path / "o")]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    rows = [line.split("\t") for line in (tmp_path / "o" / "asr.tsv").read_text().splitlines()[1:]]
    speech = load_speech_model(tiny_checkpoint_f32, device="cpu")
    speech.encoder = speech_fakes.FakeEncoder()
    expected = [transcribe(speech, sf.read(str(data / f"u{i}.wav"), dtype="float32")[0], 16000).text for i in (0, 1)]
    assert [row[-1] for row in rows] == [*expected, ""]
    r = runner.invoke(app, [*args, "--hyp", str(data / "text")])
    assert r.exit_code == 1 and "exactly one of --asr-model" in r.stderr


def test_two_torchrun_processes_synthesize_what_one_does_and_resume(meta, tiny_checkpoint_f32, decoder_dir, whisper_pt,
                                                                    clean_speech_env, tmp_path):
    """A sampling checkpoint and the real tiny codec: two ranks resuming a cut run (two wavs kept, one cut short,
    one mode not started) give the wavs and the report of one uninterrupted process, byte for byte."""
    import shutil

    from launch import torchrun, vita

    from vita_core.tiny.glm4voice_tokenizer import build_tiny_glm4voice_tokenizer

    ckpt = shutil.copytree(tiny_checkpoint_f32, tmp_path / "sampling")
    (ckpt / "generation_config.json").write_text(json.dumps(
        {"do_sample": True, "temperature": 1.0, "top_k": 50, "eos_token_id": [151645, 151643], "pad_token_id": 151643,
         "mtp_inference_mode": [1, 10, 4, 10]}))
    enc = build_tiny_glm4voice_tokenizer(tmp_path / "glm-4-voice-tokenizer")
    with meta.open("a", encoding="utf-8") as f:
        f.write("d|p|prompts/a.wav|On and on.\n")
    args = ["eval", "seed-tts", "--meta", str(meta), "--model", str(ckpt), "--tokenizer-dir", str(enc),
            "--decoder-dir", str(decoder_dir), "--device", "cpu", "--max-new-tokens", "12", "--asr-model",
            str(whisper_pt), "--modes", "vanilla,boost"]
    one, two = tmp_path / "one", tmp_path / "two"
    run = vita([*args, "--out-dir", str(one)])
    assert run.returncode == 0, run.stderr[-3000:]
    wavs = sorted(p.relative_to(one) for p in one.rglob("*.wav"))
    assert len(wavs) == 8 and len({(one / w).read_bytes() for w in wavs}) == 8  # sampled: every output its own

    (two / "vanilla").mkdir(parents=True)
    for name in (".vita-run.json", "a.wav", "c.wav"):
        shutil.copy(one / "vanilla" / name, two / "vanilla" / name)
    (two / "vanilla" / "b.wav").write_bytes((one / "vanilla" / "b.wav").read_bytes()[:200])
    kept = (two / "vanilla" / "c.wav").stat().st_mtime_ns
    run = torchrun([*args, "--out-dir", str(two)])
    assert run.returncode == 0, run.stderr[-3000:]
    assert "synthesized 6 wavs" in run.stderr and run.stdout.count("Seed-TTS en") == 1  # rank 0 scores
    assert (two / "vanilla" / "c.wav").stat().st_mtime_ns == kept
    assert sorted(p.relative_to(two) for p in two.rglob("*.wav")) == wavs
    for path in [*wavs, "summary.tsv", "vanilla.tsv", "boost.tsv"]:
        assert (two / path).read_bytes() == (one / path).read_bytes(), path
    report = (two / "seed-tts.json").read_text().replace(str(two), str(one))
    assert json.loads(report) == json.loads((one / "seed-tts.json").read_text())
@pytest.mark.parametrize("case, message", [
    ("other settings", "boost holds outputs made with other settings (max_new_tokens, model)"),
    ("foreign files", "boost already holds files not made by vita eval --model"),
    ("dtype", "--dtype 'int8': choose auto"),
])
def test_folder_and_flag_errors_come_before_loading(seed_args, tmp_path, no_model_load, case, message):
    boost = tmp_path / "out" / "boost"
    boost.mkdir(parents=True)
    args = [*seed_args, "--modes", "vanilla,boost"]
    if case == "other settings":
        from vita_core.eval.model_runs import RUN_FILE, planned_settings

        settings = planned_settings(seed_args[seed_args.index("--model") + 1], "boost", 99, voice_prompt=True)
        (boost / RUN_FILE).write_text(json.dumps({**settings, "model": "/elsewhere"}))
    elif case == "foreign files":
        (boost / "a.wav").write_bytes(b"RIFF")
    else:
        args += ["--dtype", "int8"]
    r = runner.invoke(app, args)
    assert r.exit_code == 1
    assert message in r.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "out" / "vanilla").exists()  # nothing claimed before the failure


def test_sqa_and_asr_folder_and_flag_errors_come_before_loading(tmp_path, tiny_checkpoint_f32, codec_dirs,
                                                                 no_model_load):
    enc, dec = codec_dirs
    (tmp_path / "out" / "turbo").mkdir(parents=True)
    (tmp_path / "out" / "turbo" / "notes.txt").write_text("mine")
    r = runner.invoke(app, ["eval", "sqa", "--data", str(_questions(tmp_path)), "--model", str(tiny_checkpoint_f32),
                            "--tokenizer-dir", str(enc), "--decoder-dir", str(dec), "--device", "cpu", "--modes",
                            "turbo", "--out-dir", str(tmp_path / "out")])
    assert r.exit_code == 1 and "turbo already holds files not made by vita eval --model" in r.stderr
    data = tmp_path / "kaldi"
    data.mkdir()
    sf.write(data / "u0.wav", np.zeros(1600, np.float32), 16000)
    (data / "wav.scp").write_text("u0 u0.wav\n")
    (data / "text").write_text("u0 HELLO\n")
    r = runner.invoke(app, ["eval", "asr", "--data", str(data), "--model", str(tiny_checkpoint_f32), "--tokenizer-dir",
                            str(enc), "--device", "cpu", "--dtype", "fp8"])
    assert r.exit_code == 1 and "--dtype 'fp8': choose auto" in r.stderr
def test_full_disk_is_one_line_and_leaves_no_temp_file(seed_args, calls, full_disk):
    out = full_disk.folder / "out"
    args = [a if a != seed_args[-1] else str(out) for a in seed_args]
    full_disk.left = 20000
    r = runner.invoke(app, [*args, "--modes", "boost"])
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert r.stderr.strip().splitlines()[-1].startswith(f"error: cannot write {out}/")
    assert r.stderr.strip().endswith(": no space left on device; free some space or write elsewhere")
    assert {p.name for p in full_disk.folder.rglob(".*")} <= {".vita-run.json"}  # the run's settings, no temp file
