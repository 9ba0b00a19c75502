"""`vita prepare`: importers, validation report, code cache, resumption, CLI."""

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from tests.datakit import StandInEncoder, write_tone
from vita_core.data.cache import file_digest
from vita_core.data.importers import read_input
from vita_core.data.prepare import gather, prepare
from vita_core.data.prepared import PreparedSet
from vita_core.data.tasks import Record, Skip
from vita_core.errors import DiskFullError, InputError
from vita_core.tokens import layout_from_tokenizer


def _records(items):
    return {i.id: i for i in items}


def test_pair_importers_give_reference_prompts(tmp_path):
    ls = tmp_path / "LibriSpeech" / "19" / "198"
    ls.mkdir(parents=True)
    (ls / "19-198.trans.txt").write_text("19-198-0000 NORTHANGER ABBEY\n19-198-0001 CHAPTER  ONE\n")
    tts = tmp_path / "LibriTTS" / "84" / "121"
    tts.mkdir(parents=True)
    (tts / "84_121_000001.normalized.txt").write_text("Hello there.")
    kaldi = tmp_path / "kaldi"
    kaldi.mkdir()
    (kaldi / "wav.scp").write_text("u1 /data/u1.wav\nu2 wavs/u2.wav\n")
    (kaldi / "text").write_text("u1 good morning\nu2 \n")
    cv = tmp_path / "cv"
    cv.mkdir()
    (cv / "train.tsv").write_text("client_id\tpath\tsentence\tup_votes\nc1\tcommon_voice_en_1.mp3\tA \"quoted\" line.\t2\n")

    got = _records(read_input(tmp_path / "LibriSpeech", tasks=("asr", "tts")))
    assert got["asr/19-198-0000"].messages == [
        {"role": "user", "content": "Convert the speech to text.\n<|audio|>"},
        {"role": "assistant", "content": "NORTHANGER ABBEY"},
    ]
    assert got["tts/19-198-0001"].messages == [
        {"role": "user", "content": "Convert the text to speech.\nCHAPTER ONE"},
        {"role": "assistant", "content": "<|audio|>"},
    ]
    assert got["asr/19-198-0001"].audios == [ls / "19-198-0001.flac"]
    got = _records(read_input(tmp_path / "LibriTTS"))
    assert got["asr/84_121_000001"].audios == [tts / "84_121_000001.wav"]
    assert got["asr/84_121_000001"].messages[1]["content"] == "Hello there."
    got = _records(read_input(kaldi))
    assert got["asr/u1"].audios == [Path("/data/u1.wav")]
    assert got["asr/u2"] == Skip("asr/u2", "empty_text", f"{kaldi / 'wavs/u2.wav'}: the transcript is empty")
    got = _records(read_input(cv / "train.tsv"))
    assert got["asr/common_voice_en_1"].audios == [cv / "clips" / "common_voice_en_1.mp3"]
    assert got["asr/common_voice_en_1"].messages[1]["content"] == 'A "quoted" line.'


def test_jsonl_rows_and_invalid_rows(tmp_path):
    rows = [
        '{"messages": [{"role": "human", "content": "<|audio|>"}, {"role": "gpt", "content": "Hi.<|audio|>"}], "audios": ["q.wav", "/abs/a.wav"]}',
        "not json",
        '{"messages": [{"role": "user", "content": "<|audio|>"}, {"role": "assistant", "content": "x"}], "audios": []}',
        '{"messages": [{"role": "narrator", "content": "x"}]}',
        '{"messages": [{"role": "user", "content": "hi"}]}',
    ]
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(rows) + "\n")
    items = list(read_input(path))
    assert isinstance(items[0], Record)
    assert items[0].messages[0] == {"role": "user", "content": "<|audio|>"}
    assert items[0].audios == [tmp_path / "q.wav", Path("/abs/a.wav")]
    assert [(i.reason, i.detail.split(": ", 1)[1]) for i in items[1:]] == [
        ("invalid", "not JSON (Expecting value)"),
        ("invalid", "1 <|audio|> placeholders but 0 audios"),
        ("invalid", "each message needs a role (user, assistant, system) and text content"),
        ("invalid", "no assistant message to learn from"),
    ]


@pytest.fixture()
def corpus(tmp_path):
    audio = tmp_path / "audio"
    for n in range(6):
        write_tone(audio / f"a{n}.wav", 0.6 + 0.2 * n, 180 + 30 * n)
    write_tone(audio / "long.wav", 3.0, 500)
    (audio / "broken.wav").write_bytes(b"RIFF not really a wave file")
    lines = [
        "audio/a0.wav\thello world",
        "audio/a1.wav\tthe answer",
        "audio/gone.wav\tmissing file",
        "audio/broken.wav\tcannot decode",
        "audio/a2.wav\t   ",
        "audio/long.wav\ttoo long audio",
        "audio/a3.wav\t" + "word " * 300,
        "audio/a4.wav\tthen on",
        "audio/a5.wav\tin the end",
    ]
    (tmp_path / "list.txt").write_text("\n".join(lines) + "\n")
    rows = [
        {"messages": [{"role": "user", "content": "<|audio|>"}, {"role": "assistant", "content": "Yes.<|audio|><|audio|>"}],
         "audios": ["audio/a0.wav", "audio/a1.wav", "audio/a4.wav"]},
        {"messages": [{"role": "user", "content": "Convert the text to speech.\n "}, {"role": "assistant", "content": "<|audio|>"}],
         "audios": ["audio/a1.wav"]},
        {"messages": [{"role": "user", "content": "Tell me"}, {"role": "assistant", "content": "the answer"}]},
    ]
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + "{broken\n")
    return tmp_path


def _run(corpus, tokenizer, out, cache, encoder=None, codec="standin", **kw):
    items = gather([(corpus / "list.txt", "auto"), (corpus / "rows.jsonl", "auto")], ("asr", "tts"))
    encoder = encoder or StandInEncoder()
    kw = {"max_seconds": 2.0, "max_tokens": 600, "shard_size": 4, "batch_size": 2, "workers": 2, **kw}
    return prepare(items, out, tokenizer, encoder, codec, cache, **kw), encoder


def test_report_lists_every_bad_sample(corpus, tokenizer):
    report, _ = _run(corpus, tokenizer, corpus / "out", corpus / "cache")
    reasons = {s.id: s.reason for s in report.skipped}
    assert reasons == {
        "asr/list:3": "missing", "tts/list:3": "missing",
        "asr/list:4": "unreadable", "tts/list:4": "unreadable",
        "asr/list:5": "empty_text", "tts/list:5": "empty_text",
        "asr/list:6": "too_long", "tts/list:6": "too_long",  # 3 s of audio > --max-seconds 2
        "asr/list:7": "too_long", "tts/list:7": "too_long",  # 300 words > --max-tokens 600
        "rows:1": "invalid",  # two audio spans in one answer
        "rows:2": "empty_text",  # TTS request without text
        "rows:4": "invalid",  # not JSON
    }
    assert report.written == 2 * 4 + 1 and report.kinds == {"asr": 4, "text": 1, "tts": 4}
    assert report.by_reason == {"missing": 2, "unreadable": 2, "too_long": 4, "empty_text": 3, "invalid": 2}
    assert "more than --max-tokens 600" in next(s.detail for s in report.skipped if s.id == "asr/list:7")
    saved = json.loads((corpus / "out" / "report.json").read_text())
    assert saved == report.to_json()
    assert len(PreparedSet(corpus / "out")) == report.written


def test_tokens_codes_and_content_addressed_cache(corpus, tokenizer):
    report, encoder = _run(corpus, tokenizer, corpus / "out", corpus / "cache")
    lay = layout_from_tokenizer(tokenizer)
    pset = PreparedSet(corpus / "out")
    refs = {r.id: r for r in pset.samples}
    codes = encoder.encode(_read(corpus / "audio" / "a1.wav"), 16000)
    code_text = "".join(f"<|audio_{c}|>" for c in codes)
    assert tokenizer.decode(pset.ids(refs["tts/list:2"])) == (
        "<|im_start|>user\nConvert the text to speech.\nthe answer<|im_end|>\n"
        f"<|im_start|>assistant\nthe answer<|begin_of_audio|>{code_text}<|end_of_audio|><|im_end|>\n"
    )
    ids = pset.ids(refs["asr/list:2"])
    (start, end), = refs["asr/list:2"].assistant
    assert tokenizer.decode(ids[start:end]) == "the answer" and ids[end] == lay.im_end
    cached = np.load(corpus / "cache" / "standin" / file_digest(corpus / "audio" / "a1.wav")[:2] / f"{file_digest(corpus / 'audio' / 'a1.wav')}.npy")
    assert cached.tolist() == codes.tolist()
    assert sorted(p.name for p in (corpus / "audio").iterdir()) == [f"a{n}.wav" for n in range(6)] + ["broken.wav", "long.wav"]
    again, encoder2 = _run(corpus, tokenizer, corpus / "out2", corpus / "cache")
    assert encoder2.encoded == 0 and again.cached == report.encoded + report.cached
    assert _folder_bytes(corpus / "out2") == _folder_bytes(corpus / "out")


def test_equal_audio_content_is_encoded_once(tmp_path, tokenizer):
    write_tone(tmp_path / "a.wav", 1.0, 220)
    (tmp_path / "copy.wav").write_bytes((tmp_path / "a.wav").read_bytes())
    (tmp_path / "bad.wav").write_bytes(b"junk")
    (tmp_path / "bad2.wav").write_bytes(b"junk")
    (tmp_path / "l.txt").write_text("a.wav\tone\ncopy.wav\ttwo\nbad.wav\tthree\nbad2.wav\tfour\n")
    encoder = StandInEncoder()
    report = prepare(gather([(tmp_path / "l.txt", "list")]), tmp_path / "out", tokenizer, encoder, "standin", tmp_path / "cache")
    assert encoder.encoded == 1 and report.encoded == 1 and report.cached == 1
    pset = PreparedSet(tmp_path / "out")
    first, second = (pset.ids(r) for r in pset.samples)
    offset = layout_from_tokenizer(tokenizer).audio_offset
    assert first[first >= offset].tolist() == second[second >= offset].tolist() and len(first[first >= offset]) == 12
    assert [s.detail.split(":")[0] for s in report.skipped] == [str(tmp_path / "bad.wav"), str(tmp_path / "bad2.wav")]


def _read(path):
    import soundfile as sf

    return sf.read(str(path), dtype="float32")[0]


def _folder_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


class _Stop(Exception):
    pass


@pytest.mark.parametrize("stage,when", [("audio", 3), ("samples", 8)])
def test_interrupted_prepare_resumes_to_the_same_result(corpus, tokenizer, stage, when):
    whole, first = _run(corpus, tokenizer, corpus / "whole", corpus / "cache-whole")

    def stop(name, done, total):
        if name == stage and done >= when:
            raise _Stop

    with pytest.raises(_Stop):
        _run(corpus, tokenizer, corpus / "part", corpus / "cache", progress=stop)
    with pytest.raises(InputError, match="did not finish"):
        PreparedSet(corpus / "part")
    done_before = len(list((corpus / "cache").rglob("*.npy")))
    assert 0 < done_before < first.encoded
    resumed, second = _run(corpus, tokenizer, corpus / "part", corpus / "cache")
    assert second.encoded == first.encoded - done_before
    assert _folder_bytes(corpus / "part") == _folder_bytes(corpus / "whole")
    assert resumed.to_json() == whole.to_json()


def test_out_folder_of_another_run_is_refused(corpus, tokenizer):
    _run(corpus, tokenizer, corpus / "out", corpus / "cache")
    with pytest.raises(InputError, match="already holds other data"):
        _run(corpus, tokenizer, corpus / "out", corpus / "cache", max_tokens=4000)
    report, _ = _run(corpus, tokenizer, corpus / "out", corpus / "cache", max_tokens=4000, overwrite=True)
    assert "asr/list:7" in {r.id for r in PreparedSet(corpus / "out").samples}
    assert report.by_reason["too_long"] == 2


def test_cli_prepare_and_errors(corpus, tokenizer_dir, monkeypatch):
    import vita_core.codec
    from vita_cli.main import app

    monkeypatch.setattr(vita_core.codec, "load_encoder", lambda folder, name, **kw: StandInEncoder(), raising=False)
    runner = CliRunner()
    args = ["prepare", str(corpus / "list.txt"), "--task", "asr", "--model", str(tokenizer_dir), "--codec", "standin",
            "--codec-dir", str(corpus), "--cache-dir", str(corpus / "cache"), "--out", str(corpus / "out"), "--max-seconds", "2"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "asr/list:3: missing" in result.output and "report.json" in result.output
    assert len(PreparedSet(corpus / "out")) == 5
    result = runner.invoke(app, args[:1] + [str(corpus / "nope.txt")] + args[2:])
    assert result.exit_code == 1 and "nope.txt does not exist" in result.output
    (corpus / "empty.txt").write_text("")
    result = runner.invoke(app, args[:1] + [str(corpus / "empty.txt")] + args[2:])
    assert result.exit_code == 1 and "found no samples" in result.output
    result = runner.invoke(app, args + ["--task", "sing"])
    assert result.exit_code == 1 and "unknown task" in result.output


def test_prepare_follows_the_tokenizers_codebook(tmp_path, small_tokenizer, tokenizer):
    """A 1000-code tokenizer takes a 1000-code encoder's codes; a codebook that differs is refused up front."""
    write_tone(tmp_path / "a.wav", 1.0, 220)
    (tmp_path / "l.txt").write_text("a.wav\tone\n")
    items = gather([(tmp_path / "l.txt", "list")])
    encoder = StandInEncoder(1000)
    prepare(items, tmp_path / "out", small_tokenizer, encoder, "standin", tmp_path / "cache")
    pset = PreparedSet(tmp_path / "out")
    assert pset.layout["num_codes"] == 1000 and pset.layout["audio_offset"] == 342
    ids = pset.ids(pset.samples[0])
    audio = ids[ids >= 342]
    assert audio.tolist() == (342 + encoder.encode(_read(tmp_path / "a.wav"), 16000)).tolist() and audio.max() < 1342
    with pytest.raises(InputError, match="the standin speech tokenizer has 16384 codes but the tokenizer has 1000 "
                                         "audio tokens; use the tokenizer built for this codec"):
        prepare(items, tmp_path / "out2", small_tokenizer, StandInEncoder(), "standin", tmp_path / "cache")
    assert not (tmp_path / "out2").exists()


def test_code_cache_keeps_codes_beyond_int16(tmp_path):
    from vita_core.data.cache import CodeCache

    cache = CodeCache(tmp_path, "big")
    cache.put("ab" * 32, np.array([0, 32767, 40000, 65535]))
    cache.put("cd" * 32, np.array([0, 16383]))
    assert cache.get("ab" * 32).tolist() == [0, 32767, 40000, 65535]
    assert np.load(tmp_path / "big" / "cd" / f"{'cd' * 32}.npy").dtype == np.int16


def test_two_torchrun_processes_write_the_shards_of_one_and_resume(corpus, tokenizer_dir, tokenizer, tmp_path_factory):
    """Each rank encodes every other shard into the shared cache and folder; the shards and report equal a
    one-process run byte for byte, and a run cut after some shards (what a kill leaves) resumes to it."""
    from launch import torchrun, vita

    from vita_core.codec import load_encoder
    from vita_core.tiny.glm4voice_tokenizer import build_tiny_glm4voice_tokenizer

    codec_dir = build_tiny_glm4voice_tokenizer(tmp_path_factory.mktemp("codec") / "glm-4-voice-tokenizer")
    args = ["prepare", str(corpus / "list.txt"), str(corpus / "rows.jsonl"), "--task", "asr", "--task", "tts",
            "--model", str(tokenizer_dir), "--codec-dir", str(codec_dir), "--max-seconds", "2", "--max-tokens", "600",
            "--shard-size", "4", "--batch-size", "2", "--workers", "2"]
    run = vita([*args, "--cache-dir", str(corpus / "cache-one"), "--out", str(corpus / "one")])
    assert run.returncode == 0, run.stderr[-3000:]
    run = torchrun([*args, "--cache-dir", str(corpus / "cache"), "--out", str(corpus / "two")])
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count("prepared ") == 1 and "written" in run.stdout  # rank 0 reports, rank 1 is quiet
    assert _folder_bytes(corpus / "two") == _folder_bytes(corpus / "one")
    one = json.loads((corpus / "one" / "report.json").read_text())
    assert len(one["skipped"]) == 13 and PreparedSet(corpus / "two").manifest["shards"] == 6

    # a killed run: shards 3-5 (of both ranks) unfinished, the manifest not complete, no report
    manifest = json.loads((corpus / "two" / "manifest.json").read_text())
    (corpus / "two" / "manifest.json").write_text(json.dumps({**manifest, "complete": False}))
    (corpus / "two" / "report.json").unlink()
    for path in (p for k in (3, 4, 5) for p in (corpus / "two").glob(f"shard-0000{k}.*")):
        path.unlink()
    encoder = load_encoder(codec_dir)
    resumed, _ = _run(corpus, tokenizer, corpus / "two", corpus / "cache", encoder=encoder, codec="glm4voice")
    assert resumed.encoded == 0 and resumed.to_json() == one  # every code came from the shared cache
    assert _folder_bytes(corpus / "two") == _folder_bytes(corpus / "one")
@pytest.mark.parametrize("where", ["out", "cache"])
def test_full_disk_is_one_error_no_temp_and_the_rerun_finishes(corpus, tokenizer, full_disk, where):
    whole, _ = _run(corpus, tokenizer, corpus / "whole", corpus / "cache-whole")
    out = full_disk.folder / "out" if where == "out" else corpus / "out"
    cache = full_disk.folder / "cache" if where == "cache" else corpus / "cache"
    full_disk.left = 3000 if where == "out" else 400
    with pytest.raises(DiskFullError, match=r"cannot write .*: no space left on device; free some space"):
        _run(corpus, tokenizer, out, cache)
    assert not [p for p in full_disk.folder.rglob(".*")]  # no hidden temp files
    full_disk.left = 10**9
    resumed, _ = _run(corpus, tokenizer, out, cache)
    assert _folder_bytes(out) == _folder_bytes(corpus / "whole") and resumed.to_json() == whole.to_json()


@pytest.mark.parametrize("keep", [20, -3])  # the header cut (numpy: "EOF"), or the codes
def test_a_corrupt_cache_entry_is_re_encoded_and_reported(corpus, tokenizer_dir, monkeypatch, keep):
    import vita_core.codec
    from vita_cli.main import app

    monkeypatch.setattr(vita_core.codec, "load_encoder", lambda folder, name, device="cpu": StandInEncoder(), raising=False)
    args = ["prepare", str(corpus / "list.txt"), "--task", "asr", "--model", str(tokenizer_dir), "--codec", "standin",
            "--codec-dir", str(corpus), "--cache-dir", str(corpus / "cache"), "--max-seconds", "2"]
    runner = CliRunner(env={"COLUMNS": "200"})
    assert runner.invoke(app, [*args, "--out", str(corpus / "first")]).exit_code == 0
    entry = corpus / "cache" / "standin" / (d := file_digest(corpus / "audio" / "a1.wav"))[:2] / f"{d}.npy"
    entry.write_bytes(entry.read_bytes()[:keep])  # cut short, as by a failing disk or copy
    result = runner.invoke(app, [*args, "--out", str(corpus / "second")])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("re-encoded")]
    assert len(lines) == 1
    assert lines[0].startswith(f"re-encoded {corpus / 'audio' / 'a1.wav'}: its cache entry {entry} was corrupt (")
    report = json.loads((corpus / "second" / "report.json").read_text())
    assert [(r["audio"], r["entry"]) for r in report["cache_repaired"]] == [(str(corpus / "audio" / "a1.wav"), str(entry))]
    assert "audio  4 encoded" not in result.output and "1 encoded, 4 from cache" in result.output
    first, second = PreparedSet(corpus / "first"), PreparedSet(corpus / "second")
    assert [first.ids(r).tolist() for r in first.samples] == [second.ids(r).tolist() for r in second.samples]
    assert np.load(entry).dtype == np.int16  # written again
