"""ShapeBias under real 2-process DDP (gloo, CPU): same numbers and CSV rows as 1 process,
although DistributedSampler pads the shards with duplicates."""

from __future__ import annotations

import math
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.utils.data import DistributedSampler

from selfsup_vis.data.cue_conflict_categories import CATEGORIES
from selfsup_vis.shape_bias.analysis import read_csv
from selfsup_vis.shape_bias.metric import ShapeBias, write_rows_csv

pytestmark = pytest.mark.ddp
N_IMAGES = 37  # odd: DistributedSampler pads one rank with a duplicate


def _fake_data(n: int = N_IMAGES) -> tuple[torch.Tensor, list[str]]:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(n, 1000, generator=g) * 3
    names = []
    for i in range(n):
        shape = CATEGORIES[i % 16]
        texture = CATEGORIES[(i * 7 + 3) % 16]
        names.append(f"{shape}/{shape}{i}-{texture}{i % 3 + 1}.png")
    return logits, names


def _run(metric: ShapeBias, logits: torch.Tensor, names: list[str], indices: list[int],
         batch: int = 5) -> dict:
    for start in range(0, len(indices), batch):
        idx = indices[start:start + batch]
        metric.update(logits[idx], [names[i] for i in idx], index=torch.tensor(idx))
    out = metric.compute()
    return {"compute": {k: v.tolist() for k, v in out.items()}, "rows": metric.rows()}


def _worker(rank: int, world: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        logits, names = _fake_data()
        sampler = DistributedSampler(range(len(names)), num_replicas=world, rank=rank,
                                     shuffle=True, seed=1)
        result = _run(ShapeBias(subject="m"), logits, names, list(sampler))
        torch.save(result, Path(out_dir) / f"rank{rank}.pt")
        if rank == 0:
            write_rows_csv(Path(out_dir) / "ddp.csv", result["rows"])
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _same(a, b) -> bool:
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    return a == b


def test_two_process_gloo_matches_single_process(tmp_path):
    mp.start_processes(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True,
                       start_method="spawn")
    logits, names = _fake_data()
    single = _run(ShapeBias(subject="m"), logits, names, list(range(len(names))))
    write_rows_csv(tmp_path / "single.csv", single["rows"])
    for rank in range(2):
        ddp = torch.load(tmp_path / f"rank{rank}.pt", weights_only=False)
        assert ddp["compute"]["num_duplicates"] == 1  # the padding was seen and merged
        for key, value in single["compute"].items():
            if key != "num_duplicates":
                assert _same(value, ddp["compute"][key]), key
        assert ddp["rows"] == single["rows"]
    assert (tmp_path / "ddp.csv").read_bytes() == (tmp_path / "single.csv").read_bytes()
    assert len(read_csv(tmp_path / "ddp.csv")) == N_IMAGES
