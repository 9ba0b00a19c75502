"""Running a `vita` command as two CPU processes under torchrun, as a user would on one machine."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def torchrun(args: list[str], processes: int = 2, timeout: float = 300) -> subprocess.CompletedProcess:
    """`torchrun --standalone --nproc_per_node N -m vita_cli ARGS` (a free port, so parallel runs never meet)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                           str(processes), "-m", "vita_cli", *args],
                          env=env, capture_output=True, text=True, timeout=timeout)
