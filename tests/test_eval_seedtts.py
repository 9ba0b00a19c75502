"""The Seed-TTS runner with injected synthesis and a scripted ASR: resumability, statuses, baseline deltas."""

import numpy as np
import pytest

from vita_core.eval.datasets import MetaItem
from vita_core.eval.seedtts import run_seed_tts, synthesize_missing


class ScriptedASR:
    """Returns the text whose index is the audio's length in samples / 1600 (so each wav 'says' something known)."""

    name = "scripted-whisper"
    language = "en"
    texts = ["", "hello world", "hello word", "goodbye"]

    def transcribe(self, audios, progress=None):
        out = [self.texts[round(len(a) / 1600)] for a in audios]
        if progress:
            progress(len(out), len(out))
        return out


def test_synthesis_is_resumable_and_scored_per_mode(tmp_path):
    items = [
        MetaItem("u1", "Hello, world!", "", None),
        MetaItem("u2", "Goodbye.", "", tmp_path / "p.wav"),
        MetaItem("u3", "Hello world", "", None),
    ]
    calls = []
    say = {
        ("u1", "vanilla"): 1,
        ("u2", "vanilla"): 3,
        ("u3", "vanilla"): 2,
        ("u1", "boost"): 2,
        ("u2", "boost"): 0,
        ("u3", "boost"): 1,
    }

    def synthesize(batch, mode):
        calls.extend((item.id, mode) for item in batch)
        return [(np.full(1600 * say[item.id, mode], 0.1, np.float32), 16000) for item in batch]

    dirs = synthesize_missing(items[:2], tmp_path / "out", ["vanilla", "boost"], synthesize)
    assert calls == [("u1", "vanilla"), ("u2", "vanilla"), ("u1", "boost"), ("u2", "boost")]
    dirs = synthesize_missing(items, tmp_path / "out", ["vanilla", "boost"], synthesize)
    assert calls[4:] == [("u3", "vanilla"), ("u3", "boost")]  # finished utterances are not redone
    assert dirs == {"vanilla": tmp_path / "out" / "vanilla", "boost": tmp_path / "out" / "boost"}

    stages = []
    report = run_seed_tts(
        items,
        {"boost": dirs["boost"], "vanilla": dirs["vanilla"]},
        ScriptedASR(),
        "en",
        progress=lambda s, d, t: stages.append(s),
    )
    assert stages == ["asr boost", "asr vanilla"]
    assert report.baseline.mode == "vanilla"
    boost, vanilla = report.results
    assert [u.wer for u in vanilla.score.utterances] == [0.0, 0.0, 0.5]
    assert [u.status for u in boost.score.utterances] == ["ok", "empty", "ok"]  # u2 produced no audio
    assert [u.wer for u in boost.score.utterances] == [0.5, None, 0.0]
    assert vanilla.score.mean == pytest.approx(1 / 6)
    assert report.delta(boost) == pytest.approx(0.25 - 1 / 6)
    assert report.to_dict()["modes"][0]["empty"] == 1


class Killed(Exception):
    pass


def test_missing_lines_go_in_batches_and_a_killed_run_keeps_finished_batches(tmp_path):
    from vita_core.errors import InputError
    from vita_core.eval.wavs import is_complete_wav

    items = [MetaItem(f"u{n}", f"line {n}", "", None) for n in range(7)]
    batches, steps, kill = [], [], [3]

    def synthesize(batch, mode):
        batches.append((mode, [i.id for i in batch]))
        if len(batches) in kill:
            raise Killed  # the process dies while the third batch is being made
        return [(np.full(1600 * (int(i.id[1:]) + 1), 0.1, np.float32), 16000) for i in batch]

    out = tmp_path / "out"
    with pytest.raises(Killed):
        synthesize_missing(items, out, ["boost"], synthesize, batch_size=3)
    assert batches == [("boost", ["u0", "u1", "u2"]), ("boost", ["u3", "u4", "u5"]), ("boost", ["u6"])]
    assert sorted(p.name for p in (out / "boost").iterdir()) == [f"u{n}.wav" for n in range(6)]  # no temp file
    assert all(is_complete_wav(out / "boost" / f"u{n}.wav") for n in range(6))
    (out / "boost" / "u1.wav").write_bytes(b"RIFF")  # a broken one is redone with the rest
    batches.clear()
    kill.clear()
    synthesize_missing(items, out, ["boost", "turbo"], synthesize, lambda *a: steps.append(a), batch_size=4)
    assert batches == [("boost", ["u1", "u6"]), ("turbo", ["u0", "u1", "u2", "u3"]), ("turbo", ["u4", "u5", "u6"])]
    assert steps[:2] == [("synthesize boost", 1, 2), ("synthesize boost", 2, 2)]
    assert [s[1:] for s in steps[2:]] == [(n, 7) for n in range(1, 8)]
    assert all(is_complete_wav(out / m / f"u{n}.wav") for m in ("boost", "turbo") for n in range(7))
    with pytest.raises(InputError, match="--synth-batch 0 must be at least 1"):
        synthesize_missing(items, out, ["boost"], synthesize, batch_size=0)


def test_transcribe_files_reads_in_chunks_and_reports_statuses(tmp_path):
    from vita_core.eval.transcribe import transcribe_files
    from vita_core.eval.wavs import write_wav

    lengths = {"a": 1, "b": 2, "c": 0, "d": 3}
    for name, n in lengths.items():
        write_wav(tmp_path / f"{name}.wav", np.full(1600 * n, 0.1, np.float32), 16000)
    batches, seen = [], []

    class Recorder(ScriptedASR):
        def transcribe(self, audios, progress=None):
            batches.append(len(audios))
            return super().transcribe(audios)

    paths = {k: tmp_path / f"{k}.wav" for k in [*lengths, "e"]}
    texts, status = transcribe_files(Recorder(), paths, lambda d, t: seen.append((d, t)), chunk=2)
    assert texts == {"a": "hello world", "b": "hello word", "d": "goodbye"}
    assert status == {"e": "missing", "c": "empty"}
    assert batches == [2, 1] and seen == [(2, 4), (4, 4)]


def test_mode_names_must_be_file_names(tmp_path):
    from vita_core.errors import InputError

    items = [MetaItem("u1", "hi", "", None)]
    for bad in ("summary", "a/b", ""):
        with pytest.raises(InputError, match="mode name"):
            run_seed_tts(items, {bad: tmp_path}, ScriptedASR(), "en")
