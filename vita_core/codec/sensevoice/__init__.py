"""SenseVoice-Small audio encoder and projector: the continuous audio input of VITA-Audio-Plus checkpoints."""
