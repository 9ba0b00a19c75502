"""Running a `vita` command as a user would: as one process, or as two CPU processes under torchrun.

Both run in fresh interpreters with one thread each, so they compare: floats of the tiny models can
change with the thread count, and with state that earlier tests leave in the pytest process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _run(command: list[str], timeout: float) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    return subprocess.run([sys.executable, *command], env=env, capture_output=True, text=True, timeout=timeout)


def vita(args: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    """`vita ARGS` in one process."""
    return _run(["-m", "vita_cli", *args], timeout)


def torchrun(args: list[str], processes: int = 2, timeout: float = 300) -> subprocess.CompletedProcess:
    """`torchrun --standalone --nproc_per_node N -m vita_cli ARGS` (a free port, so parallel runs never meet)."""
    return _run(["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes),
                 "-m", "vita_cli", *args], timeout)
