"""Tiny random-init ASR checkpoints in each backend's released format, for tests and smoke runs.

They transcribe noise into garbage, but they load through exactly the code that loads the real ones.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import torch


def build_openai_whisper(path: Path, seed: int = 0) -> Path:
    """An openai-whisper `.pt` (plain-dict `dims` + `model_state_dict`), multilingual vocabulary, 30 s window."""
    from whisper.model import ModelDimensions, Whisper

    torch.manual_seed(seed)
    dims = ModelDimensions(
        n_mels=80,
        n_audio_ctx=1500,
        n_audio_state=64,
        n_audio_head=2,
        n_audio_layer=1,
        n_vocab=51865,
        n_text_ctx=64,
        n_text_state=64,
        n_text_head=2,
        n_text_layer=1,
    )
    model = Whisper(dims)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"dims": asdict(dims), "model_state_dict": model.state_dict()}, path)
    return path


def _whisper_tokenizer(folder: Path):
    """Hugging Face WhisperTokenizerFast built offline from the multilingual vocabulary inside openai-whisper.

    The token ids equal openai/whisper-*'s (50258 <|startoftranscript|>, 50259 <|en|>, 50363 <|notimestamps|>).
    """
    import whisper
    from transformers import WhisperTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter
    from whisper.tokenizer import get_encoding

    encoding = get_encoding("multilingual", num_languages=99)
    vocab_file = Path(whisper.__file__).parent / "assets" / "multilingual.tiktoken"
    converted = TikTokenConverter(
        vocab_file=str(vocab_file), pattern=encoding._pat_str, extra_special_tokens=encoding._special_tokens
    ).converted()
    folder.mkdir(parents=True, exist_ok=True)
    converted.save(str(folder / "tokenizer.json"))
    eot = "<|endoftext|>"
    return WhisperTokenizerFast(
        tokenizer_file=str(folder / "tokenizer.json"), unk_token=eot, bos_token=eot, eos_token=eot, pad_token=eot
    )


def build_hf_whisper(folder: Path, seed: int = 0) -> Path:
    """A Hugging Face Whisper folder (config, safetensors, generation config, processor) with tiny random weights."""
    from transformers import (
        GenerationConfig,
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperProcessor,
    )
    from whisper.tokenizer import LANGUAGES

    folder = Path(folder)
    tokenizer = _whisper_tokenizer(folder)
    torch.manual_seed(seed)
    ids = tokenizer.convert_tokens_to_ids
    config = WhisperConfig(
        vocab_size=51865,
        num_mel_bins=80,
        d_model=64,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=128,
        decoder_ffn_dim=128,
        max_source_positions=1500,
        max_target_positions=64,
        pad_token_id=ids("<|endoftext|>"),
        bos_token_id=ids("<|endoftext|>"),
        eos_token_id=ids("<|endoftext|>"),
        decoder_start_token_id=ids("<|startoftranscript|>"),
    )
    model = WhisperForConditionalGeneration(config).eval()
    model.generation_config = GenerationConfig(
        decoder_start_token_id=config.decoder_start_token_id,
        eos_token_id=config.eos_token_id,
        pad_token_id=config.pad_token_id,
        max_length=24,  # short garbage keeps tests fast
        is_multilingual=True,
        no_timestamps_token_id=ids("<|notimestamps|>"),
        lang_to_id={f"<|{code}|>": ids(f"<|{code}|>") for code in LANGUAGES},
        task_to_id={"transcribe": ids("<|transcribe|>"), "translate": ids("<|translate|>")},
    )
    model.save_pretrained(str(folder))
    WhisperProcessor(WhisperFeatureExtractor(feature_size=80), tokenizer).save_pretrained(str(folder))
    return folder


_PARAFORMER_CONFIG = """\
model: Paraformer
model_conf: {ctc_weight: 0.0, lsm_weight: 0.1, length_normalized_loss: true, predictor_weight: 1.0, predictor_bias: 1,
  sampling_ratio: 0.75}
encoder: SANMEncoder
encoder_conf: {output_size: 32, attention_heads: 2, linear_units: 64, num_blocks: 1, dropout_rate: 0.1,
  positional_dropout_rate: 0.1, attention_dropout_rate: 0.1, input_layer: pe, pos_enc_class: SinusoidalPositionEncoder,
  normalize_before: true, kernel_size: 11, sanm_shfit: 0, selfattention_layer_type: sanm}
decoder: ParaformerSANMDecoder
decoder_conf: {attention_heads: 2, linear_units: 64, num_blocks: 1, dropout_rate: 0.1, positional_dropout_rate: 0.1,
  self_attention_dropout_rate: 0.1, src_attention_dropout_rate: 0.1, att_layer_num: 1, kernel_size: 11, sanm_shfit: 0}
predictor: CifPredictorV2
predictor_conf: {idim: 32, threshold: 1.0, l_order: 1, r_order: 1, tail_threshold: 0.45}
frontend: WavFrontend
frontend_conf: {fs: 16000, window: hamming, n_mels: 80, frame_length: 25, frame_shift: 10, lfr_m: 7, lfr_n: 6,
  dither: 0.0}
tokenizer: CharTokenizer
tokenizer_conf: {unk_symbol: <unk>, split_with_space: true}
"""


def build_paraformer(folder: Path, seed: int = 0) -> Path:
    """A FunASR Paraformer folder as `AutoModel(model=DIR)` reads it offline: config.yaml, model.pt, tokens.json.

    Same layout as paraformer-zh (SANM encoder, CIF predictor, char tokens, 7x6 LFR fbank), tiny sizes.
    """
    import json

    import yaml
    from funasr import AutoModel

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(_PARAFORMER_CONFIG, encoding="utf-8")
    tokens = ["<blank>", "<s>", "</s>", *"你好世界我们中文测试说话天气今日很", "<unk>"]
    (folder / "tokens.json").write_text(json.dumps(tokens, ensure_ascii=False), encoding="utf-8")
    conf = yaml.safe_load(_PARAFORMER_CONFIG)
    conf["tokenizer_conf"]["token_list"] = str(folder / "tokens.json")
    model, _ = AutoModel.build_model(**conf, device="cpu", seed=seed, disable_update=True)
    torch.save(model.state_dict(), folder / "model.pt")
    return folder
