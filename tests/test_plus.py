"""VITA-Audio-Plus: the checkpoint's SenseVoice encoder and projector, feature slots, and the speech commands."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.torch import load_file, save_file
from transformers import Qwen2ForCausalLM
from typer.testing import CliRunner

pytest.importorskip("funasr")

from reference_engine import reference_generate  # noqa: E402
from vita_cli.main import app  # noqa: E402
from vita_core.codec.sensevoice.plus_audio import fill_audio_context, load_plus_audio  # noqa: E402
from vita_core.codec.sensevoice.encoder import NO_DITHER, PLUS_ENCODER_PREFIX, PLUS_PROJECTOR_PREFIX  # noqa: E402
from vita_core.tiny.sensevoice import build_tiny_plus_checkpoint, build_tiny_sensevoice  # noqa: E402
from vita_core.errors import CheckpointError, InputError  # noqa: E402
from vita_core.generate import generate_ids  # noqa: E402
from vita_core.model.checkpoint import hf_config, load_model  # noqa: E402
from vita_core.schedule import BOOST_RATIO, Layout, get_mode  # noqa: E402
from vita_core.speech import load_speech_model  # noqa: E402
from vita_core.tokens import AudioContext, Message  # noqa: E402

runner = CliRunner()
LIBRIVOX = Path("/usr/share/pocketsphinx/test/data/librivox")
SENTENCES = ["sense_and_sensibility_01_austen_64kb-0880.wav", "sense_and_sensibility_01_austen_64kb-0930.wav"]


@pytest.fixture(scope="module")
def sv_dir(tmp_path_factory):
    return build_tiny_sensevoice(tmp_path_factory.mktemp("sv") / "SenseVoiceSmall")


@pytest.fixture(scope="module")
def plus_dir(tmp_path_factory, sv_dir):
    """A Plus checkpoint beside its SenseVoice folder (found through --sensevoice-dir)."""
    return build_tiny_plus_checkpoint(tmp_path_factory.mktemp("plus") / "VITA-Audio-Plus-Boost", sv_dir)


@pytest.fixture(scope="module")
def plus_carrying_dir(tmp_path_factory, sv_dir):
    """A Plus checkpoint carrying SenseVoice's config files itself, upstream's layout: no flag needed."""
    return build_tiny_plus_checkpoint(tmp_path_factory.mktemp("plus_carry") / "VITA-Audio-Plus-Vanilla", sv_dir,
                                      carry_sensevoice_config=True)


@pytest.fixture(scope="module")
def speech(plus_dir, sv_dir):
    return load_speech_model(plus_dir, device="cpu", need_encoder=True, sensevoice_dir=sv_dir)


def saved_tensors(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def sentence(i: int = 0) -> np.ndarray:
    return sf.read(str(LIBRIVOX / SENTENCES[i]), dtype="float32")[0]


def test_checkpoint_loads_key_for_key(plus_dir, sv_dir, speech):
    saved = saved_tensors(plus_dir)
    audio = {k for k in saved if k.startswith(("model.audio_model.", "model.audio_projection."))}
    assert {k for k in audio if k.startswith(PLUS_PROJECTOR_PREFIX)} == {
        PLUS_PROJECTOR_PREFIX + n for n in ("pre_proj_layernorm.weight", "pre_proj_layernorm.bias",
                                            "mlp.0.weight", "mlp.2.weight")}
    assert set(speech.model.state_dict()) == set(saved) - audio
    encoder = speech.plus_audio.encoder.model.state_dict()
    assert {PLUS_ENCODER_PREFIX + k for k in encoder} == {k for k in audio if k.startswith(PLUS_ENCODER_PREFIX)}
    for name, tensor in encoder.items():  # the checkpoint's copy, not the SenseVoice folder's model.pt
        torch.testing.assert_close(tensor, saved[PLUS_ENCODER_PREFIX + name], rtol=0, atol=0)
    folder_weights = torch.load(sv_dir / "model.pt", weights_only=True)
    assert not torch.equal(folder_weights["embed.weight"], encoder["embed.weight"])
    for name, tensor in speech.plus_audio.projector.state_dict().items():
        torch.testing.assert_close(tensor, saved[PLUS_PROJECTOR_PREFIX + name], rtol=0, atol=0)
    assert speech.tokens.audio_offset == 151686 and speech.tokens.context_of_audio == 151676
    assert speech.encoder is None  # Plus hears features: no GLM-4-Voice tokenizer is loaded


def damaged(plus_dir: Path, tmp_path: Path, edit) -> Path:
    folder = tmp_path / "damaged"
    shutil.copytree(plus_dir, folder)
    state = saved_tensors(folder)
    edit(state)
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    return folder


def test_damaged_audio_weights_are_named(plus_dir, sv_dir, tmp_path):
    def drop_projector(state):
        for k in [k for k in state if k.startswith(PLUS_PROJECTOR_PREFIX)]:
            del state[k]

    folder = damaged(plus_dir, tmp_path, drop_projector)
    with pytest.raises(CheckpointError, match=r"says model_type qwen2_mtp_sensevoice but its weights hold no "
                                              r"model\.audio_projection\.\* tensors"):
        load_model(folder)
    shutil.rmtree(folder)
    folder = damaged(plus_dir, tmp_path, lambda s: s.pop(PLUS_ENCODER_PREFIX + "ctc.ctc_lo.weight"))
    with pytest.raises(CheckpointError, match=r"model\.audio_model\.model\.\* tensors does not match the model: "
                                              r"missing \['ctc\.ctc_lo\.weight'\]"):
        load_plus_audio(folder, sv_dir, 64)
    shutil.rmtree(folder)
    folder = damaged(plus_dir, tmp_path, lambda s: s.update({"model.audio_model.extra": torch.zeros(1)}))
    with pytest.raises(CheckpointError, match=r"holds audio tensors vita does not know \(model\.audio_model\.extra\)"):
        load_plus_audio(folder, sv_dir, 64)


@pytest.mark.parametrize("language", ["auto", "en"])
def test_features_are_funasr_encoder_output_through_the_projector(plus_dir, sv_dir, speech, language):
    """Independent path: funasr's own inference with the checkpoint's encoder weights, captured at the
    encoder output, then the projector written out by hand from the saved tensors."""
    from funasr import AutoModel

    saved = saved_tensors(plus_dir)
    auto = AutoModel(model=str(sv_dir), device="cpu", disable_update=True, disable_pbar=True, ncpu=1,
                     frontend_conf=NO_DITHER)
    auto.model.load_state_dict({k[len(PLUS_ENCODER_PREFIX):]: v for k, v in saved.items()
                                if k.startswith(PLUS_ENCODER_PREFIX)}, strict=True)
    captured = []
    auto.model.encoder.register_forward_hook(lambda m, i, o: captured.append(o[0].detach().clone()))
    wav = sentence(0)
    auto.generate(input=wav, language=language, use_itn=False)
    p = {k[len(PLUS_PROJECTOR_PREFIX):]: v for k, v in saved.items() if k.startswith(PLUS_PROJECTOR_PREFIX)}
    x = torch.nn.functional.layer_norm(captured[0][0], (512,), p["pre_proj_layernorm.weight"],
                                       p["pre_proj_layernorm.bias"])
    expected = torch.nn.functional.gelu(x @ p["mlp.0.weight"].T) @ p["mlp.2.weight"].T
    part = speech.audio_part(wav, 16000, language=language)
    assert isinstance(part, AudioContext) and part.length == len(expected) == (len(wav) - 400) // 160 // 6 + 1 + 4
    torch.testing.assert_close(part.features, expected, rtol=1e-5, atol=1e-6)
    if language != "auto":  # the hint reaches the encoder: the language query changes every output row
        assert not torch.allclose(part.features, speech.audio_part(wav, 16000).features)


def test_prompt_embeddings_fill_the_context_slots_in_order(speech):
    first, second = speech.audio_part(sentence(0), 16000), speech.audio_part(sentence(1)[:16000], 16000)
    ids = speech.chat.encode([Message("system", ["Your Voice: ", first, "\n"]), Message("user", ["Hi", second])])
    lay = speech.tokens
    slots = [i for i, t in enumerate(ids) if t == lay.context_of_audio]
    assert len(slots) == first.length + second.length
    assert ids[slots[0] - 1] == lay.begin_of_audio and ids[slots[first.length - 1] + 1] == lay.end_of_audio
    embeds = speech.prompt_embeds(ids, [first, second])
    torch.testing.assert_close(embeds[slots], torch.cat([first.features, second.features]), rtol=0, atol=0)
    others = [i for i in range(len(ids)) if i not in set(slots)]
    torch.testing.assert_close(embeds[others], speech.model.embed(torch.tensor(ids)[others]), rtol=0, atol=0)
    assert speech.prompt_embeds(ids[:5], []) is None
    with pytest.raises(ValueError, match="slots but"):
        fill_audio_context(embeds, ids, [first.features], lay.context_of_audio)


def test_vanilla_with_features_equals_hf_generate_from_embeddings(speech):
    model = speech.model
    cfg = hf_config({**model.upstream_config, "num_hidden_layers": model.num_backbone_layers,
                     "num_nextn_predict_layers": 0}, "sdpa")
    hf = Qwen2ForCausalLM(cfg).eval()
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("mtp_")
             and (not k.startswith("model.layers.") or int(k.split(".")[2]) < model.num_backbone_layers)}
    hf.load_state_dict(state, strict=True)
    audio = speech.audio_part(sentence(1), 16000)
    ids = speech.chat.encode([Message("user", ["Convert the speech to text.\n", audio])])
    embeds = speech.prompt_embeds(ids, [audio])
    with torch.no_grad():
        ref = hf.generate(inputs_embeds=embeds[None], attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                          max_new_tokens=16, do_sample=False, eos_token_id=None, pad_token_id=0)[0].tolist()
    ours = generate_ids(speech.engine, ids, mode="vanilla", max_new_tokens=16, stop_ids=(), prompt_embeds=embeds)
    assert ours.tokens == ref
    without = generate_ids(speech.engine, ids, mode="vanilla", max_new_tokens=16, stop_ids=())
    assert without.tokens != ours.tokens  # the features, not the slot tokens, reached the backbone


@pytest.mark.parametrize("mode", ["boost", "turbo", [2, 3, 1, 6]], ids=str)
def test_mctp_modes_with_features_equal_the_cache_free_reference(speech, mode):
    """The backbone reads the features, the MCTP modules the slot tokens' embeddings (as upstream)."""
    audio = speech.audio_part(sentence(0)[:24000], 16000)
    ids = speech.chat.encode([Message("user", [audio])])
    embeds = speech.prompt_embeds(ids, [audio])
    m, layout = get_mode(mode), Layout(BOOST_RATIO)
    ours = generate_ids(speech.engine, ids, mode=m, layout=layout, max_new_tokens=30, stop_ids=(),
                        prompt_embeds=embeds)
    ref_tokens, ref_producers = reference_generate(speech.model, speech.tokens, ids, m, layout, 30, embeds)
    assert ours.tokens == ref_tokens and ours.producers == ref_producers


def test_asr_writes_every_format_with_the_checkpoints_own_sensevoice_config(clean_speech_env, plus_carrying_dir,
                                                                           tmp_path):
    out = tmp_path / "out"
    wav = tmp_path / "talk.wav"
    shutil.copy(LIBRIVOX / SENTENCES[1], wav)
    r = runner.invoke(app, ["asr", str(wav), "-o", str(out), "--model", str(plus_carrying_dir), "--device", "cpu",
                            "--max-new-tokens", "6", "-q"])
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in out.iterdir()) == [f"talk.{f}" for f in ("json", "srt", "tsv", "txt", "vtt")]
    meta = json.loads((out / "talk.json").read_text())
    frames = (len(sf.read(str(wav))[0]) - 400) // 160 // 6 + 1
    assert meta["num_codes"] == frames + 4 and meta["tokens"] == 6


def test_missing_sensevoice_folder_is_one_line(clean_speech_env, plus_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shutil.copy(LIBRIVOX / SENTENCES[1], tmp_path / "talk.wav")
    r = runner.invoke(app, ["asr", "talk.wav", "--model", str(plus_dir), "--device", "cpu"])
    assert r.exit_code == 1
    assert r.stderr.strip().splitlines()[-1] == (
        "error: no sensevoice folder given: pass --sensevoice-dir DIR, set VITA_SENSEVOICE, or add sensevoice = "
        "\"DIR\" to ~/.config/vita/config.toml (a SenseVoiceSmall folder (config.yaml, am.mvn), the audio encoder "
        "of VITA-Audio-Plus)")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["talk.wav"]


def test_chat_hears_features_and_keeps_them_in_the_history(clean_speech_env, plus_dir, sv_dir, decoder_dir,
                                                           tmp_path):
    silence = np.zeros(16000, dtype=np.float32)
    script = tmp_path / "questions.wav"
    sf.write(str(script), np.concatenate([silence[:8000], sentence(0), silence, sentence(1), silence]), 16000)
    log = tmp_path / "turns.jsonl"
    r = runner.invoke(app, ["chat", "--input-wav", str(script), "--log", str(log), "--model", str(plus_dir),
                            "--sensevoice-dir", str(sv_dir), "--decoder-dir", str(decoder_dir), "--device", "cpu",
                            "--max-new-tokens", "24"])
    assert r.exit_code == 0, r.output
    turns = [json.loads(line) for line in log.read_text().splitlines()]
    assert [t["index"] for t in turns] == [1, 2]
    for turn in turns:
        assert all(v is not None and v > 0 for v in turn["stages_ms"].values()), turn
        assert turn["user_codes"] == (round(turn["user_seconds"] * 16000) - 400) // 160 // 6 + 1 + 4
        assert turn["answer_codes"] > 0


def test_conversation_refills_every_earlier_turns_features(speech):
    from vita_core.chat.loop import Conversation

    conv = Conversation(speech)
    first = speech.audio_part(sentence(0), 16000)
    prompt = conv.prompt(first)
    conv.commit(prompt, first, [100, 101, speech.tokens.im_end])
    second = speech.audio_part(sentence(1), 16000)
    prompt = conv.prompt(second)
    embeds = conv.embeds(prompt, second)
    slots = [i for i, t in enumerate(prompt) if t == speech.tokens.context_of_audio]
    torch.testing.assert_close(embeds[slots], torch.cat([first.features, second.features]), rtol=0, atol=0)


def test_tts_voice_prompt_is_heard_as_features(clean_speech_env, plus_dir, sv_dir, decoder_dir, tmp_path):
    prompt = tmp_path / "me.wav"
    shutil.copy(LIBRIVOX / SENTENCES[0], prompt)
    args = ["tts", "Hello there.", "--model", str(plus_dir), "--decoder-dir", str(decoder_dir), "--device", "cpu",
            "--max-new-tokens", "24", "--json"]
    with_voice = runner.invoke(app, [*args, "--out", str(tmp_path / "a.wav"), "--prompt-wav", str(prompt),
                                     "--sensevoice-dir", str(sv_dir)])
    assert with_voice.exit_code == 0, with_voice.output
    plain = runner.invoke(app, [*args, "--out", str(tmp_path / "b.wav")])
    assert plain.exit_code == 0, plain.output
    a, b = json.loads(with_voice.stdout), json.loads(plain.stdout)
    assert a["num_codes"] > 0 and b["num_codes"] > 0
    voiced, _ = sf.read(str(tmp_path / "a.wav"))
    unvoiced, rate = sf.read(str(tmp_path / "b.wav"))
    assert rate == 22050 and (voiced.shape != unvoiced.shape or not np.array_equal(voiced, unvoiced))


def test_a_folder_mixing_plus_config_and_boost_tokenizer_is_refused(clean_speech_env, tiny_checkpoint_f32, tmp_path):
    mixed = tmp_path / "mixed"
    shutil.copytree(tiny_checkpoint_f32, mixed)
    config = json.loads((mixed / "config.json").read_text())
    (mixed / "config.json").write_text(json.dumps({**config, "model_type": "qwen2_mtp_sensevoice"}))
    with pytest.raises(CheckpointError, match=r"config.json is a VITA-Audio-Plus one but the tokenizer lacks "
                                              r"<\|context_of_audio\|>; the folder mixes the files of two checkpoints"):
        load_speech_model(mixed, device="cpu")


def test_language_hints(speech, tmp_path, codec_dirs, tiny_checkpoint_f32):
    with pytest.raises(InputError, match=r"^--language xx: SenseVoice knows auto, zh, en, yue, ja, ko, nospeech$"):
        speech.audio_part(sentence(0), 16000, language="xx")
    shutil.copy(LIBRIVOX / SENTENCES[1], tmp_path / "talk.wav")
    r = runner.invoke(app, ["asr", str(tmp_path / "talk.wav"), "-o", str(tmp_path / "out"), "--language", "en",
                            "--model", str(tiny_checkpoint_f32), "--tokenizer-dir", str(codec_dirs[0]),
                            "--device", "cpu"])
    assert r.exit_code == 1
    assert r.stderr.strip().splitlines()[-1] == (
        "error: --language en: GLM-4-Voice speech codes carry no language hint, only VITA-Audio-Plus checkpoints "
        "(SenseVoice input) take one; leave it at auto")
    assert not (tmp_path / "out").exists()


def test_too_short_audio_is_refused(speech):
    with pytest.raises(InputError, match=r"^the audio: 0.010 s of audio is shorter than SenseVoice's 25 ms analysis "
                                         r"window, too short to give any speech features$"):
        speech.audio_part(np.zeros(160, dtype=np.float32), 16000)


def test_training_from_a_plus_checkpoint_is_refused(plus_dir):
    from vita_core.train.setup import init_model
    from vita_core.train.stages import load_stage

    with pytest.raises(CheckpointError, match="is a VITA-Audio-Plus checkpoint"):
        init_model(plus_dir, load_stage(None, 2))


def test_eval_asr_transcribes_through_the_plus_model(clean_speech_env, plus_dir, sv_dir, tmp_path, monkeypatch):
    """`vita eval --model` takes the SenseVoice folder from VITA_SENSEVOICE and scores what `vita asr` says."""
    from vita_core.asr import transcribe

    data = tmp_path / "kaldi"
    data.mkdir()
    for i, name in enumerate(SENTENCES):
        shutil.copy(LIBRIVOX / name, data / f"u{i}.wav")
    (data / "wav.scp").write_text("u0 u0.wav\nu1 u1.wav\n")
    (data / "text").write_text("u0 HELLO\nu1 WORLD\n")
    monkeypatch.setenv("VITA_SENSEVOICE", str(sv_dir))
    r = runner.invoke(app, ["eval", "asr", "--data", str(data), "--model", str(plus_dir), "--device", "cpu",
                            "--out-dir", str(tmp_path / "o")])
    assert r.exit_code == 0, r.output
    rows = [line.split("\t") for line in (tmp_path / "o" / "asr.tsv").read_text().splitlines()[1:]]
    speech = load_speech_model(plus_dir, device="cpu", need_encoder=True)
    expected = [transcribe(speech, sentence(i), 16000).text for i in (0, 1)]
    assert [row[-1] for row in rows] == expected
