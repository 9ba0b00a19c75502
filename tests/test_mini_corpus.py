"""scripts/make_mini_corpus.py's text side: which fortunes become sentences, and a seeded, disjoint split."""

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "make_mini_corpus.py"
spec = importlib.util.spec_from_file_location("make_mini_corpus", SCRIPT)
corpus = importlib.util.module_from_spec(spec)
spec.loader.exec_module(corpus)


def test_clean_keeps_one_line_sentences_and_drops_attributions():
    assert corpus.clean("A bird in the hand is worth two in the bush.\n", 20, 160) == "A bird in the hand is worth two in the bush."
    assert corpus.clean("Never trust a computer you can't lift.\n\t\t-- Stan Mazor\n", 20, 160) == "Never trust a computer you can't lift."
    assert corpus.clean("Never trust a computer you can't lift. -- Stan Mazor", 20, 160) == "Never trust a computer you can't lift."
    assert corpus.clean("Two lines of verse,\nand a second one here.", 20, 160) is None
    assert corpus.clean("There are 10 kinds of people in the world.", 20, 160) is None
    assert corpus.clean("Short one.", 20, 160) is None
    assert corpus.clean("Caf\xe9 society is a strange place to be.", 20, 160) is None
    assert corpus.clean("x" * 30 + " " + "y" * 200, 20, 160) is None


def test_selection_is_seeded_and_held_out_sentences_never_train(tmp_path):
    lines = [f"Sentence number {w} is a fine thing to say." for w in ("one two three four five six seven eight nine ten "
                                                                     "eleven twelve thirteen fourteen fifteen").split()]
    (tmp_path / "sayings").write_text("\n%\n".join(lines + ["A bad\nmulti-line one here, far too long."]) + "\n%\n")
    rows = corpus.select(20, 160, 4, seed=3, folder=tmp_path)
    assert rows == corpus.select(20, 160, 4, seed=3, folder=tmp_path)
    assert rows != corpus.select(20, 160, 4, seed=4, folder=tmp_path)
    held = {t for _, s, t in rows if s == "heldout"}
    train = {t for _, s, t in rows if s == "train"}
    assert len(held) == 4 and len(train) == 11 and not held & train
    assert [u for u, _, _ in rows[:4]] == [f"heldout_{n:05d}" for n in range(4)]


def test_more_sentences_train_only_and_leave_the_held_out_set_as_it_was(tmp_path, monkeypatch):
    lines = [f"Sentence number {w} is a fine thing to say." for w in "one two three four five six seven eight".split()]
    story = "He walked in. The bar was quiet that night.\nNobody spoke to him at all.\n\t-- Anon"
    dialogue = "Man: Where is the station, please?\nWoman: Over there, by the old tree."
    (tmp_path / "sayings").write_text("\n%\n".join(lines + [story, dialogue]) + "\n%\n")
    plain = corpus.select(20, 160, 3, seed=3, folder=tmp_path)
    held = [t for _, s, t in plain if s == "heldout"]
    monkeypatch.setattr(corpus, "docstring_sentences", lambda lo, hi: {
        "Return the sum of the two numbers given.",
        f"Note: {held[0].lower()}",  # holds a held-out sentence: dropped
    })
    rows = corpus.select(20, 160, 3, seed=3, more=True, folder=tmp_path)
    assert rows[: len(plain)] == plain
    more = {t for u, s, t in rows[len(plain):] if u.startswith("more_") and s == "train"}
    assert more == {"The bar was quiet that night.", "Nobody spoke to him at all.",
                    "Return the sum of the two numbers given."}
    assert len(rows) == len(plain) + len(more)
    assert corpus.sentences_of("Call foo_bar() before using the URL. It is a fine day to go out.", 20, 160) == [
        "It is a fine day to go out."]


def test_shards_counted_from_one_make_every_sentence_once():
    items = list(range(11))
    halves = items[corpus.parse_shard("1/2")], items[corpus.parse_shard("2/2")]
    assert sorted(halves[0] + halves[1]) == items  # README's `--shard 1/2` and `--shard 2/2` used to skip item 0
    assert items[corpus.parse_shard("1/1")] == items
    assert [items[corpus.parse_shard(f"{k}/3")] for k in (1, 2, 3)] == [[0, 3, 6, 9], [1, 4, 7, 10], [2, 5, 8]]
    for bad in ("0/2", "3/2", "2", "a/b"):
        with pytest.raises(SystemExit, match="expected K/N with 1 <= K <= N"):
            corpus.parse_shard(bad)


def test_noise_settings_reach_piper_and_a_corpus_never_mixes_two(tmp_path, monkeypatch):
    calls = []

    def fake_piper(argv, **kwargs):
        calls.append(argv)
        out = Path(argv[argv.index("-d") + 1])
        out.mkdir()
        for n, _ in enumerate(Path(argv[argv.index("-i") + 1]).read_text().splitlines()):
            (out / f"{n}.wav").write_bytes(b"RIFF")

    monkeypatch.setattr(corpus.subprocess, "run", fake_piper)
    (tmp_path / "wavs").mkdir()
    voice = {"noise_scale": 0.0, "noise_w": 0.0}
    corpus.check_voice(tmp_path, voice)
    corpus.synthesize([("a", "train", "One line."), ("b", "train", "Two lines.")], tmp_path / "wavs", "joe.onnx", voice)
    assert calls[0][-4:] == ["--noise-scale", "0.0", "--noise-w-scale", "0.0"]
    assert sorted(p.name for p in (tmp_path / "wavs").iterdir()) == ["a.wav", "b.wav"]
    corpus.check_voice(tmp_path, {"noise_scale": 0.0, "noise_w": 0.0})  # resuming with the same settings
    with pytest.raises(SystemExit, match="pass the same --noise-scale/--noise-w or choose another --out"):
        corpus.check_voice(tmp_path, {"noise_scale": 0.667, "noise_w": 0.8})
    old = tmp_path / "old"
    (old / "wavs").mkdir(parents=True)
    (old / "wavs" / "x.wav").write_bytes(b"RIFF")  # a corpus made before voice.json: piper's defaults
    with pytest.raises(SystemExit, match="made with {'noise_scale': 0.667, 'noise_w': 0.8}"):
        corpus.check_voice(old, {"noise_scale": 0.0, "noise_w": 0.0})
    assert not (old / "voice.json").exists()


def test_python_docs_sentences_come_last_and_leave_every_earlier_id_as_it_was(tmp_path):
    lines = [f"Sentence number {w} is a fine thing to say." for w in "one two three four five six seven eight".split()]
    (tmp_path / "sayings").write_text("\n%\n".join(lines) + "\n%\n")
    plain = corpus.select(20, 160, 3, seed=3, folder=tmp_path)
    held = [t for _, s, t in plain if s == "heldout"]
    docs = tmp_path / "html"
    (docs / "library").mkdir(parents=True)
    (docs / "_sources").mkdir()
    (docs / "library" / "heapq.html").write_text(
        "<html><body><h1>heapq</h1><p>Heaps are binary trees for which every parent node is small. "
        "Call <code>heap_push()</code> to add one.</p><pre>x = 1. Not prose at all here.</pre>"
        f"<p>As we said: {held[0]}</p><p>{lines[5]}</p></body></html>")
    (docs / "_sources" / "heapq.html").write_text("<p>The reST source is never read here.</p>")
    (docs / "index.html").write_text("<p>Welcome to the documentation of this fine language.</p>")
    rows = corpus.select(20, 160, 3, seed=3, folder=tmp_path, python_docs=docs)
    assert rows[: len(plain)] == plain
    added = rows[len(plain):]
    assert {t for _, _, t in added} == {"Heaps are binary trees for which every parent node is small.",
                                        "Welcome to the documentation of this fine language."}
    assert sorted(u for u, _, _ in added) == ["doc_00000", "doc_00001"] and {s for _, s, _ in added} == {"train"}


def test_a_killed_batch_leaves_no_folder_behind_once_rerun(tmp_path):
    import subprocess
    import sys

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    stale = tmp_path / f"piper-{gone.pid}-abc"
    live = tmp_path / f"piper-{corpus.os.getpid()}-def"  # another --shard process still at work
    for folder in (stale, live):
        (folder / "out").mkdir(parents=True)
    (tmp_path / "a.wav").write_bytes(b"RIFF")
    assert corpus.remove_stale_batches(tmp_path) == [stale]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["a.wav", live.name])
