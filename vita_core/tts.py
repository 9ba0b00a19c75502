"""Text to speech: the reference's TTS prompt, interleaved generation, streaming decode.

The user turn is "Convert the text to speech.\\n<text>" (the reference's task prompt); an
optional voice prompt goes in a system turn "Your Voice: <|audio|>\\n" holding the prompt
audio (its codes, or for a Plus checkpoint its SenseVoice features), as the reference's
inference script does. Each audio code is pushed into the codec's streaming decoder as soon as
it is generated (the decoder decides when it has enough to emit final PCM), so PCM reaches the
caller's `on_audio` while the answer is still being generated.

Long text is spoken sentence by sentence, as piper and coqui do: `chunk_text` splits it into
sentences and groups short ones into chunks of at most `chunk_tokens` text tokens, each chunk is
one request (a prompt of its own, the same voice), and their audio goes to `on_audio` in order,
so memory stays that of one chunk however long the text (the engine allocates per prompt and
token budget) and the caller writes one file.
"""

from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from vita_core.errors import InputError
from vita_core.speech import SpeechModel, read_audio
from vita_core.tokens import AudioCodes, AudioContext

if TYPE_CHECKING:
    from vita_core.generate import DoneEvent, Event, Sampling

TTS_TASK = "Convert the text to speech.\n"
VOICE_PROMPT = "Your Voice: "
CHUNK_TOKENS = 64  # text tokens per request: ~20 s of speech, well inside the default 1024-token budget

# A sentence ends at . ! ? … (then closing quotes/brackets, then a space or the end), at CJK full stops,
# or at a blank line; clauses end at , ; : and their CJK forms.
_SENTENCE_END = re.compile(r"[.!?…]+[\"'”’)\]]*(?=\s|$)|[。！？；]+[\"'”’）」』]*|\n\s*\n")
_CLAUSE_END = re.compile(r"(?<=[,;:，、；：])\s*")
_CJK = re.compile(r"[\u3000-\u303f\u3040-\u30ff\u3400-\u9fff\uff00-\uffef]")


@dataclass
class TtsResult:
    """What one synthesis produced and how fast (times are wall-clock from the request)."""

    text: str  # the text the model generated alongside the audio
    num_codes: int
    audio_blocks: int
    samples: int
    sample_rate: int
    audio_seconds: float
    first_audio_ms: float | None  # request -> first PCM handed to on_audio
    seconds: float
    real_time_factor: float | None  # wall seconds per second of audio (< 1 is faster than real time)
    tokens: int
    tokens_per_s: float
    backbone_forwards: int
    mtp_forwards: int
    mode: str
    stop_reason: str  # "length" when any chunk ran out of its token budget
    codes: list[int] = field(default_factory=list, repr=False)
    chunks: int = 1  # requests the text was spoken in (sentences grouped to `chunk_tokens`)

    def to_dict(self, with_codes: bool = False) -> dict:
        out = asdict(self)
        if not with_codes:
            out.pop("codes")
        return out


@dataclass
class TtsProgress:
    """Where a synthesis is, for a progress display: after every generated token and at each chunk's end."""

    chunk: int  # 1-based index of the chunk being spoken
    chunks: int
    tokens: int  # generated so far in this chunk
    max_new_tokens: int  # this chunk's budget
    audio_seconds: float  # decoded so far, all chunks
    chunk_done: bool  # this chunk has finished


def split_sentences(text: str) -> list[str]:
    """Sentences of `text` in order, each with its whitespace collapsed (line breaks inside become spaces)."""
    out, start = [], 0
    for m in _SENTENCE_END.finditer(text):
        out.append(text[start : m.end()])
        start = m.end()
    out.append(text[start:])
    return [s for s in (" ".join(piece.split()) for piece in out) if s]


def _join(a: str, b: str) -> str:
    return a + b if _CJK.match(a[-1:]) or _CJK.match(b[:1]) else f"{a} {b}"


def _group(pieces: list[str], limit: int, count: Callable[[str], int]) -> list[str]:
    """Greedily join consecutive pieces while the joined piece counts at most `limit`."""
    out: list[str] = []
    for piece in pieces:
        if out and count(_join(out[-1], piece)) <= limit:
            out[-1] = _join(out[-1], piece)
        else:
            out.append(piece)
    return out


def _longest_prefix(word: str, limit: int, count: Callable[[str], int]) -> int:
    """Length of the longest prefix of `word` that counts at most `limit` (at least 1), by bisection."""
    lo, hi = 1, min(len(word) - 1, 16 * limit)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if count(word[:mid]) <= limit:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _split_long(sentence: str, limit: int, count: Callable[[str], int]) -> list[str]:
    """A sentence over the limit: at clause ends, then between words, then (one huge word) by characters."""
    if count(sentence) <= limit:
        return [sentence]
    out: list[str] = []
    for clause in _group([c for c in _CLAUSE_END.split(sentence) if c], limit, count):
        if count(clause) <= limit:
            out.append(clause)
            continue
        words: list[str] = []
        for word in clause.split(" "):  # a CJK clause is one word, cut below
            while count(word) > limit and len(word) > 1:  # cut a word with no space in it
                cut = _longest_prefix(word, limit, count)
                words.append(word[:cut])
                word = word[cut:]
            words.append(word)
        out.extend(_group(words, limit, count))
    return out


def chunk_text(text: str, max_tokens: int = CHUNK_TOKENS, count: Callable[[str], int] = len) -> list[str]:
    """Sentences grouped into chunks of at most `max_tokens` (as `count` measures them), in order.

    Short sentences share a chunk; a longer one is cut at clauses, then words. `count` defaults to
    characters; `synthesize` passes the tokenizer's count.
    """
    if max_tokens < 1:
        raise InputError(f"chunk size {max_tokens} must be at least 1 token")
    pieces = [p for s in split_sentences(text) for p in _split_long(s, max_tokens, count)]
    return _group(pieces, max_tokens, count)


def tts_prompt(speech: SpeechModel, text: str, voice: AudioCodes | AudioContext | None = None) -> list[int]:
    """Token ids of the TTS request (with a voice prompt when one is given)."""
    from vita_core.tokens import Message

    text = text.strip()
    if not text:
        raise InputError("the text to synthesize is empty")
    messages = []
    if voice is not None:
        messages.append(Message("system", [VOICE_PROMPT, voice, "\n"]))
    messages.append(Message("user", TTS_TASK + text))
    return speech.chat.encode(messages)


def voice_prompt(speech: SpeechModel, prompt_wav: str | Path) -> AudioCodes | AudioContext:
    """A voice-prompt recording as the checkpoint hears it (16 kHz through its audio input)."""
    rate = speech.input_rate
    return speech.audio_part(read_audio(prompt_wav, rate), rate, f"--prompt-wav {prompt_wav}")


def synthesize(
    speech: SpeechModel,
    text: str,
    on_audio: Callable[[np.ndarray], None],
    voice: AudioCodes | AudioContext | None = None,
    sampling: Sampling | None = None,
    max_new_tokens: int = 1024,
    chunk_tokens: int = CHUNK_TOKENS,
    on_progress: Callable[[TtsProgress], None] | None = None,
) -> TtsResult:
    """Generate speech for `text`, calling `on_audio(pcm)` for every decoded chunk as it is ready.

    Text longer than `chunk_tokens` text tokens is spoken chunk by chunk (`chunk_text`), each with a
    budget of `max_new_tokens`; the audio arrives in order as one stream and the result sums the runs.
    """
    if speech.decoder is None:
        raise InputError("speech output needs the speech decoder: pass --decoder-dir or set VITA_AUDIO_DECODER")
    if not text.strip():
        raise InputError("the text to synthesize is empty")
    if max_new_tokens < 1:
        raise InputError(f"--max-new-tokens {max_new_tokens} must be at least 1")

    def count(piece: str) -> int:
        return len(speech.tokenizer.encode(piece, add_special_tokens=False))

    start = time.perf_counter()
    chunks = chunk_text(text, chunk_tokens, count)
    runs: list[TtsResult] = []
    for n, chunk in enumerate(chunks, 1):
        before = sum(r.samples for r in runs)
        runs.append(_synthesize_one(speech, chunk, on_audio, voice, sampling or speech.sampling, max_new_tokens,
                                    start, before, n, len(chunks), on_progress))
    first = next((r.first_audio_ms for r in runs if r.first_audio_ms is not None), None)
    seconds = time.perf_counter() - start
    samples = sum(r.samples for r in runs)
    sample_rate = runs[0].sample_rate
    audio_seconds = samples / sample_rate
    tokens = sum(r.tokens for r in runs)
    generating = sum(r.tokens / r.tokens_per_s for r in runs if r.tokens_per_s)
    return TtsResult(
        text=" ".join(r.text for r in runs if r.text), num_codes=sum(r.num_codes for r in runs),
        audio_blocks=sum(r.audio_blocks for r in runs), samples=samples, sample_rate=sample_rate,
        audio_seconds=audio_seconds, first_audio_ms=first, seconds=seconds,
        real_time_factor=seconds / audio_seconds if audio_seconds else None, tokens=tokens,
        tokens_per_s=tokens / generating if generating else 0.0,
        backbone_forwards=sum(r.backbone_forwards for r in runs), mtp_forwards=sum(r.mtp_forwards for r in runs),
        mode=speech.mode.name, stop_reason="length" if any(r.stop_reason == "length" for r in runs) else "stop",
        codes=[c for r in runs for c in r.codes], chunks=len(runs),
    )


class Utterance:
    """One request's events -> its text, codes and PCM (through its own decoder stream) and its TtsResult.

    `synthesize` feeds it one request's events; `synthesize_batch` feeds one per request of a batch.
    """

    def __init__(self, speech: SpeechModel, on_audio: Callable[[np.ndarray], None], start: float,
                 max_new_tokens: int, samples_before: int = 0, chunk: int = 1, chunks: int = 1,
                 on_progress: Callable[[TtsProgress], None] | None = None) -> None:
        self.speech, self.on_audio, self.start, self.max_new_tokens = speech, on_audio, start, max_new_tokens
        self.samples_before, self.chunk, self.chunks, self.on_progress = samples_before, chunk, chunks, on_progress
        self.stream = speech.decoder.stream()
        self.sample_rate = int(speech.decoder.sample_rate)
        self.codes: list[int] = []
        self.text_ids: list[int] = []
        self.first_audio: float | None = None
        self.samples = self.blocks = self.generated = 0
        self.done: DoneEvent | None = None

    def _emit(self, pcm: np.ndarray) -> None:
        if pcm.size:
            if self.first_audio is None:
                self.first_audio = time.perf_counter() - self.start
            self.samples += int(pcm.size)
            self.on_audio(np.asarray(pcm, dtype=np.float32))

    def _report(self, finished: bool) -> None:
        if self.on_progress is not None:
            self.on_progress(TtsProgress(self.chunk, self.chunks, self.generated, self.max_new_tokens,
                                         (self.samples_before + self.samples) / self.sample_rate, finished))

    def feed(self, event: Event) -> None:
        """Take one engine event: decode each audio code as it comes."""
        from vita_core.generate import AudioBlockEvent, DoneEvent, TokenEvent

        if isinstance(event, TokenEvent):
            self.generated += 1
            if event.kind == "text":
                self.text_ids.append(event.token)
            elif event.kind == "audio":
                code = self.speech.tokens.id_to_code(event.token)
                self.codes.append(code)
                self._emit(self.stream.push([code]))
            self._report(False)
        elif isinstance(event, AudioBlockEvent):
            self.blocks += 1
        elif isinstance(event, DoneEvent):
            self.done = event

    def finish(self) -> TtsResult:
        """Flush the decoder (the rest of the PCM) once the request is done; what it produced and how fast."""
        self._emit(self.stream.flush())
        self._report(True)
        done = self.done
        assert done is not None
        seconds = time.perf_counter() - self.start
        audio_seconds = self.samples / self.sample_rate
        return TtsResult(
            text=self.speech.chat.decode_text(self.text_ids), num_codes=len(self.codes), audio_blocks=self.blocks,
            samples=self.samples, sample_rate=self.sample_rate, audio_seconds=audio_seconds,
            first_audio_ms=None if self.first_audio is None else 1000 * self.first_audio, seconds=seconds,
            real_time_factor=seconds / audio_seconds if audio_seconds else None, tokens=len(done.tokens),
            tokens_per_s=len(done.tokens) / done.seconds if done.seconds else 0.0,
            backbone_forwards=done.backbone_forwards, mtp_forwards=done.mtp_forwards, mode=self.speech.mode.name,
            stop_reason=done.stop_reason, codes=self.codes,
        )


def _synthesize_one(speech: SpeechModel, text: str, on_audio: Callable[[np.ndarray], None],
                    voice: AudioCodes | AudioContext | None, sampling: Sampling, max_new_tokens: int, start: float,
                    samples_before: int, chunk: int, chunks: int,
                    on_progress: Callable[[TtsProgress], None] | None) -> TtsResult:
    """One request: one chunk's prompt, its own decoder stream, PCM to `on_audio` as it is decoded."""
    prompt = tts_prompt(speech, text, voice)
    utterance = Utterance(speech, on_audio, start, max_new_tokens, samples_before, chunk, chunks, on_progress)
    for event in speech.engine.generate(prompt, mode=speech.mode, layout=speech.answer_layout(),
                                        sampling=sampling, max_new_tokens=max_new_tokens,
                                        prompt_embeds=speech.prompt_embeds(prompt, [voice] if voice else [])):
        utterance.feed(event)
    return utterance.finish()


def read_lines(path: str | Path) -> list[tuple[int, str]]:
    """(line number, text) of every non-blank line of a batch file, so outputs can be numbered by line."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"batch file {path} does not exist")
    lines = [(n, line.strip()) for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)]
    lines = [(n, line) for n, line in lines if line]
    if not lines:
        raise InputError(f"batch file {path} has no text lines")
    return lines
