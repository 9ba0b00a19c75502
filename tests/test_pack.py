"""`vita pack`: the reference's interleaved layout, labels, determinism, losslessness, the trainer's reader."""

import json
import pickle
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml
from typer.testing import CliRunner

from tests.datakit import StandInEncoder, make_tiny_prepared, write_tone
from vita_core.data.pack import Renderer, pack, plan_packs
from vita_core.data.packed import PackedDataset, position_ids
from vita_core.data.prepare import gather, prepare
from vita_core.data.prepared import PreparedSet
from vita_core.data.recipe import load_recipe, parse_recipe, select
from vita_core.errors import DiskFullError, InputError
from vita_core.schedule import BALANCE_RATIO, BOOST_RATIO, interleave
from vita_core.tokens import layout_from_tokenizer

TINY = Path(__file__).parent.parent / "recipes" / "data" / "tiny.yaml"
B, E = -1, -2  # stand-ins for <|begin_of_audio|>, <|end_of_audio|>


def T(a, b):
    return [f"t{i}" for i in range(a, b)]


def A(a, b):
    return [f"a{i}" for i in range(a, b)]


@pytest.mark.parametrize(
    "n_text,n_audio,ratio,expected",
    [
        # Boost `1 10 4 10`: T1 [B+8+E] T4 [B+8+E] ..., the last chunk takes what is left of both.
        (10, 30, BOOST_RATIO, [*T(0, 1), B, *A(0, 8), E, *T(1, 5), B, *A(8, 16), E, *T(5, 9), B, *A(16, 24), E, *T(9, 10), B, *A(24, 30), E]),
        (6, 40, BOOST_RATIO, [*T(0, 1), B, *A(0, 8), E, *T(1, 5), B, *A(8, 16), E, *T(5, 6), B, *A(16, 40), E]),
        (20, 10, BOOST_RATIO, [*T(0, 1), B, *A(0, 8), E, *T(1, 20), B, *A(8, 10), E]),
        # Balance `1 4 3 8 4 10`: T1 [B+2+E] T3 [B+6+E] T4 [B+8+E] T4 [B+8+E] ...
        (12, 30, BALANCE_RATIO, [*T(0, 1), B, *A(0, 2), E, *T(1, 4), B, *A(2, 8), E, *T(4, 8), B, *A(8, 16), E, *T(8, 12), B, *A(16, 30), E]),
        (16, 40, BALANCE_RATIO, [*T(0, 1), B, *A(0, 2), E, *T(1, 4), B, *A(2, 8), E, *T(4, 8), B, *A(8, 16), E, *T(8, 12), B, *A(16, 24), E, *T(12, 16), B, *A(24, 40), E]),
        (3, 1, BALANCE_RATIO, [*T(0, 3), B, *A(0, 1), E]),
        # Text only, or audio only: unchanged.
        (5, 0, BOOST_RATIO, T(0, 5)),
        (0, 7, BOOST_RATIO, [B, *A(0, 7), E]),
    ],
)
def test_interleave_matches_reference_layout(n_text, n_audio, ratio, expected):
    assert interleave(T(0, n_text), A(0, n_audio), ratio, B, E) == expected


def test_tts_answer_repeats_text_then_interleaves(tmp_path, tokenizer):
    """A TTS sample packed with Boost and Balance, token for token, labels included."""
    lay = layout_from_tokenizer(tokenizer)
    wav = write_tone(tmp_path / "a.wav", 2.0, 300)
    (tmp_path / "l.txt").write_text("a.wav\tthe answer is\n")
    enc = StandInEncoder()
    prepare(gather([(tmp_path / "l.txt", "list")], ("tts",)), tmp_path / "p", tokenizer, enc, "standin", tmp_path / "c")
    codes = [lay.audio_offset + c for c in enc.encode(sf.read(str(wav), dtype="float32")[0], 16000)]
    text = tokenizer.encode("the answer is", add_special_tokens=False)
    assert (len(text), len(codes)) == (10, 25)
    t, a, b, e = text, codes, lay.begin_of_audio, lay.end_of_audio
    nl = tokenizer.encode("\n", add_special_tokens=False)
    head = tokenizer.encode("<|im_start|>user\nConvert the text to speech.\nthe answer is<|im_end|>\n<|im_start|>assistant\n", add_special_tokens=False)
    layouts = {
        "1 10 4 10": [*t[:1], b, *a[:8], e, *t[1:5], b, *a[8:16], e, *t[5:9], b, *a[16:24], e, *t[9:], b, *a[24:], e],
        "1 4 3 8 4 10": [*t[:1], b, *a[:2], e, *t[1:4], b, *a[2:8], e, *t[4:8], b, *a[8:16], e, *t[8:], b, *a[16:], e],
    }
    for ratio, answer in layouts.items():
        recipe = parse_recipe({"seq_len": 256, "ratio": [int(x) for x in ratio.split()], "sources": {"s": {"paths": ["p"]}}}, tmp_path)
        pack(recipe, tmp_path / ratio, overwrite=True)
        item = PackedDataset(tmp_path / ratio)[0]
        n = len(head) + len(answer) + 1 + len(nl)
        assert item["seq_lens"].tolist() == [n]
        assert item["input_ids"][:n].tolist() == head + answer + [lay.im_end, *nl]
        assert item["labels"][:n].tolist() == [-100] * len(head) + answer + [lay.im_end, *nl]
        assert item["input_ids"][n:].eq(lay.endoftext).all() and item["labels"][n:].eq(-100).all()


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory, tokenizer):
    return make_tiny_prepared(tmp_path_factory.mktemp("tiny"), tokenizer)


def _assistant_mask(ids, header, im_end, nl):
    """Independent of the packer: positions after `<|im_start|>assistant\\n` up to and including `<|im_end|>\\n`."""
    mask = np.zeros(len(ids), dtype=bool)
    i = 0
    while i < len(ids):
        if ids[i : i + len(header)] == header:
            end = ids.index(im_end, i + len(header))
            mask[i + len(header) : end + 1 + len(nl)] = True
            i = end
        i += 1
    return mask


def test_labels_are_ignored_exactly_outside_answers(tiny_root, tokenizer):
    lay = layout_from_tokenizer(tokenizer)
    nl = tokenizer.encode("\n", add_special_tokens=False)
    header = [lay.im_start, *tokenizer.encode("assistant", add_special_tokens=False), *nl]
    pack(load_recipe(TINY, tiny_root), tiny_root / "packed")
    ds = PackedDataset(tiny_root / "packed")
    checked = 0
    for item in ds:
        ids, labels = item["input_ids"].tolist(), item["labels"].numpy()
        start = 0
        for n in item["seq_lens"].tolist():
            mask = _assistant_mask(ids[start : start + n], header, lay.im_end, nl)
            assert mask.any()
            np.testing.assert_array_equal(labels[start : start + n][~mask], -100)
            np.testing.assert_array_equal(labels[start : start + n][mask], np.array(ids[start : start + n])[mask])
            start += n
            checked += 1
        assert (labels[start:] == -100).all()
    assert checked == ds.manifest["samples"] > 0


def test_same_seed_same_bytes_and_nothing_lost(tiny_root, tokenizer):
    recipe = load_recipe(TINY, tiny_root)
    first = pack(recipe, tiny_root / "a", seq_len=96, packs_per_shard=4, window=8)
    pack(recipe, tiny_root / "b", seq_len=96, packs_per_shard=4, window=8)
    pack(recipe, tiny_root / "c", seq_len=96, packs_per_shard=4, window=8, seed=7)
    files = sorted(p.name for p in (tiny_root / "a").iterdir())
    assert len(first.shards) > 1 and files == sorted(p.name for p in (tiny_root / "b").iterdir())
    for name in files:
        assert (tiny_root / "a" / name).read_bytes() == (tiny_root / "b" / name).read_bytes()
    assert [(tiny_root / "c" / n).read_bytes() for n in files] != [(tiny_root / "a" / n).read_bytes() for n in files]

    # Every selected sample lands in exactly one pack, laid out as the renderer lays it out alone,
    # or is reported as too long; real tokens in == real tokens out.
    sets = {name: PreparedSet(tiny_root / "prepared" / name) for name in ("tiny-pairs", "tiny-sqa", "tiny-text")}
    sizes = {n: len(s) for n, s in sets.items()}
    assert first.samples + len(first.too_long) == sizes["tiny-pairs"] + 2 * sizes["tiny-sqa"] + 3
    assert first.per_source == {"asr-tts": sizes["tiny-pairs"], "speech-qa": 2 * sizes["tiny-sqa"], "text": 3}
    renderer = Renderer(sets["tiny-pairs"].layout, recipe.ratio)
    ds = PackedDataset(tiny_root / "a")
    folders = [Path(f["path"]).name for f in ds.manifest["folders"]]
    contents = [m for shard in ds.manifest["shards"] for m in _load_json(tiny_root / "a" / f"{shard['name']}.json")["packs"]]
    seen, out_tokens = [], 0
    for item, members in zip(ds, contents):
        start = 0
        assert len(members) == len(item["seq_lens"])
        for (folder, sample_id), n in zip(members, item["seq_lens"].tolist()):
            pset = sets[folders[folder]]
            ref = next(r for r in pset.samples if r.id == sample_id)
            tokens, labels = renderer.render(pset.ids(ref), ref.assistant)
            assert item["input_ids"][start : start + n].tolist() == tokens.tolist()
            assert item["labels"][start : start + n].tolist() == labels.tolist()
            assert renderer.length(pset.ids(ref), ref.assistant) == n
            seen.append((folders[folder], sample_id))
            start += n
        out_tokens += start
    assert out_tokens == first.real_tokens
    assert first.real_tokens + sum(t["tokens"] for t in first.too_long) == first.input_tokens
    assert first.too_long and all(t["tokens"] > 96 for t in first.too_long)
    names = {"asr-tts": "tiny-pairs", "speech-qa": "tiny-sqa", "text": "tiny-text"}
    counts = Counter(seen) + Counter((names[t["source"]], t["id"]) for t in first.too_long)
    assert all(counts[("tiny-pairs", r.id)] == 1 for r in sets["tiny-pairs"].samples)
    assert all(counts[("tiny-sqa", r.id)] == 2 for r in sets["tiny-sqa"].samples)
    assert sum(n for (f, _), n in counts.items() if f == "tiny-text") == 3
    assert max(n for (f, _), n in counts.items() if f == "tiny-text") == 1


def _load_json(path):
    return json.loads(path.read_text())


def test_plan_packs_is_valid_and_tight():
    rng = np.random.default_rng(0)
    lengths = np.concatenate([rng.integers(50, 400, 3000), rng.integers(1000, 4000, 300), [9000, 8192]])
    packs, too_long = plan_packs(lengths, 8192, window=500, max_open=64)
    flat = sorted(i for p in packs for i in p)
    assert flat == [i for i in range(len(lengths)) if lengths[i] <= 8192] and too_long == [len(lengths) - 2]
    assert all(lengths[p].sum() <= 8192 for p in packs)
    padding = 1 - lengths[flat].sum() / (len(packs) * 8192)
    assert padding < 0.025
    # next-fit in the same order, the reference's strategy, needs more packs
    naive, used = 1, 0
    for n in lengths[lengths <= 8192]:
        if used + n > 8192:
            naive, used = naive + 1, 0
        used += n
    assert len(packs) < naive


def test_packed_dataset_items(tiny_root):
    pack(load_recipe(TINY, tiny_root), tiny_root / "ds", seq_len=512)
    ds = PackedDataset(tiny_root / "ds")
    item = ds[-1]
    assert set(item) == {"input_ids", "labels", "position_ids", "seq_lens"}
    assert all(v.dtype == torch.int64 for v in item.values())
    assert item["input_ids"].shape == item["labels"].shape == item["position_ids"].shape == (512,)
    lens = item["seq_lens"].tolist()
    expected = [p for n in lens for p in range(n)] + list(range(512 - sum(lens)))
    assert item["position_ids"].tolist() == expected
    assert position_ids(np.array([3, 2]), 5).tolist() == [0, 1, 2, 0, 1]
    with pytest.raises(IndexError):
        ds[len(ds)]
    copy = pickle.loads(pickle.dumps(ds))
    assert len(pickle.dumps(ds)) < 10000 and copy[0]["input_ids"].tolist() == ds[0]["input_ids"].tolist()


def test_recipe_selection_and_errors(tmp_path):
    folder, index = select([(2.0, None, 3), (0.5, None, 4), (1.0, 1, 5)], seed=1)
    pairs = sorted(zip(folder.tolist(), index.tolist()))
    assert [i for f, i in pairs if f == 0] == [0, 0, 1, 1, 2, 2]
    assert len([i for f, i in pairs if f == 1]) == 2 and len([i for f, i in pairs if f == 2]) == 1
    again = select([(2.0, None, 3), (0.5, None, 4), (1.0, 1, 5)], seed=1)
    assert folder.tolist() == again[0].tolist() and index.tolist() == again[1].tolist()
    with pytest.raises(InputError, match="selects no samples"):
        select([(0.0, None, 3)], seed=1)
    with pytest.raises(InputError, match="needs a 'sources'"):
        parse_recipe({"seq_len": 8}, tmp_path)
    with pytest.raises(InputError, match="unknown keys"):
        parse_recipe({"sources": {"s": {"paths": ["x"], "weight": 2}}}, tmp_path)
    with pytest.raises(InputError, match="not found"):
        pack(parse_recipe({"sources": {"s": {"paths": ["missing"]}}}, tmp_path), tmp_path / "o")
    assert not (tmp_path / "o").exists()  # a recipe that cannot be packed leaves no empty --out behind
    for name in ("stage1-3.yaml", "stage4.yaml"):
        recipe = load_recipe(TINY.parent / name, tmp_path)
        assert recipe.ratio == (1, 10, 4, 10) and len(recipe.folders()) > 10
    assert load_recipe(TINY.parent / "stage4.yaml").seq_len == 2048
    stage4 = {s.name: s for s in load_recipe(TINY.parent / "stage4.yaml").sources}
    assert stage4["gpt-omni/VoiceAssistant-400K"].ratio == 2.0 and stage4["goat"].cap == 30000


def test_cli_pack(tiny_root):
    from vita_cli.main import app

    runner = CliRunner()
    args = ["pack", str(TINY), "--root", str(tiny_root), "--out", str(tiny_root / "cli"), "--ratio", "1 4 3 8 4 10"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "padding" in result.output and "samples/s" in result.output
    assert PackedDataset(tiny_root / "cli").manifest["ratio"] == [1, 4, 3, 8, 4, 10]
    result = runner.invoke(app, args)
    assert result.exit_code == 1 and "is not empty" in result.output
    bad = tiny_root / "bad.yaml"
    bad.write_text(yaml.safe_dump({"sources": {"s": {"paths": ["prepared/tiny-text"], "ratio": -1}}}))
    result = runner.invoke(app, ["pack", str(bad), "--root", str(tiny_root), "--out", str(tiny_root / "x")])
    assert result.exit_code == 1 and "ratio must be a number >= 0" in result.output


def _snapshot(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_overwrite_on_a_full_disk_keeps_the_old_complete_set(tiny_root, full_disk):
    recipe = load_recipe(TINY, tiny_root)
    out = full_disk.folder / "packed"
    full_disk.left = 10**9
    pack(recipe, out, seq_len=96, packs_per_shard=4, window=8)
    before = _snapshot(out)
    used = sum(len(b) for b in before.values())
    full_disk.left = used // 3  # room for a few shards of the new set, not for all of them
    with pytest.raises(DiskFullError) as err:
        pack(recipe, out, seq_len=96, packs_per_shard=4, window=8, seed=7, overwrite=True)
    assert str(err.value) == f"cannot write {out}: no space left on device; free some space or write elsewhere"
    assert _snapshot(out) == before
    assert sorted(p.name for p in full_disk.folder.iterdir()) == ["packed"]  # no staging folder left
    full_disk.left = 10**9
    pack(recipe, out, seq_len=96, packs_per_shard=4, window=8, seed=7, overwrite=True)
    assert _snapshot(out) != before and PackedDataset(out).manifest["seed"] == 7
    assert sorted(p.name for p in full_disk.folder.iterdir()) == ["packed"]
