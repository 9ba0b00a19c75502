"""Audio I/O: microphone and speaker through sounddevice, and file-backed twins for headless runs.

Inputs hand out fixed-size float32 frames at 16 kHz (what the VAD wants). Outputs take PCM
chunks as they are decoded, play them without blocking, can be cut short (barge-in), and
account for *playback lag*: time the speaker sat starved while the answer was still coming.
The file output keeps the same accounts against a virtual real-time clock, so a headless run
reports the lag a speaker would have had.
"""

from __future__ import annotations

import collections
import queue
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from vita_core.errors import AudioError
from vita_core.speech import read_audio

INPUT_RATE = 16000
FRAME = 512  # 32 ms at 16 kHz: the frame size silero-vad takes


def _sounddevice() -> Any:
    try:
        import sounddevice
    except OSError as exc:  # PortAudio missing
        raise AudioError(f"sounddevice cannot load PortAudio ({exc}); install it (Debian: apt-get install "
                         "libportaudio2) or use --input-wav") from None
    return sounddevice


def list_devices() -> list[dict[str, Any]]:
    """Every PortAudio device with its index, name and channel counts."""
    sd = _sounddevice()
    return [{"index": i, "name": d["name"], "inputs": d["max_input_channels"], "outputs": d["max_output_channels"],
             "default_samplerate": d["default_samplerate"]} for i, d in enumerate(sd.query_devices())]


def _named(kind: str, device: str | int | None) -> str:
    """How an error names the device: the one asked for, or the system default."""
    return f"the default {kind} device" if device in (None, "") else f"{kind} device {device!r}"


def _device(value: str | int | None) -> int | str | None:
    if value is None or value == "":
        return None
    return int(value) if str(value).isdigit() else str(value)


class FileInput:
    """A scripted microphone: the frames of a file (resampled to 16 kHz), then a tail of silence."""

    def __init__(self, path: str | Path, tail_seconds: float = 1.0) -> None:
        wav = read_audio(path, INPUT_RATE)
        pad = (-len(wav)) % FRAME + int(tail_seconds * INPUT_RATE) // FRAME * FRAME
        self._wav = np.concatenate([wav, np.zeros(pad, dtype=np.float32)])
        self._pos = 0

    def read(self, timeout: float | None = None) -> np.ndarray | None:
        """The next frame, or None at the end of the file."""
        if self._pos >= len(self._wav):
            return None
        frame = self._wav[self._pos : self._pos + FRAME]
        self._pos += FRAME
        return frame

    def poll(self) -> np.ndarray | None:
        """Frames heard while an answer plays: a script waits for the answer, so none."""
        return None

    @property
    def ended(self) -> bool:
        return self._pos >= len(self._wav)

    def close(self) -> None:
        self._pos = len(self._wav)


class SoundDeviceInput:
    """The microphone: a PortAudio input stream at 16 kHz feeding a queue of frames."""

    def __init__(self, device: str | int | None = None) -> None:
        sd = _sounddevice()
        self._queue: queue.Queue[np.ndarray] = queue.Queue()
        try:
            self._stream = sd.InputStream(samplerate=INPUT_RATE, blocksize=FRAME, channels=1, dtype="float32",
                                          device=_device(device), callback=self._callback)
            self._stream.start()
        except Exception as exc:  # PortAudioError, ValueError for an unknown device
            raise AudioError(f"cannot open {_named('input', device)}: {exc}; see vita chat --list-devices") from None

    def _callback(self, indata: np.ndarray, frames: int, _time: Any, _status: Any) -> None:
        self._queue.put(indata[:, 0].copy())

    def read(self, timeout: float | None = None) -> np.ndarray | None:
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            return None

    def poll(self) -> np.ndarray | None:
        try:
            return self._queue.get_nowait()
        except queue.Empty:
            return None

    ended = False

    def close(self) -> None:
        self._stream.stop()
        self._stream.close()


class _Lag:
    """First-sound time and starvation accounting shared by the outputs."""

    def __init__(self) -> None:
        self.first_sound: float | None = None
        self.underrun_seconds = 0.0
        self.expecting = False

    def begin(self) -> None:
        """A new answer starts: reset the per-answer accounts."""
        self.first_sound, self.underrun_seconds, self.expecting = None, 0.0, True

    def end(self) -> None:
        """All audio of the answer has been written."""
        self.expecting = False


class FileOutput(_Lag):
    """A speaker that keeps what it was given, with a virtual real-time playback clock."""

    def __init__(self, sample_rate: int) -> None:
        super().__init__()
        self.sample_rate = sample_rate
        self.chunks: list[np.ndarray] = []
        self._play_end = 0.0

    def write(self, pcm: np.ndarray) -> None:
        if not pcm.size:
            return
        now = time.perf_counter()
        if self.first_sound is None:
            self.first_sound, self._play_end = now, now
        elif now > self._play_end:
            self.underrun_seconds += now - self._play_end
            self._play_end = now
        self._play_end += pcm.size / self.sample_rate
        self.chunks.append(pcm)

    def stop(self) -> None:
        """Barge-in: whatever has not been played by now is dropped."""
        now = time.perf_counter()
        if self.first_sound is not None and now < self._play_end:
            drop = int((self._play_end - now) * self.sample_rate)
            kept = np.concatenate(self.chunks)[: max(0, sum(c.size for c in self.chunks) - drop)]
            self.chunks = [kept]
            self._play_end = now
        self.expecting = False

    playing = False

    def drain(self) -> None:
        """A file plays instantly."""

    def idle(self) -> None:
        """Nothing to stop between answers."""

    def take(self) -> np.ndarray:
        """The audio of the answer so far, and start a new one."""
        out = np.concatenate(self.chunks) if self.chunks else np.zeros(0, dtype=np.float32)
        self.chunks = []
        return out

    def close(self) -> None:
        self.chunks = []


class SoundDeviceOutput(_Lag):
    """The speaker: a PortAudio output stream pulling queued PCM; starvation while expecting is lag."""

    def __init__(self, sample_rate: int, device: str | int | None = None) -> None:
        super().__init__()
        sd = _sounddevice()
        self.sample_rate = sample_rate
        self._buffer: collections.deque[np.ndarray] = collections.deque()
        self._lock = threading.Lock()
        self._played: list[np.ndarray] = []
        try:
            self._stream = sd.OutputStream(samplerate=sample_rate, channels=1, dtype="float32",
                                           device=_device(device), callback=self._callback)
        except Exception as exc:  # PortAudioError, ValueError for an unknown device
            raise AudioError(f"cannot open {_named('output', device)}: {exc}; see vita chat --list-devices") from None

    def _callback(self, outdata: np.ndarray, frames: int, when: Any, _status: Any) -> None:
        out = np.zeros(frames, dtype=np.float32)
        filled = 0
        with self._lock:
            while filled < frames and self._buffer:
                chunk = self._buffer[0]
                n = min(frames - filled, chunk.size)
                out[filled : filled + n] = chunk[:n]
                filled += n
                if n == chunk.size:
                    self._buffer.popleft()
                else:
                    self._buffer[0] = chunk[n:]
            if filled and self.first_sound is None:  # this buffer reaches the DAC after the device's latency
                self.first_sound = time.perf_counter() + max(0.0, when.outputBufferDacTime - when.currentTime)
            if filled < frames and self.expecting and self.first_sound is not None:
                self.underrun_seconds += (frames - filled) / self.sample_rate
        if filled:
            self._played.append(out[:filled])
        outdata[:, 0] = out

    def write(self, pcm: np.ndarray) -> None:
        if pcm.size:
            with self._lock:
                self._buffer.append(np.asarray(pcm, dtype=np.float32))

    def begin(self) -> None:
        """An answer starts: reset the accounts and run the stream (it sleeps between answers)."""
        with self._lock:
            super().begin()
        if not self._stream.active:
            self._stream.start()

    def idle(self) -> None:
        """The answer is over: let the last buffers play out and stop pulling."""
        if self._stream.active:
            self._stream.stop()

    @property
    def playing(self) -> bool:
        return bool(self._buffer)

    def stop(self) -> None:
        with self._lock:
            self._buffer.clear()
            self.expecting = False

    def drain(self, timeout: float = 600.0) -> None:
        """Block until everything queued has been played, then stop the stream."""
        deadline = time.monotonic() + timeout
        while self._buffer and time.monotonic() < deadline:
            time.sleep(0.01)
        self.idle()

    def take(self) -> np.ndarray:
        out = np.concatenate(self._played) if self._played else np.zeros(0, dtype=np.float32)
        self._played = []
        return out

    def close(self) -> None:
        self.idle()
        self._stream.close()

