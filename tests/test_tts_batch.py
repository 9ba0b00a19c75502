"""Batched synthesis (`vita_core.tts_batch`): each text of a batch equals that text synthesized alone."""

from dataclasses import replace

import numpy as np
import pytest

from vita_core.codec.glm4voice.decoder import load_glm4voice_decoder
from vita_core.errors import InputError
from vita_core.generate import Engine, Sampling
from vita_core.schedule import get_mode
from vita_core.speech import load_speech_model
from vita_core.tokens import AudioCodes
from vita_core.tts import synthesize
from vita_core.tts_batch import TtsJob, synthesize_batch

LONG = "The first sentence is here. A second one follows it, and then a third one ends the text."


@pytest.fixture(scope="module")
def speech(tiny_checkpoint_f32, decoder_dir):
    """The tiny fp32 checkpoint (CPU fast path) with the real tiny GLM-4-Voice decoder, in Boost."""
    speech = load_speech_model(tiny_checkpoint_f32, device="cpu")
    speech.decoder = load_glm4voice_decoder(decoder_dir)
    assert speech.engine.fast is not None
    return replace(speech, mode=get_mode("boost"))


def _alone(speech, job, max_new_tokens, chunk_tokens=64):
    pcm = []
    result = synthesize(speech, job.text, pcm.append, voice=job.voice, sampling=job.sampling,
                        max_new_tokens=max_new_tokens, chunk_tokens=chunk_tokens)
    return (np.concatenate(pcm) if pcm else np.zeros(0, np.float32)), result


@pytest.mark.parametrize("mode", ["boost", "turbo", "vanilla"])
def test_each_text_of_a_batch_equals_it_alone(speech, mode, monkeypatch):
    speech = replace(speech, mode=get_mode(mode))
    rounds = []
    real = Engine.generate_batch

    def counted(self, requests):
        rounds.append(len(requests))
        return real(self, requests)

    jobs = [
        TtsJob("Hello there."),
        TtsJob("A somewhat longer line of text to speak.", voice=AudioCodes([5, 7, 9, 11])),
        TtsJob("Short.", sampling=Sampling(temperature=0.9, top_k=40, seed=11)),
        TtsJob(LONG),  # over the 40-token chunk: spoken chunk by chunk after the batch
        TtsJob("Twenty one, twenty two."),
    ]
    alone = [_alone(speech, job, 28, chunk_tokens=40) for job in jobs]
    monkeypatch.setattr(Engine, "generate_batch", counted)
    got = synthesize_batch(speech, jobs, max_new_tokens=28, chunk_tokens=40)
    assert rounds[0] == 4 and len(rounds) == 1 + alone[3][1].chunks  # one batch of four, then LONG's chunks
    for (pcm, result), spoken in zip(alone, got):
        assert spoken.result.codes == result.codes and result.num_codes > 0
        assert np.array_equal(spoken.pcm, pcm) and spoken.pcm.size == spoken.result.samples > 0
        for key in ("text", "tokens", "audio_blocks", "backbone_forwards", "mtp_forwards", "stop_reason", "chunks",
                    "mode", "sample_rate"):
            assert getattr(spoken.result, key) == getattr(result, key), key
    assert got[3].result.chunks > 1 and all(s.result.chunks == 1 for n, s in enumerate(got) if n != 3)
    sampled = synthesize_batch(speech, [replace(jobs[2], sampling=Sampling(temperature=0.9, top_k=40, seed=12))],
                               max_new_tokens=28)
    assert sampled[0].result.codes != got[2].result.codes  # each job's own seed is the one used


def test_bad_job_fails_before_any_generation(speech, monkeypatch):
    monkeypatch.setattr(Engine, "generate_batch", lambda *a: pytest.fail("generated before checking every job"))
    with pytest.raises(InputError, match="the text to synthesize is empty"):
        synthesize_batch(speech, [TtsJob("Fine."), TtsJob("  ")])
    with pytest.raises(InputError, match="--max-new-tokens 0 must be at least 1"):
        synthesize_batch(speech, [TtsJob("Fine.")], max_new_tokens=0)
    assert synthesize_batch(speech, []) == []
