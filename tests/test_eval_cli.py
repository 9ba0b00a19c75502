"""`vita eval ...` end to end: generated wavs, a tiny Whisper checkpoint, the table, TSV and JSON files."""

import json

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from vita_cli.main import app
from vita_core.eval.asr import load_transcriber
from vita_core.eval.datasets import read_seedtts_meta
from vita_core.eval.scoring import Pair, score_seedtts
from vita_core.eval.wavs import read_16k, write_wav

runner = CliRunner(env={"COLUMNS": "200"})  # wide enough that Rich tables do not wrap names


def _wav(path, seconds, seed):
    rng = np.random.default_rng(seed)
    t = np.arange(int(22050 * seconds)) / 22050
    write_wav(path, 0.3 * np.sin(2 * np.pi * (200 + 50 * seed) * t) + 0.05 * rng.standard_normal(t.size), 22050)


@pytest.fixture()
def seedtts_set(tmp_path):
    meta = tmp_path / "meta.lst"
    meta.write_text(
        "a|p|prompt-wavs/a.wav|Hello, world.\n"
        "b|p|prompt-wavs/b.wav|Doesn’t it rain?\n"
        "c|p|prompt-wavs/c.wav|A well-known fact.\n"
        "d|p|prompt-wavs/d.wav|Twenty one.\n",
        encoding="utf-8",
    )
    for i, utt in enumerate("abc"):
        _wav(tmp_path / "vanilla" / f"{utt}.wav", 0.5 + 0.2 * i, i)
    _wav(tmp_path / "boost" / "a.wav", 0.6, 7)
    _wav(tmp_path / "boost" / "b.wav", 0.4, 8)
    write_wav(tmp_path / "boost" / "c.wav", np.zeros(0), 22050)  # produced no audio
    return meta


def test_score_json_on_hand_worked_pairs(tmp_path):
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text(
        "u1\tDoesn’t it?\tdoesn't it\nu2\tfive\tsix\nu3\tone two three four\tone two three four\n", encoding="utf-8"
    )
    result = runner.invoke(
        app, ["eval", "score", "--protocol", "seed-tts", "--lang", "en", "--pairs", str(pairs), "--json"]
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["mean"] == pytest.approx(0.5)  # (0.5 + 1 + 0) / 3
    assert out["pooled"] == pytest.approx(2 / 7)
    assert out["utterances"][0] == {
        "id": "u1",
        "wer": 0.5,
        "substitutions": 1,
        "deletions": 0,
        "insertions": 0,
        "ref_len": 2,
    }
    table = runner.invoke(app, ["eval", "score", "--protocol", "wer", "--lang", "en", "--pairs", str(pairs)])
    assert (
        table.exit_code == 0 and "WER (wenet compute-wer)" in table.stdout and "EnglishTextNormalizer" in table.stdout
    )


@pytest.mark.parametrize("header", ["id\treference\thypothesis\n", "utt\tref\thyp\n"])
def test_score_skips_a_header_row(tmp_path, header):
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text(header + "u1\tfive\tsix\nu2\tone two\tone two\n", encoding="utf-8")
    result = runner.invoke(app, ["eval", "score", "--pairs", str(pairs), "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert [u["id"] for u in out["utterances"]] == ["u1", "u2"]  # the header is not an utterance
    assert out["mean"] == pytest.approx(0.5)


def test_score_empty_reference_fails_in_one_line(tmp_path):
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("u1\t?!\thello\n", encoding="utf-8")
    result = runner.invoke(app, ["eval", "score", "--pairs", str(pairs)])
    assert result.exit_code == 1
    assert "reference of 'u1' is empty after Seed-TTS normalisation" in result.output
    assert "Traceback" not in result.output


def test_seed_tts_end_to_end(tmp_path, seedtts_set, whisper_pt):
    out = tmp_path / "report"
    args = [
        "eval",
        "seed-tts",
        "--meta",
        str(seedtts_set),
        "--wav-dir",
        f"vanilla={tmp_path / 'vanilla'}",
        "--wav-dir",
        f"boost={tmp_path / 'boost'}",
        "--asr-model",
        str(whisper_pt),
        "--out-dir",
        str(out),
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "vs vanilla" in result.stdout and "boost" in result.stdout and "left out of the mean" in result.stdout
    assert sorted(p.name for p in out.iterdir()) == ["boost.tsv", "seed-tts.json", "summary.tsv", "vanilla.tsv"]

    report = json.loads((out / "seed-tts.json").read_text())
    assert (report["metric"], report["baseline"], report["missing_as_error"]) == ("WER", "vanilla", False)
    vanilla, boost = report["modes"]
    assert (vanilla["n"], vanilla["scored"], vanilla["missing"], vanilla["empty"]) == (4, 3, 1, 0)
    assert (boost["n"], boost["scored"], boost["missing"], boost["empty"]) == (4, 2, 1, 1)
    assert [u["status"] for u in boost["utterances"]] == ["ok", "ok", "empty", "missing"]

    # the numbers are the scorer's on the transcripts of the same audio
    items = read_seedtts_meta(seedtts_set)
    asr = load_transcriber(whisper_pt, "en")
    for mode in (vanilla, boost):
        ok = [u for u in mode["utterances"] if u["status"] == "ok"]
        hyps = asr.transcribe([read_16k(tmp_path / mode["mode"] / f"{u['id']}.wav") for u in ok])
        assert [u["hypothesis"] for u in ok] == hyps
        expected = score_seedtts(
            [Pair(u["id"], next(i.text for i in items if i.id == u["id"]), h) for u, h in zip(ok, hyps)], "en"
        )
        assert [u["wer"] for u in ok] == [e.wer for e in expected.utterances]
        assert mode["mean"] == pytest.approx(expected.mean)
    assert boost["delta_vs_baseline"] == pytest.approx(boost["mean"] - vanilla["mean"])

    summary = (out / "summary.tsv").read_text().splitlines()
    assert summary[0].split("\t") == ["mode", "n", "scored", "missing", "empty", "WER %", "vs vanilla", "pooled WER %"]
    assert summary[1].split("\t")[:5] == ["vanilla", "4", "3", "1", "0"]
    assert summary[1].split("\t")[5] == str(round(vanilla["mean"] * 100, 3))
    rows = (out / "boost.tsv").read_text().splitlines()
    assert rows[0].startswith("id\tstatus\twer") and rows[3].startswith("c\tempty\t\t") and len(rows) == 5

    result = runner.invoke(app, args + ["--missing-as-error"])
    assert result.exit_code == 0, result.output
    boost = json.loads((out / "seed-tts.json").read_text())["modes"][1]
    assert boost["scored"] == 4
    assert [u["wer"] for u in boost["utterances"][2:]] == [1.0, 1.0]


def test_seed_tts_bad_inputs_fail_cleanly(tmp_path, seedtts_set, whisper_pt):
    result = runner.invoke(
        app,
        [
            "eval",
            "seed-tts",
            "--meta",
            str(seedtts_set),
            "--wav-dir",
            str(tmp_path / "nowhere"),
            "--asr-model",
            str(whisper_pt),
            "--out-dir",
            str(tmp_path / "o"),
        ],
    )
    assert result.exit_code == 1 and "nowhere: wav folder not found" in result.output
    result = runner.invoke(
        app,
        [
            "eval",
            "seed-tts",
            "--meta",
            str(seedtts_set),
            "--wav-dir",
            f"x={tmp_path}",
            "--wav-dir",
            f"x={tmp_path}",
            "--asr-model",
            str(whisper_pt),
        ],
    )
    assert result.exit_code == 1 and "distinct name" in result.output


def test_asr_command_with_model_and_with_hypotheses(tmp_path, whisper_pt):
    data = tmp_path / "kaldi"
    data.mkdir()
    for i in range(2):
        sf.write(data / f"u{i}.wav", (0.2 * np.sin(np.arange(8000) / (3 + i))).astype(np.float32), 16000)
    (data / "wav.scp").write_text("u0 u0.wav\nu1 u1.wav\n")
    (data / "text").write_text("u0 HELLO WORLD\nu1 TWENTY ONE APPLES\n")
    hyp = tmp_path / "hyp.txt"
    hyp.write_text("u0 hello, world\n")
    result = runner.invoke(
        app, ["eval", "asr", "--data", str(data), "--hyp", str(hyp), "--out-dir", str(tmp_path / "o")]
    )
    assert result.exit_code == 0, result.output
    wenet, whisper_norm = json.loads((tmp_path / "o" / "asr.json").read_text())
    assert (wenet["name"], wenet["pooled"], wenet["missing"]) == ("WER (wenet compute-wer)", 0.5, 1)  # HELLO, != HELLO
    assert whisper_norm["pooled"] == 0.0
    result = runner.invoke(
        app,
        ["eval", "asr", "--data", str(data), "--hyp", str(hyp), "--missing-as-error", "--out-dir", str(tmp_path / "o")],
    )
    assert json.loads((tmp_path / "o" / "asr.json").read_text())[0]["pooled"] == 4 / 5
    result = runner.invoke(app, ["eval", "asr", "--data", str(data), "--asr-model", str(whisper_pt)])
    assert result.exit_code == 0, result.output
    assert "WER (wenet compute-wer)" in result.stdout
    result = runner.invoke(app, ["eval", "asr", "--data", str(data)])
    assert result.exit_code == 1 and "exactly one of --asr-model" in result.output


def test_sqa_command(tmp_path, whisper_pt):
    data = tmp_path / "q.jsonl"
    rows = [
        {"id": "q1", "audio": "q1.wav", "answers": ["Paris"]},
        {"id": "q2", "audio": "q2.wav", "answers": "three"},
        {"id": "q3", "audio": "q3.wav", "answers": "art"},
    ]
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    text = tmp_path / "text.txt"
    text.write_text("q1 It is Paris.\nq2 There are 3.\nq3 I started it.\n")
    speech = tmp_path / "speech"
    _wav(speech / "q1.wav", 0.5, 1)
    result = runner.invoke(
        app,
        [
            "eval",
            "sqa",
            "--data",
            str(data),
            "--hyp-text",
            str(text),
            "--speech-dir",
            str(speech),
            "--asr-model",
            str(whisper_pt),
            "--out-dir",
            str(tmp_path / "o"),
        ],
    )
    assert result.exit_code == 0, result.output
    s2t, s2s = json.loads((tmp_path / "o" / "sqa.json").read_text())
    assert (s2t["stream"], s2t["contain"], s2t["exact"], s2t["missing"]) == ("S->T text", 1.0, pytest.approx(2 / 3), 0)
    assert (s2s["stream"], s2s["missing"]) == ("S->S transcript", 2)
    result = runner.invoke(app, ["eval", "sqa", "--data", str(data)])
    assert result.exit_code == 1 and "nothing to score" in result.output


def test_seed_tts_chinese_with_paraformer(tmp_path):
    from vita_core.tiny.whisper import build_paraformer

    para = build_paraformer(tmp_path / "para")
    meta = tmp_path / "zh" / "meta.lst"
    meta.parent.mkdir()
    meta.write_text(
        "10002287-00000095|提示|prompt-wavs/10002287-00000094.wav|你好，世界。\n"
        "10002287-00000096|提示|prompt-wavs/10002287-00000095.wav|今天天气很好\n",
        encoding="utf-8",
    )
    _wav(tmp_path / "vanilla" / "10002287-00000095.wav", 0.8, 3)
    out = tmp_path / "report"
    result = runner.invoke(
        app,
        [
            "eval",
            "seed-tts",
            "--meta",
            str(meta),
            "--wav-dir",
            str(tmp_path / "vanilla"),
            "--asr-model",
            str(para),
            "--lang",
            "zh",
            "--out-dir",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "CER %" in result.stdout
    report = json.loads((out / "seed-tts.json").read_text())
    assert (report["metric"], report["baseline"]) == ("CER", "vanilla")
    mode = report["modes"][0]
    assert (mode["scored"], mode["missing"]) == (1, 1)
    hyp = load_transcriber(para, "zh").transcribe([read_16k(tmp_path / "vanilla" / "10002287-00000095.wav")])[0]
    expected = score_seedtts([Pair("x", "你好，世界。", hyp)], "zh").utterances[0]
    assert mode["utterances"][0]["wer"] == expected.wer and mode["utterances"][0]["ref_len"] == 4
