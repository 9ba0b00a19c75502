"""Live spoken conversation: audio devices, voice activity detection and the turn loop."""
