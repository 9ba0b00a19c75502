"""A small random-init SenseVoiceSmall folder in the released layout, which `funasr.AutoModel` loads offline.

Files and fields are those of `FunAudioLLM/SenseVoiceSmall` (config.yaml, configuration.json,
model.pt, am.mvn, chn_jpn_yue_eng_ko_spectok.bpe.model); the encoder keeps its 512-wide output
and 560-wide LFR input but has 2 + 1 blocks instead of 50 + 20, and the BPE vocabulary is tiny.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import torch
import yaml

BPE_MODEL = "chn_jpn_yue_eng_ko_spectok.bpe.model"

RELEASED_ENCODER_CONF = {
    "output_size": 512,
    "attention_heads": 4,
    "linear_units": 2048,
    "num_blocks": 50,
    "tp_blocks": 20,
    "dropout_rate": 0.1,
    "positional_dropout_rate": 0.1,
    "attention_dropout_rate": 0.1,
    "input_layer": "pe",
    "pos_enc_class": "SinusoidalPositionEncoder",
    "normalize_before": True,
    "kernel_size": 11,
    "sanm_shfit": 0,
    "selfattention_layer_type": "sanm",
}


def released_config(**encoder_overrides) -> dict:
    """config.yaml's model-defining sections, with optional encoder size changes."""
    return {
        "encoder": "SenseVoiceEncoderSmall",
        "encoder_conf": {**RELEASED_ENCODER_CONF, **encoder_overrides},
        "model": "SenseVoiceSmall",
        "model_conf": {"length_normalized_loss": True, "sos": 1, "eos": 2, "ignore_id": -1},
        "tokenizer": "SentencepiecesTokenizer",
        "tokenizer_conf": {"bpemodel": None, "unk_symbol": "<unk>", "split_with_space": True},
        "frontend": "WavFrontend",
        "frontend_conf": {
            "fs": 16000, "window": "hamming", "n_mels": 80, "frame_length": 25, "frame_shift": 10,
            "lfr_m": 7, "lfr_n": 6, "cmvn_file": None,
        },
    }


CONFIGURATION_JSON = {
    "framework": "pytorch",
    "task": "auto-speech-recognition",
    "model": {"type": "funasr"},
    "pipeline": {"type": "funasr-pipeline"},
    "file_path_metas": {
        "init_param": "model.pt",
        "config": "config.yaml",
        "tokenizer_conf": {"bpemodel": BPE_MODEL},
        "frontend_conf": {"cmvn_file": "am.mvn"},
    },
}


def write_cmvn(path: Path, means: np.ndarray, scales: np.ndarray) -> None:
    """am.mvn in Kaldi nnet text form: <AddShift> holds -mean, <Rescale> holds 1/std."""
    dim = len(means)
    fmt = lambda v: " ".join(f"{x:.6f}" for x in v)  # noqa: E731
    path.write_text(
        f"<Nnet>\n<Splice> {dim} {dim}\n[ 0 ]\n"
        f"<AddShift> {dim} {dim}\n<LearnRateCoef> 0 [ {fmt(means)} ]\n"
        f"<Rescale> {dim} {dim}\n<LearnRateCoef> 0 [ {fmt(scales)} ]\n</Nnet>\n"
    )


def train_bpe(path: Path, vocab_size: int = 64) -> None:
    """A tiny SentencePiece BPE model standing in for the 25055-piece released one."""
    import sentencepiece as spm

    lines = ["the quick brown fox jumps over the lazy dog", "speech tokens and audio features"] * 20
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_writer=model, vocab_size=vocab_size, model_type="bpe",
        num_threads=1, minloglevel=2,
    )
    path.write_bytes(model.getvalue())


def build_tiny_sensevoice(folder: str | Path, seed: int = 0) -> Path:
    """Write a random SenseVoiceSmall folder (512-wide, 3 blocks, 64-piece vocabulary)."""
    from funasr.models.sense_voice.model import SenseVoiceSmall

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    train_bpe(folder / BPE_MODEL)
    config = released_config(linear_units=128, num_blocks=2, tp_blocks=1)
    (folder / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    (folder / "configuration.json").write_text(json.dumps(CONFIGURATION_JSON, indent=2) + "\n")
    rng = np.random.default_rng(seed)
    dim = 80 * config["frontend_conf"]["lfr_m"]
    write_cmvn(folder / "am.mvn", -rng.uniform(8.0, 14.0, dim), rng.uniform(0.2, 0.4, dim))
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = SenseVoiceSmall(
            encoder=config["encoder"], encoder_conf=config["encoder_conf"], input_size=dim, vocab_size=64,
            **config["model_conf"],
        )
    torch.save(model.state_dict(), folder / "model.pt")
    return folder


SENSEVOICE_CONFIG_FILES = ("config.yaml", "configuration.json", "am.mvn", BPE_MODEL)


def build_tiny_plus_checkpoint(folder: str | Path, sensevoice_dir: str | Path, seed: int = 0,
                               carry_sensevoice_config: bool = False) -> Path:
    """A random tiny VITA-Audio-Plus checkpoint in the released layout, for the tiny SenseVoice folder.

    config.json has model_type qwen2_mtp_sensevoice and the tiny preset's sizes; the safetensors
    hold the LLM with ten MCTP modules plus `model.audio_model.model.*` (a SenseVoice drawn with
    another seed than the folder's model.pt, so a test can tell whose weights were used) and
    `model.audio_projection.*`; the tokenizer has the Plus id layout (`<|audio_0|>` = 151686).
    With `carry_sensevoice_config` the SenseVoice config files sit in the checkpoint folder too,
    the layout from which upstream builds the encoder.
    """
    import shutil

    from funasr.models.sense_voice.model import SenseVoiceSmall

    from vita_core.codec.sensevoice.encoder import FEATURE_SIZE, PLUS_ENCODER_PREFIX, PLUS_PROJECTOR_PREFIX, ResamplerProjector
    from vita_core.model.checkpoint import PLUS_MODEL_TYPE, preset_config, random_model, save_model
    from vita_core.tiny.tokenizer import build_tokenizer

    folder, sensevoice_dir = Path(folder), Path(sensevoice_dir)
    config = {**preset_config("tiny"), "model_type": PLUS_MODEL_TYPE}
    model = random_model(config, seed=seed)
    sv_config = yaml.safe_load((sensevoice_dir / "config.yaml").read_text())
    with torch.random.fork_rng():
        torch.manual_seed(seed + 1)
        encoder = SenseVoiceSmall(
            encoder=sv_config["encoder"], encoder_conf=sv_config["encoder_conf"],
            input_size=80 * sv_config["frontend_conf"]["lfr_m"], vocab_size=64, **sv_config["model_conf"],
        )
        projector = ResamplerProjector(FEATURE_SIZE, model.config.hidden_size)
        for p in projector.parameters():
            torch.nn.init.normal_(p, std=0.02 if p.ndim > 1 else 0.1)
    audio = {PLUS_ENCODER_PREFIX + k: v for k, v in encoder.state_dict().items()}
    audio.update({PLUS_PROJECTOR_PREFIX + k: v for k, v in projector.state_dict().items()})
    generation = {"do_sample": False, "eos_token_id": [151645, 151643], "pad_token_id": 151643,
                  "mtp_inference_mode": [1, 10, 4, 10]}
    save_model(model, folder, extra_files={"generation_config.json": generation}, extra_tensors=audio)
    build_tokenizer(folder, plus=True)
    if carry_sensevoice_config:
        for name in SENSEVOICE_CONFIG_FILES:
            shutil.copy(sensevoice_dir / name, folder / name)
    return folder
