"""vita-mini's own speech codec: a small FSQ mel-conv encoder and a Vocos-style iSTFT decoder (see model.py)."""
