"""The training loop on Hugging Face Accelerate: one process, DDP, FSDP or DeepSpeed, as launched.

`train()` builds the stage's model, optimizer and schedule, reads packed shards in a fixed
order, and writes checkpoints in the released format. A checkpoint folder is the released
layout (config.json, safetensors, tokenizer files, and the codec record codec.json + codec/ when the
tokenizer or init folder has one, see vita_core/codec/record.py) plus `train_state/` (Accelerate's optimizer,
scheduler and RNG state) and `trainer.json`; `resume=True` continues from the newest one to the
result an uninterrupted run gives.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch.utils.data import DataLoader, Dataset

from vita_core.codec.record import RECORD, copy_record, read_record
from vita_core.errors import DiskFullError, InputError
from vita_core.files import append_line, disk_full, remove_stale, reporting_full_disk, swap_folder, write_text
from vita_core.model.checkpoint import PRESETS, default_attention, save_model
from vita_core.model.modeling import LossOutput, VitaAudioForCausalLM
from vita_core.tokens import layout_from_tokenizer
from vita_core.train.data import EpochSampler, collate, open_packed
from vita_core.train.evaluate import audio_accuracy
from vita_core.train.setup import init_model, lr_ratio, param_groups, set_trainable
from vita_core.train.stages import StageSpec

CHECKPOINT_PREFIX = "checkpoint-"
FINAL = "model"
METRICS = "metrics.jsonl"
# What a killed save leaves beside its target: `.NAME.partial` (a checkpoint being written),
# `..NAME.partial.partial-xxxx` (its weights being staged), `.NAME.old` (the folder it replaced).
_STALE = tuple(f"{dots}{name}" for dots in (".", "..") for name in (CHECKPOINT_PREFIX, f"{FINAL}.", f"{METRICS}."))


@dataclass
class StepMetrics:
    """One optimizer step, aggregated over micro-batches and processes (losses token-weighted)."""

    step: int
    lr: float
    loss: float
    grad_norm: float
    main_loss: float | None
    main_acc: float | None
    mtp_loss: list[float | None] = field(default_factory=list)
    mtp_acc: list[float | None] = field(default_factory=list)
    tokens: int = 0


@dataclass
class TrainResult:
    model_dir: Path
    steps: int
    history: list[StepMetrics]
    seconds: float


class _Tally:
    """Sums of one optimizer step's micro-batches, reduced across processes in one call."""

    def __init__(self, num_mtp: int) -> None:
        self.num_mtp = num_mtp
        self.sums: torch.Tensor | None = None

    def add(self, out: LossOutput) -> None:
        values = [torch.ones((), dtype=torch.float64), out.loss.detach().double().cpu()]
        main = out.main_loss.detach().double().cpu() * out.main_count if out.main_loss is not None else 0.0
        values += [torch.as_tensor(main, dtype=torch.float64), torch.tensor(float(out.main_count)),
                   torch.tensor(float(out.main_correct))]
        for k in range(self.num_mtp):
            values += [out.mtp_losses[k].detach().double().cpu() * out.mtp_counts[k],
                       torch.tensor(float(out.mtp_counts[k])), torch.tensor(float(out.mtp_correct[k]))]
        row = torch.stack([v.double() for v in values])
        self.sums = row if self.sums is None else self.sums + row

    def finish(self, accelerator: Any, step: int, lr: float, grad_norm: float, detached: bool) -> StepMetrics:
        sums = accelerator.reduce(self.sums.to(accelerator.device), reduction="sum").cpu().tolist()
        self.sums = None
        ratio = lambda a, b: a / b if b else None  # noqa: E731
        metrics = StepMetrics(step=step, lr=lr, loss=sums[1] / sums[0], grad_norm=grad_norm,
                              main_loss=None if detached else ratio(sums[2], sums[3]),
                              main_acc=None if detached else ratio(sums[4], sums[3]), tokens=int(sums[3]))
        for k in range(self.num_mtp):
            ce, n, correct = sums[5 + 3 * k: 8 + 3 * k]
            metrics.mtp_loss.append(ratio(ce, n))
            metrics.mtp_acc.append(ratio(correct, n))
        return metrics


def mixed_precision(spec: StageSpec, cuda: bool) -> str:
    """Accelerate's mixed_precision for the recipe: auto is bf16 autocast on CUDA and fp32 on CPU (where
    bf16 autocast pays only on CPUs with AMX or avx512_bf16, so a recipe asks for it)."""
    if spec.mixed_precision == "auto":
        return "bf16" if cuda else "no"
    return spec.mixed_precision


def make_accelerator(spec: StageSpec, distributed: str | Path | None = None) -> Any:
    """An Accelerator in the recipe's precision; a DeepSpeed JSON or FSDP YAML from recipes/distributed."""
    from accelerate import Accelerator
    from accelerate.utils import DeepSpeedPlugin, FullyShardedDataParallelPlugin

    kwargs: dict[str, Any] = {}
    if distributed is not None:
        path = Path(distributed)
        if not path.is_file():
            raise InputError(f"--distributed {path} does not exist; see recipes/distributed/")
        if path.suffix == ".json":
            if importlib.util.find_spec("deepspeed") is None:
                raise InputError(f"--distributed {path} needs DeepSpeed: pip install deepspeed (or use "
                                 "recipes/distributed/fsdp.yaml)")
            kwargs["deepspeed_plugin"] = DeepSpeedPlugin(
                hf_ds_config=str(path), gradient_accumulation_steps=spec.grad_accum,
                gradient_clipping=spec.max_grad_norm)
        elif path.suffix in (".yaml", ".yml"):
            import yaml

            kwargs["fsdp_plugin"] = FullyShardedDataParallelPlugin(**(yaml.safe_load(path.read_text()) or {}))
        else:
            raise InputError(f"--distributed {path}: expected a DeepSpeed .json or an FSDP .yaml")
    cuda = torch.cuda.is_available()
    return Accelerator(gradient_accumulation_steps=spec.grad_accum, mixed_precision=mixed_precision(spec, cuda),
                       cpu=not cuda, step_scheduler_with_optimizer=False, **kwargs)


def checkpoints(output_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first (a partial save never carries the final name)."""
    found = [p for p in output_dir.glob(f"{CHECKPOINT_PREFIX}*") if (p / "trainer.json").is_file()]
    return sorted(found, key=lambda p: int(p.name[len(CHECKPOINT_PREFIX):]))


def _side_files(folder: Path | None) -> list[Path]:
    """Tokenizer and generation files that travel with the weights."""
    if folder is None or not folder.is_dir():
        return []
    return [p for p in folder.iterdir()
            if p.is_file() and p.name not in ("config.json", RECORD)
            and not p.name.startswith(("model", ".", "trainer"))]


def _codec_source(tokenizer: str | Path | None, init: str | Path) -> Path | None:
    """The folder whose codec record (codec.json + codec folder) the checkpoints inherit: the
    tokenizer folder's, else the init checkpoint's; None when neither records one (glm4voice)."""
    for folder in (tokenizer, init):
        if folder is not None and (Path(folder) / RECORD).is_file():
            return Path(folder)
    return None


def _generation_config(side_files: list[Path], data: Any) -> dict[str, Any] | None:
    """The checkpoints' generation_config.json: the one that came with the init (or tokenizer)
    folder, its `mtp_inference_mode` set to the packed data's interleave ratio, as upstream's
    training copies its text-audio ratio there; so the layout a model was trained on is the one
    it generates with. None when the data records no ratio (side files are then copied as they are)."""
    manifest = Path(data) / "manifest.json" if isinstance(data, (str, Path)) else None
    ratio = json.loads(manifest.read_text()).get("ratio") if manifest is not None and manifest.is_file() else None
    if not ratio:
        return None
    given = [p for p in side_files if p.name == "generation_config.json"]
    config = json.loads(given[0].read_text()) if given else {}
    return {**config, "mtp_inference_mode": [int(v) for v in ratio]}


def _side_tokenizer(side_files: list[Path]) -> Any | None:
    """The tokenizer that ships with the checkpoints (None when there is none)."""
    names = {p.name for p in side_files}
    if not names & {"tokenizer.json", "vocab.json"}:
        return None
    from vita_core.tokens import load_tokenizer

    return load_tokenizer(side_files[0].parent)


def _check_tokenizer(init: str | Path, tokenizer: str | Path | None, side_files: list[Path]) -> None:
    """Refuse before any work a run whose model would ship without tokenizer files: tts, asr, chat and
    the next stage could not load it. None is made up here: the ids must be those the data was
    prepared with, so the fix is to name that tokenizer (`vita prepare --model`'s folder)."""
    if {p.name for p in side_files} & {"tokenizer.json", "vocab.json"}:
        return
    if tokenizer is not None:
        problem = "holds no tokenizer.json or vocab.json" if Path(tokenizer).is_dir() else "is not a folder"
        raise InputError(f"--tokenizer {tokenizer} {problem}; give the folder `vita prepare --model` used")
    if not Path(init).is_dir() and str(init).lower() not in PRESETS:
        return  # init_model names the mistake: neither a folder nor a preset
    what = ("a folder without tokenizer files" if Path(init).is_dir()
            else "a size preset (random weights, no tokenizer)")
    raise InputError(f"--init {init} is {what}; pass --tokenizer FOLDER, the --model folder the data was "
                     "prepared with, so the trained model can be loaded")


def _save(accelerator: Any, model: Any, folder: Path, side_files: list[Path], dtype: torch.dtype,
          trainer_state: dict[str, Any] | None, codec_source: Path | None = None,
          generation: dict[str, Any] | None = None) -> None:
    """Released-format weights (+ resumable state), staged beside `folder` and renamed into place."""
    staging = folder.with_name(f".{folder.name}.partial")
    if accelerator.is_main_process:
        shutil.rmtree(staging, ignore_errors=True)
    accelerator.wait_for_everyone()
    try:
        with reporting_full_disk(folder, folder.parent):
            _stage(accelerator, model, staging, side_files, dtype, trainer_state, codec_source, generation)
    except BaseException as exc:
        if accelerator.is_main_process:
            shutil.rmtree(staging, ignore_errors=True)
        if isinstance(exc, DiskFullError):  # named after the folder being saved, not its staging name
            raise disk_full(folder) from exc
        raise
    if accelerator.is_main_process:
        swap_folder(staging, folder)
    accelerator.wait_for_everyone()


def _stage(accelerator: Any, model: Any, staging: Path, side_files: list[Path], dtype: torch.dtype,
           trainer_state: dict[str, Any] | None, codec_source: Path | None,
           generation: dict[str, Any] | None = None) -> None:
    state = accelerator.get_state_dict(model)
    if accelerator.is_main_process:
        unwrapped = accelerator.unwrap_model(model)
        with torch.device("meta"):
            shell = VitaAudioForCausalLM(unwrapped.config)
        shell.load_state_dict({k: v.to(dtype) for k, v in state.items()}, assign=True, strict=False)
        if unwrapped.config.tie_word_embeddings:
            shell.lm_head.weight = shell.model.embed_tokens.weight
        shell.upstream_config = getattr(unwrapped, "upstream_config", {})
        save_model(shell, staging)
        for f in side_files:
            shutil.copy2(f, staging / f.name)
        if generation is not None:
            write_text(staging / "generation_config.json", json.dumps(generation, indent=2) + "\n")
        if codec_source is not None:
            copy_record(codec_source, staging)
    accelerator.wait_for_everyone()
    if trainer_state is not None:
        accelerator.save_state(str(staging / "train_state"))
        if accelerator.is_main_process:
            write_text(staging / "trainer.json", json.dumps(trainer_state, indent=2) + "\n")
    accelerator.wait_for_everyone()


def _rewrite_log(log: Path, upto: int) -> None:
    """Keep the JSONL rows of steps <= upto (what the resumed checkpoint had done), atomically."""
    if not log.is_file():
        return
    rows = [line for line in log.read_text().splitlines() if line and json.loads(line)["step"] <= upto]
    write_text(log, "".join(r + "\n" for r in rows))


def _restore(accelerator: Any, checkpoint: Path, identity: dict[str, Any], log: Path) -> int:
    """Load a checkpoint's optimizer, scheduler, RNG and weights; return the step it was taken at."""
    saved = json.loads((checkpoint / "trainer.json").read_text())
    if {k: saved.get(k) for k in identity} != json.loads(json.dumps(identity)):
        raise InputError(f"{checkpoint} was written by a different recipe, step count or global batch; "
                         "resume with the same flags, or choose another --output-dir")
    accelerator.load_state(str(checkpoint / "train_state"))
    if accelerator.is_main_process:
        _rewrite_log(log, int(saved["step"]))
    accelerator.wait_for_everyone()
    return int(saved["step"])


def _fresh(accelerator: Any, output_dir: Path, log: Path, old: list[Path]) -> int:
    """Start at step 0; with --overwrite the previous run's checkpoints and metrics go first."""
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        for checkpoint in old:
            shutil.rmtree(checkpoint)
        log.unlink(missing_ok=True)
    accelerator.wait_for_everyone()
    return 0


def _check_output_dir(output_dir: Path, existing: list[Path], resume: bool, overwrite: bool) -> None:
    """Refuse to replace a finished (or resumable) run unless asked to, as `vita prepare` does."""
    if overwrite or not output_dir.is_dir():
        return
    if existing and not resume:
        raise InputError(f"{output_dir} already holds {existing[-1].name}; pass --resume to continue it, "
                         "--overwrite to start again from step 0, or choose another --output-dir")
    log = output_dir / METRICS
    finished = [p.name + ("/" if p.is_dir() else "") for p in (output_dir / FINAL, log)
                if p.is_dir() or (p.is_file() and p.stat().st_size)]
    if finished and not existing:
        hint = "it has no checkpoint to resume from; " if resume else ""
        raise InputError(f"{output_dir} already holds a run ({', '.join(finished)}); {hint}pass --overwrite to "
                         "replace it, or choose another --output-dir")


def train(
    spec: StageSpec,
    init: str | Path,
    data: str | Path | Dataset,
    output_dir: str | Path,
    *,
    max_steps: int | None = None,
    save_every: int | None = None,
    resume: bool = False,
    overwrite: bool = False,
    tokenizer: str | Path | None = None,
    distributed: str | Path | None = None,
    eval_data: str | Path | Dataset | None = None,
    progress: Callable[[str, Any], None] | None = None,
) -> TrainResult:
    """Run one stage. `progress(kind, payload)` gets ("start", info), ("step", StepMetrics),
    ("eval", row) and ("saved", path) on the main process; metrics also go to output_dir/metrics.jsonl.

    With `eval_data` (packs of sentences no step trains on) each checkpoint and the final model are
    first scored on it: loss and top-1 of every head on the audio targets (`audio_accuracy`), as a
    {"step", "eval"} row in metrics.jsonl.

    A folder that already holds a run is refused unless `resume` (continue from its newest
    checkpoint, named in info["resumed_from"]) or `overwrite`; leftovers of a killed save are
    removed first and listed in info["removed"].
    """
    from accelerate.utils import set_seed

    started = time.perf_counter()
    output_dir = Path(output_dir)
    total = int(max_steps or spec.max_steps)
    if total <= 0 or (save_every is not None and save_every <= 0):
        raise InputError("--max-steps and --save-every must be positive")
    accelerator = make_accelerator(spec, distributed)
    report = progress if (progress is not None and accelerator.is_main_process) else (lambda kind, payload: None)
    existing = checkpoints(output_dir) if output_dir.is_dir() else []
    _check_output_dir(output_dir, existing, resume, overwrite)
    removed = remove_stale(output_dir, _STALE) if accelerator.is_main_process else []
    accelerator.wait_for_everyone()
    start_from = existing[-1] if existing and resume else None
    dataset = open_packed(data, spec.seq_len)
    held_out = None if eval_data is None else open_packed(eval_data, spec.seq_len)
    side = _side_files(Path(tokenizer) if tokenizer else Path(init))
    _check_tokenizer(init, tokenizer, side)
    generation = _generation_config(side, data)
    codec_source = _codec_source(tokenizer, init)
    if codec_source is not None:
        read_record(codec_source)  # a broken record fails before the first step, not at the first save
    set_seed(spec.seed)
    side_tok = _side_tokenizer(side)
    # a preset starts with the tokenizer's vocabulary (vita-mini's BPE + its codec's codes), not the released one
    tokens = layout_from_tokenizer(side_tok) if side_tok is not None and not Path(init).is_dir() else None
    model = init_model(init, spec, default_attention(accelerator.device),
                       vocab_size=len(side_tok) if side_tok is not None else None, tokens=tokens)
    if spec.gradient_checkpointing:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    set_trainable(model, spec)
    optimizer = torch.optim.AdamW(param_groups(model, spec), lr=spec.lr, betas=spec.adam_betas, eps=spec.adam_eps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_ratio(s, total, spec))
    global_batch = spec.micro_batch_size * spec.grad_accum * accelerator.num_processes
    sampler = EpochSampler(len(dataset), global_batch, spec.seed)
    loader = DataLoader(dataset, batch_size=spec.micro_batch_size, sampler=sampler, collate_fn=collate,
                        drop_last=True)
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
    identity = {"stage": spec.stage, "spec": asdict(spec), "total_steps": total, "global_batch": global_batch}

    log = output_dir / METRICS
    if start_from is not None:
        step = _restore(accelerator, start_from, identity, log)
    else:
        step = _fresh(accelerator, output_dir, log, existing)

    save_dtype = torch.bfloat16 if accelerator.mixed_precision == "bf16" else torch.float32
    unwrapped = accelerator.unwrap_model(model)
    trainable = [p for p in model.parameters() if p.requires_grad]
    tally = _Tally(unwrapped.num_mtp)
    steps_per_epoch = len(sampler) // global_batch
    report("start", {"stage": spec.stage, "name": spec.name, "total": total, "start": step,
                     "num_mtp": unwrapped.num_mtp, "processes": accelerator.num_processes,
                     "global_batch": global_batch, "trainable": sum(p.numel() for p in trainable),
                     "resumed_from": start_from, "removed": removed})
    history: list[StepMetrics] = []

    held_out_layout = None if held_out is None else layout_from_tokenizer(side_tok)

    def evaluate(at: int) -> None:
        if held_out is None:
            return
        acc = audio_accuracy(model, held_out, held_out_layout.audio_offset, held_out_layout.num_codes, len(held_out),
                             num_mtp=unwrapped.num_mtp, autocast=accelerator.autocast)
        row = {"step": at, "eval": asdict(acc)}
        if accelerator.is_main_process:
            append_line(log, json.dumps(row))
        report("eval", row)

    model.train()
    while step < total:
        epoch = step // steps_per_epoch
        skip = (step - epoch * steps_per_epoch) * spec.grad_accum
        batches = accelerator.skip_first_batches(loader, skip) if skip else loader
        batches.set_epoch(epoch)  # Accelerate's loader passes its epoch to the sampler on each pass
        grad_norm = 0.0
        for batch in batches:
            with accelerator.accumulate(model):
                out = model(**batch, detach_backbone=spec.detach_backbone)
                accelerator.backward(out.loss)
                if accelerator.sync_gradients:
                    norm = accelerator.clip_grad_norm_(trainable, spec.max_grad_norm)
                    grad_norm = float("nan") if norm is None else float(norm)  # DeepSpeed may not say
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            tally.add(out)
            if not accelerator.sync_gradients:
                continue
            lr = spec.lr * lr_ratio(step, total, spec)
            scheduler.step()
            step += 1
            metrics = tally.finish(accelerator, step, lr, grad_norm, spec.detach_backbone)
            history.append(metrics)
            if accelerator.is_main_process:
                append_line(log, json.dumps(asdict(metrics)))
            report("step", metrics)
            if save_every and step % save_every == 0 and step < total:
                evaluate(step)
                folder = output_dir / f"{CHECKPOINT_PREFIX}{step:07d}"
                _save(accelerator, model, folder, side, save_dtype, {**identity, "step": step}, codec_source,
                      generation)
                report("saved", folder)
            if step >= total:
                break
    evaluate(step)
    final = output_dir / FINAL
    _save(accelerator, model, final, side, save_dtype, None, codec_source, generation)
    report("saved", final)
    return TrainResult(model_dir=final, steps=step, history=history, seconds=time.perf_counter() - started)
