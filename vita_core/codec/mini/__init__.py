"""vita-mini's own speech codec: a small FSQ conv encoder and a Vocos-style iSTFT decoder (see model.py).

The trained codec ships inside the package at `BUNDLED_CODEC` (config.json + model.safetensors).
"""

from pathlib import Path

BUNDLED_CODEC = Path(__file__).resolve().parents[2] / "assets" / "vita-mini" / "codec"
