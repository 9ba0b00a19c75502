"""Several processes under `torchrun` for jobs made of independent items (prepare's shards, eval's
utterances): which items are this process's, a barrier, and one process's errors seen by all.

torchrun sets RANK, WORLD_SIZE, LOCAL_RANK and the rendezvous address (env://); without them a job
runs as the single rank 0. The group is gloo whatever device does the work: it only carries
barriers and small Python objects. Work between two barriers can take hours (a corpus to encode, a
test set to synthesize), so the group waits far longer than torch's 30-minute default; a rank that
dies is noticed by torchrun, which stops the others.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence, TypeVar

from vita_core.errors import InputError

T = TypeVar("T")
WAIT = timedelta(days=7)


@dataclass(frozen=True)
class Ranks:
    """This process's place among `world` processes; the default is one process alone."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def owns(self, index: int) -> bool:
        """Item `index` of a fixed list is rank index % world's, so the split never depends on what is done."""
        return index % self.world == self.rank

    def device(self, device: str) -> str:
        """Each rank on its own GPU (cuda:LOCAL_RANK) when several share a machine; otherwise `device` as given."""
        if self.world > 1 and device in ("auto", "cuda"):
            import torch

            if torch.cuda.is_available():
                return f"cuda:{self.local_rank % torch.cuda.device_count()}"
        return device

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()

    def gather(self, value: T) -> list[T]:
        """Every rank's `value`, in rank order, on every rank."""
        if self.world == 1:
            return [value]
        import torch.distributed as dist

        values: list[Any] = [None] * self.world
        dist.all_gather_object(values, value)
        return values

    def check_shared(self, paths: Sequence[Path], flag: str) -> None:
        """Stop every rank when one cannot see `paths`, written by rank 0 (an output folder on each node's own
        disk), before any work is done in it."""
        if self.world == 1:
            return
        blind = [str(r) for r, sees in enumerate(self.gather(all(Path(p).exists() for p in paths))) if not sees]
        if blind:
            raise InputError(f"rank {', '.join(blind)} cannot see {Path(paths[0]).parent}, which rank 0 wrote; "
                             f"{flag} must be one folder that every process (and node) sees")

    def on_main(self, action: Callable[[], None]) -> None:
        """Run `action` on rank 0 only, then on every rank raise what it raised (an error of rank 0's set-up,
        such as a refused output folder, stops all ranks with the same one-line message)."""
        error: BaseException | None = None
        if self.is_main:
            try:
                action()
            except Exception as exc:  # re-raised below, on this rank as on the others
                error = exc
        if self.world > 1:
            import torch.distributed as dist

            box = [error]
            dist.broadcast_object_list(box, src=0)
            error = box[0]
        if error is not None:
            raise error


def _env_int(name: str, default: str) -> int:
    value = os.environ.get(name, default)
    try:
        return int(value)
    except ValueError:
        raise InputError(f"environment variable {name}={value!r} is not a number; launch with torchrun "
                         "or unset it") from None


@contextmanager
def process_group() -> Iterator[Ranks]:
    """The processes torchrun started (a gloo group over env://), or a single process without torchrun."""
    world = _env_int("WORLD_SIZE", "1")
    rank, local_rank = _env_int("RANK", "0"), _env_int("LOCAL_RANK", "0")
    if world < 1 or not 0 <= rank < world:
        raise InputError(f"RANK={rank} and WORLD_SIZE={world} do not fit; launch with torchrun or unset them")
    if world == 1:
        yield Ranks()
        return
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method="env://", rank=rank, world_size=world, timeout=WAIT)
    try:
        yield Ranks(rank, world, local_rank)
    finally:
        dist.destroy_process_group()
