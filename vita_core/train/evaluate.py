"""How well each MCTP module predicts audio codes: top-1 on audio targets against chance."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.data import Dataset

from vita_core.model.modeling import VitaAudioForCausalLM


@dataclass
class AudioAccuracy:
    """Top-1 accuracy of the main head and each MCTP module where the target is an audio code."""

    packs: int
    targets: int
    main_acc: float | None
    mtp_acc: list[float | None]
    majority: float   # always guessing the most frequent code in these targets
    uniform: float    # guessing uniformly among the codebook


def audio_accuracy(model: VitaAudioForCausalLM, dataset: Dataset, audio_offset: int, num_codes: int,
                   max_packs: int = 16) -> AudioAccuracy:
    """Run the training forward with non-audio labels ignored, so LossOutput's counts are exactly
    the audio targets of the main head and of each module (module k predicts k+2 tokens ahead)."""
    was_training = model.training
    model.eval()
    n = min(len(dataset), max_packs)
    main = [0, 0]
    mtp = [[0, 0] for _ in range(model.num_mtp)]
    codes = torch.zeros(num_codes, dtype=torch.long)
    device = next(model.parameters()).device
    with torch.no_grad():
        for i in range(n):
            item = dataset[i]
            labels = item["labels"]
            audio = (labels >= audio_offset) & (labels < audio_offset + num_codes)
            codes += torch.bincount(labels[audio] - audio_offset, minlength=num_codes)
            out = model(item["input_ids"][None].to(device), item["position_ids"][None].to(device),
                        torch.where(audio, labels, -100)[None].to(device))
            main[0] += out.main_correct
            main[1] += out.main_count
            for k in range(model.num_mtp):
                mtp[k][0] += out.mtp_correct[k]
                mtp[k][1] += out.mtp_counts[k]
    model.train(was_training)
    total = int(codes.sum())
    return AudioAccuracy(
        packs=n, targets=total, main_acc=main[0] / main[1] if main[1] else None,
        mtp_acc=[c / t if t else None for c, t in mtp],
        majority=int(codes.max()) / total if total else 0.0, uniform=1.0 / num_codes,
    )
