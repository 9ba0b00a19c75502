"""GLM-4-Voice speech codec: the Whisper-VQ tokenizer (16 kHz -> 12.5 codes/s) and the flow-matching + HiFT decoder (codes -> 22.05 kHz)."""
