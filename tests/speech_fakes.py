"""Small stand-ins for the GLM-4-Voice codec that follow vita_core.codec.base's protocol.

Instant, for tests where the codec's sound does not matter (error paths, barge-in, batch layout);
the real tiny codec folders are tested end to end in test_tts/test_chat/test_asr. The encoder gives
one code per 80 ms frame (12.5 codes/s at 16 kHz) from the frame's energy; the decoder gives 1764
samples per code at 22.05 kHz.
"""

import numpy as np

from vita_core.speech import resample

SAMPLES_PER_CODE = 1764


class FakeEncoder:
    sample_rate = 16000
    codes_per_second = 12.5
    codebook_size = 16384

    def encode(self, wav, sample_rate):
        wav = resample(np.asarray(wav, dtype=np.float32), sample_rate, self.sample_rate)
        frames = wav[: len(wav) // 1280 * 1280].reshape(-1, 1280)
        return (np.sqrt((frames ** 2).mean(axis=1)) * 1e5).astype(np.int64) % self.codebook_size

    def encode_batch(self, wavs, sample_rate):
        return [self.encode(w, sample_rate) for w in wavs]


class FakeStream:
    def __init__(self, decoder):
        self.decoder = decoder

    def push(self, codes):
        return self.decoder.decode(codes)[0]

    def flush(self):
        return np.zeros(0, dtype=np.float32)


class FakeDecoder:
    sample_rate = 22050

    def decode(self, codes):
        t = np.arange(SAMPLES_PER_CODE) / self.sample_rate
        parts = [0.3 * np.sin(2 * np.pi * (100 + int(c) % 500) * t) for c in codes]
        wav = np.concatenate(parts) if parts else np.zeros(0)
        return wav.astype(np.float32), self.sample_rate

    def stream(self):
        return FakeStream(self)


def install(monkeypatch, tmp_path):
    """Route vita_core.codec's loaders to the fakes; return (tokenizer_dir, decoder_dir) folders."""
    import vita_core.codec as codec

    enc_dir, dec_dir = tmp_path / "speech-tokenizer", tmp_path / "speech-decoder"
    enc_dir.mkdir(exist_ok=True)
    dec_dir.mkdir(exist_ok=True)
    monkeypatch.setattr(codec, "load_encoder", lambda folder, name="glm4voice", device="cpu": FakeEncoder(),
                        raising=False)
    monkeypatch.setattr(codec, "load_decoder", lambda folder, name="glm4voice", device="cpu": FakeDecoder(),
                        raising=False)
    return enc_dir, dec_dir
