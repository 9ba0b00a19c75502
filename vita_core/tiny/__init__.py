"""Builders of tiny random-init folders in the released formats (tokenizers, codecs, Whisper), for tests and offline trials; never used by product code."""
