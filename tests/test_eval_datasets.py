"""List formats: Seed-TTS meta.lst, pair TSVs, hypothesis files, LibriSpeech and Kaldi folders, SQA jsonl."""

import json

import numpy as np
import pytest
import soundfile as sf

from vita_core.errors import AudioError, InputError
from vita_core.eval.datasets import (
    read_asr_set,
    read_hypotheses,
    read_pairs_tsv,
    read_seedtts_meta,
    read_sqa_jsonl,
)
from vita_core.eval.wavs import read_16k, write_wav


def test_seedtts_meta_field_counts(tmp_path):
    meta = tmp_path / "en" / "meta.lst"
    meta.parent.mkdir()
    meta.write_text(
        "a|prompt a|prompt-wavs/a.wav|Target A.\n"
        "b|prompt b|/abs/b.wav|Target B|wavs/b.wav\n"
        "c|Only text  \n"
        "d.wav|Text D|prompt-wavs/d.wav\n\n",
        encoding="utf-8",
    )
    items = read_seedtts_meta(meta)
    assert [(i.id, i.text) for i in items] == [
        ("a", "Target A."),
        ("b", "Target B"),
        ("c", "Only text"),
        ("d", "Text D"),
    ]
    assert items[0].prompt_wav == meta.parent / "prompt-wavs" / "a.wav"
    assert str(items[1].prompt_wav) == "/abs/b.wav"
    assert items[2].prompt_wav is None


def test_seedtts_meta_errors(tmp_path):
    bad = tmp_path / "bad.lst"
    bad.write_text("a|b|c|d|e|f\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"bad.lst:1: expected 2 to 5"):
        read_seedtts_meta(bad)
    dup = tmp_path / "dup.lst"
    dup.write_text("a|x\na|y\n", encoding="utf-8")
    with pytest.raises(InputError, match="'a' appears twice"):
        read_seedtts_meta(dup)
    with pytest.raises(InputError, match="file not found"):
        read_seedtts_meta(tmp_path / "nope.lst")


def test_pairs_tsv_keeps_empty_hypothesis_and_rejects_bad_lines(tmp_path):
    p = tmp_path / "pairs.tsv"
    p.write_text("u1\tHello there\thello\nu2\tWorld\t\n", encoding="utf-8")
    pairs = read_pairs_tsv(p)
    assert [(x.id, x.reference, x.hypothesis) for x in pairs] == [("u1", "Hello there", "hello"), ("u2", "World", "")]
    p.write_text("u1\tno hypothesis column\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"pairs.tsv:1: expected 3 tab-separated fields"):
        read_pairs_tsv(p)


def test_hypothesis_file_forms(tmp_path):
    p = tmp_path / "hyp.txt"
    p.write_text("1 hello world\n2\n3\ttab text\n", encoding="utf-8")
    assert read_hypotheses(p) == {"1": "hello world", "2": "", "3": "tab text"}


def _tone(path, sr=16000, n=1600):
    sf.write(path, (0.1 * np.sin(np.arange(n) / 5)).astype(np.float32), sr)


def test_librispeech_and_kaldi_folders(tmp_path):
    chapter = tmp_path / "ls" / "1089" / "134686"
    chapter.mkdir(parents=True)
    (chapter / "1089-134686.trans.txt").write_text("1089-134686-0000 HE HOPED\n1089-134686-0001 STUFF IT\n")
    _tone(chapter / "1089-134686-0000.flac")
    _tone(chapter / "1089-134686-0001.flac")
    items = read_asr_set(tmp_path / "ls")
    assert [(i.id, i.text, i.audio.name) for i in items] == [
        ("1089-134686-0000", "HE HOPED", "1089-134686-0000.flac"),
        ("1089-134686-0001", "STUFF IT", "1089-134686-0001.flac"),
    ]
    kaldi = tmp_path / "kaldi"
    kaldi.mkdir()
    _tone(kaldi / "x.wav")
    (kaldi / "wav.scp").write_text("utt1 x.wav\n")
    (kaldi / "text").write_text("utt1 你好 世界\n")
    assert [(i.id, i.text, i.audio) for i in read_asr_set(kaldi)] == [("utt1", "你好 世界", kaldi / "x.wav")]
    (kaldi / "wav.scp").write_text("utt1 sox x.flac -t wav - |\n")
    with pytest.raises(InputError, match="piped commands are not supported"):
        read_asr_set(kaldi)
    sphinx = tmp_path / "sphinx"  # pocketsphinx-testdata's own layout (fileids + transcription) is neither
    sphinx.mkdir()
    (sphinx / "fileids").write_text("a\n")
    with pytest.raises(InputError, match="no wav.scp; give a LibriSpeech-style folder or a Kaldi folder"):
        read_asr_set(sphinx)


def test_sqa_jsonl_both_forms(tmp_path):
    p = tmp_path / "q.jsonl"
    rows = [
        {
            "messages": [
                {"role": "user", "content": "<|audio|>"},
                {"role": "assistant", "content": ["Paris", "paris france"]},
            ],
            "audios": ["audio/q17.wav"],
        },
        {"id": "x", "audio": "/abs/x.wav", "answers": "blue"},
    ]
    p.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    items = read_sqa_jsonl(p)
    assert [(i.id, i.text, i.audio) for i in items] == [
        ("q17", ["Paris", "paris france"], tmp_path / "audio" / "q17.wav"),
        ("x", "blue", tmp_path.joinpath("/abs/x.wav")),
    ]
    p.write_text('{"audio": "a.wav"}\n')
    with pytest.raises(InputError, match=r"q.jsonl:1: expected"):
        read_sqa_jsonl(p)


def test_read_16k_resamples_first_channel_and_rejects_garbage(tmp_path):
    stereo = np.stack([np.ones(22050, np.float32) * 0.5, np.zeros(22050, np.float32)], axis=1)
    sf.write(tmp_path / "s.wav", stereo, 22050)
    wav = read_16k(tmp_path / "s.wav")
    assert wav.dtype == np.float32 and len(wav) == 16000
    assert abs(float(wav[8000]) - 0.5) < 1e-3
    write_wav(tmp_path / "e.wav", np.zeros(0), 22050)
    assert read_16k(tmp_path / "e.wav").size == 0
    (tmp_path / "bad.wav").write_bytes(b"not audio")
    with pytest.raises(AudioError, match="bad.wav: cannot read audio"):
        read_16k(tmp_path / "bad.wav")
