"""DDP on CPU: two gloo processes give the gradients (and the training run) of one process on the merged batch."""
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from est_helpers import TINY, SampleDataset

from wavefront.estimators import create
from wavefront.estimators.checkpoint import Checkpoint
from wavefront.estimators.data import shard
from wavefront.estimators.train import TrainConfig, loss_and_backward, train, wrap_ddp
from wavefront.sim.config import SystemConfig

CONFIG = SystemConfig.from_dict({"channel": {"snr_db": [0.0, 20.0], "delay_spread_s": [50e-9, 300e-9], "doppler_hz": [50.0, 900.0]}})


def _train_cfg(out_dir):
    return TrainConfig(model="adafortitran", model_overrides=dict(TINY), epochs=1, batch_size=8, lr=3e-3, warmup_steps=1,
                       eval_every=2, device="cpu", out_dir=str(out_dir), progress=False, patience=0)


def _grads(model):
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def _worker(rank, world, tmp):
    os.environ.update(WORLD_SIZE=str(world), RANK=str(rank), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{tmp}/rendezvous", rank=rank, world_size=world)
    try:
        data = SampleDataset.load(f"{tmp}/data.safetensors")
        batch = data[list(range(8))]
        torch.manual_seed(0)
        model = create("adafortitran", CONFIG, **TINY)
        loss_and_backward(wrap_ddp(model, torch.device("cpu")), shard(batch, rank, world))
        if rank == 0:
            from safetensors.torch import save_file

            save_file(_grads(model), f"{tmp}/ddp_grads.safetensors")
        # The whole loop under DDP (rank 0 writes the checkpoint).
        train(_train_cfg(f"{tmp}/ddp_run"), CONFIG, train_data=data, val_data=SampleDataset.load(f"{tmp}/val.safetensors"))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_gloo_ranks_match_one_process_on_the_merged_batch(tmp_path):
    from safetensors.torch import load_file

    from wavefront.sim.frames import FrameGenerator

    gen = FrameGenerator(CONFIG)
    data = SampleDataset.from_frames(gen.generate(32, seed=3, with_data=False))
    val = SampleDataset.from_frames(gen.generate(8, seed=4, with_data=False))
    data.save(tmp_path / "data.safetensors")
    val.save(tmp_path / "val.safetensors")
    mp.spawn(_worker, args=(2, str(tmp_path)), nprocs=2, join=True)

    torch.manual_seed(0)
    model = create("adafortitran", CONFIG, **TINY)
    loss_and_backward(model, data[list(range(8))])
    single, ddp = _grads(model), load_file(str(tmp_path / "ddp_grads.safetensors"))
    assert single.keys() == ddp.keys() and len(single) > 20
    worst = max(float((single[k] - ddp[k]).abs().max() / single[k].abs().max().clamp_min(1e-12)) for k in single)
    print(f"largest relative gradient difference: {worst:.2e}")
    assert worst < 5e-5  # float32 sums in another order; measured 5e-6

    train(_train_cfg(tmp_path / "single_run"), CONFIG, train_data=data, val_data=val)
    a = Checkpoint(tmp_path / "single_run" / "last.safetensors").tensors
    b = Checkpoint(tmp_path / "ddp_run" / "last.safetensors").tensors
    assert Checkpoint(tmp_path / "ddp_run" / "last.safetensors").step == 4  # 32 samples / batch 8
    for k in a:
        if k.startswith("model."):
            torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=k)
