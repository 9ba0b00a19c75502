"""vita_core.ranks: the split, gather and rank 0's errors in a real two-process gloo group."""

import json
import os
import socket
from pathlib import Path

import pytest
import torch.multiprocessing as mp

from vita_core.errors import InputError
from vita_core.ranks import Ranks, process_group


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _refuse() -> None:
    raise InputError("--out x already holds other data")


def _own_folders(ranks: Ranks, out: Path, tokenizer_dir: str) -> list[str]:
    """Each rank given a folder of its own, as nodes with local disks would see: every rank stops at once."""
    from datakit import StandInEncoder, write_tone

    from vita_core.data.prepare import gather, prepare
    from vita_core.eval.model_runs import claim_folders
    from vita_core.tokens import load_tokenizer

    errors = []
    try:
        claim_folders({out / f"wavs{ranks.rank}" / "boost": {"mode": "boost"}}, ranks)
    except InputError as exc:
        errors.append(str(exc))
    lines = out / "list.txt"
    if ranks.is_main:
        lines.write_text("".join(f"{write_tone(out / f'a{n}.wav', 0.3, 200 + n)}\tword\n" for n in range(4)))
    ranks.barrier()
    try:
        prepare(gather([(lines, "list")]), out / f"prepared{ranks.rank}", load_tokenizer(tokenizer_dir),
                StandInEncoder(), "standin", out / "cache", shard_size=1, ranks=ranks)
    except InputError as exc:
        errors.append(str(exc))
    return errors


def _member(rank: int, port: int, out: str, tokenizer_dir: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    with process_group() as ranks:
        mine = [i for i in range(7) if ranks.owns(i)]
        everyone = ranks.gather(mine)
        ranks.on_main(lambda: None)
        try:
            ranks.on_main(_refuse)
            error = None
        except InputError as exc:
            error = str(exc)
        refused = _own_folders(ranks, Path(out), tokenizer_dir)
        with open(f"{out}/rank{rank}.json", "w") as f:
            json.dump([ranks.rank, ranks.world, ranks.device("cpu"), everyone, error, refused], f)


def test_two_ranks_split_gather_share_rank_zeros_error_and_need_one_folder(tmp_path, tokenizer_dir):
    mp.spawn(_member, args=(_free_port(), str(tmp_path), str(tokenizer_dir)), nprocs=2)
    split = [[0, 2, 4, 6], [1, 3, 5]]
    for rank in (0, 1):
        got = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert got[:5] == [rank, 2, "cpu", split, "--out x already holds other data"]
        assert got[5] == [
            f"rank 1 cannot see {tmp_path / f'wavs{rank}' / 'boost'}, which rank 0 wrote; "
            "--out-dir must be one folder that every process (and node) sees",
            f"rank 1 cannot see {tmp_path / f'prepared{rank}'}, which rank 0 wrote; "
            "--out must be one folder that every process (and node) sees",
        ]
    assert not (tmp_path / "prepared1").exists() and not (tmp_path / "wavs1").exists()


def test_one_process_without_torchrun_and_bad_variables(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    with process_group() as ranks:
        assert ranks == Ranks() and ranks.is_main and ranks.gather(3) == [3] and ranks.device("auto") == "auto"
        with pytest.raises(InputError, match="already holds other data"):
            ranks.on_main(_refuse)
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(InputError, match="WORLD_SIZE='two' is not a number"), process_group():
        pass
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "2")
    with pytest.raises(InputError, match="RANK=2 and WORLD_SIZE=2 do not fit"), process_group():
        pass
