"""Helpers shared by the estimator tests (a uniquely named module: tests/conftest.py owns the name conftest)."""
import torch

# Small enough to train in seconds on one CPU thread; the architecture is unchanged.
TINY = {"model_dim": 16, "num_layers": 1, "num_heads": 2, "enhancer_channels": [4, 8, 4], "dropout": 0.0}


def meta_for(batch_size: int, snr_db=10.0, delay_spread_s=100e-9, doppler_hz=500.0) -> dict:
    """Returns condition tensors [B] (scalars are broadcast)."""
    return {k: torch.as_tensor(v, dtype=torch.float32).expand(batch_size).clone()
            for k, v in (("snr_db", snr_db), ("delay_spread_s", delay_spread_s), ("doppler_hz", doppler_hz))}
