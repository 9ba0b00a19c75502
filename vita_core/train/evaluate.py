"""How well the main head and each MCTP module predict audio codes: loss and top-1 on the audio targets,
against chance. On held-out packs (`vita train --eval-data`) this is what tells learning from memorising:
a model can copy its training speech long before it can say a sentence it never heard."""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Callable

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
    main_loss: float | None = None  # mean cross-entropy (nats) over the same targets
    mtp_loss: list[float | None] = field(default_factory=list)


def audio_accuracy(model: VitaAudioForCausalLM | Any, dataset: Dataset, audio_offset: int, num_codes: int,
                   max_packs: int = 16, num_mtp: int | None = None,
                   autocast: Callable[[], Any] = nullcontext) -> AudioAccuracy:
    """Run the training forward with non-audio labels ignored, so LossOutput's counts are exactly
    the audio targets of the main head and of each module (module k predicts k+2 tokens ahead).

    `model` may be the model wrapped for distributed training (then give `num_mtp`; every process
    must call this); `autocast` is the training's (Accelerate's `autocast`), so the figures are those
    of the precision it trains in."""
    was_training = model.training
    model.eval()
    num_mtp = model.num_mtp if num_mtp is None else num_mtp
    n = min(len(dataset), max_packs)
    main = [0, 0, 0.0]
    mtp = [[0, 0, 0.0] for _ in range(num_mtp)]
    codes = torch.zeros(num_codes, dtype=torch.long)
    device = next(model.parameters()).device
    with torch.no_grad(), autocast():
        for i in range(n):
            item = dataset[i]
            labels = item["labels"]
            audio = (labels >= audio_offset) & (labels < audio_offset + num_codes)
            codes += torch.bincount(labels[audio] - audio_offset, minlength=num_codes)
            out = model(item["input_ids"][None].to(device), item["position_ids"][None].to(device),
                        torch.where(audio, labels, -100)[None].to(device))
            main[0] += out.main_correct
            main[1] += out.main_count
            main[2] += float(out.main_loss) * out.main_count
            for k in range(num_mtp):
                mtp[k][0] += out.mtp_correct[k]
                mtp[k][1] += out.mtp_counts[k]
                mtp[k][2] += float(out.mtp_losses[k]) * out.mtp_counts[k]
    model.train(was_training)
    total = int(codes.sum())
    return AudioAccuracy(
        packs=n, targets=total, main_acc=main[0] / main[1] if main[1] else None,
        mtp_acc=[c / t if t else None for c, t, _ in mtp],
        majority=int(codes.max()) / total if total else 0.0, uniform=1.0 / num_codes,
        main_loss=main[2] / main[1] if main[1] else None, mtp_loss=[ce / t if t else None for _, t, ce in mtp],
    )
