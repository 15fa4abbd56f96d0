"""DistributedDataParallel on CPU (gloo, 2 processes): the averaged gradients equal one process's."""
import os
import socket

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from gptbook.loss import lm_loss
from gptbook.train import Trainer
from gptbook.train_config import TrainConfig

CFG = dict(model="tiny", d_model=16, n_heads=2, n_layers=1, context_length=8, batch_size=2, max_steps=2,
           lr=1e-2, warmup_steps=1, eval_interval=0, device="cpu", dtype="float32", seed=3)


def _tokens():
    rng = np.random.default_rng(0)
    return rng.integers(0, 300, 400).astype(np.uint16), rng.integers(0, 300, 100).astype(np.uint16)


def _global_batch():
    gen = torch.Generator().manual_seed(0)
    return torch.randint(0, 300, (4, 9), generator=gen)


def _worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        trainer = Trainer(TrainConfig(**CFG), *_tokens())
        assert trainer.distributed and trainer.world == world
        rows = _global_batch().chunk(world)[rank]  # this process' half of the global batch
        lm_loss(trainer.model(rows[:, :-1]), rows[:, 1:]).backward()  # DDP averages the gradients
        grads = {n: p.grad.clone() for n, p in trainer.raw_model.named_parameters()}
        trainer.optimizer.zero_grad(set_to_none=True)
        trainer.fit(progress=False)  # two real steps, each rank on its own shard
        params = {n: p.detach().clone() for n, p in trainer.raw_model.named_parameters()}
        torch.save({"grads": grads, "params": params, "shard": trainer.shard}, f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_gradients_equal_single_process(tmp_path):
    world = 2
    # fork: the workers inherit the imported modules instead of importing torch again (much faster)
    mp.start_processes(_worker, args=(world, _free_port(), str(tmp_path)), nprocs=world, join=True,
                       start_method="fork" if "fork" in mp.get_all_start_methods() else "spawn")
    results = [torch.load(tmp_path / f"rank{r}.pt") for r in range(world)]

    single = Trainer(TrainConfig(**CFG), *_tokens())  # same seed, so the same initial weights
    rows = _global_batch()
    lm_loss(single.model(rows[:, :-1]), rows[:, 1:]).backward()
    for name, p in single.raw_model.named_parameters():
        for res in results:
            torch.testing.assert_close(res["grads"][name], p.grad, rtol=1e-5, atol=1e-7)

    # after real training steps the replicas still agree, and each read its own half of the data
    for name in results[0]["params"]:
        torch.testing.assert_close(results[0]["params"][name], results[1]["params"][name], rtol=0, atol=0)
    assert results[0]["shard"] == (0, 200) and results[1]["shard"] == (200, 400)


def _fsdp_worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        ddp = Trainer(TrainConfig(**CFG), *_tokens())
        ddp.fit(progress=False)
        sharded = Trainer(TrainConfig(**CFG, parallel="fsdp"), *_tokens())
        assert sharded.fsdp and sharded.world == world
        emb = sharded.raw_model.tok_emb.weight
        local, total = emb.to_local().shape[0], emb.shape[0]
        sharded.fit(progress=False)
        saved = sharded.save(f"{out}/fsdp")  # every process gathers; the first writes
        assert (saved is None) == (rank != 0)
        again = Trainer(TrainConfig(**CFG, parallel="fsdp"), *_tokens())
        dist.barrier()
        again.load_state(f"{out}/fsdp.safetensors")  # back into shards
        copy = again.save(f"{out}/fsdp_again")
        if rank == 0:
            params = {n: p.detach().clone() for n, p in ddp.raw_model.named_parameters()}
            torch.save({"ddp": params, "rows": (local, total), "copy": str(copy)}, f"{out}/fsdp_ranks.pt")
    finally:
        dist.destroy_process_group()


def test_fsdp_trains_like_ddp_and_saves_one_full_checkpoint(tmp_path):
    from gptbook.checkpoint import load_checkpoint, read_checkpoint

    world = 2
    mp.start_processes(_fsdp_worker, args=(world, _free_port(), str(tmp_path)), nprocs=world, join=True,
                       start_method="fork" if "fork" in mp.get_all_start_methods() else "spawn")
    res = torch.load(tmp_path / "fsdp_ranks.pt")
    local, total = res["rows"]
    assert local == -(-total // world)  # the first process holds its share of the embedding
    model = load_checkpoint(tmp_path / "fsdp.safetensors")  # a plain single-process checkpoint
    for name, p in model.named_parameters():
        torch.testing.assert_close(p, res["ddp"][name], rtol=1e-4, atol=2e-5)  # summed in another order
    first, second = (read_checkpoint(tmp_path / f"{n}.safetensors") for n in ("fsdp", "fsdp_again"))
    assert first["step"] == second["step"] == CFG["max_steps"]
    for key in ("model",):
        for name, t in first[key].items():
            torch.testing.assert_close(t, second[key][name], rtol=0, atol=0)
    for i, s in first["optimizer"]["state"].items():  # Adam's moments survive the round trip
        for k, v in s.items():
            torch.testing.assert_close(v, second["optimizer"]["state"][i][k], rtol=0, atol=0)
