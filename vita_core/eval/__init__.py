"""Evaluation: the public scorers' normalisers reproduced exactly (Seed-TTS, WeNet compute-wer, the
spoken-QA "contain" judge), ASR backends loaded from local folders, and runners that never drop an item.

Modules: normalize (text rules), scoring (WER/CER, mean and pooled), sqa (QA judges), datasets (list
formats), asr/ (openai-whisper, HF Whisper, Paraformer), seedtts / asr_bench / sqa_bench (runners),
report (JSON/TSV files), tiny (random-init checkpoints in the released formats for tests).
"""
