"""Helpers shared by the estimator tests (a uniquely named module: tests/conftest.py owns the name conftest)."""
import torch

# Small enough to train in seconds on one CPU thread; the architecture is unchanged.
TINY = {"model_dim": 16, "num_layers": 1, "num_heads": 2, "enhancer_channels": [4, 8, 4], "dropout": 0.0}


def meta_for(batch_size: int, snr_db=10.0, delay_spread_s=100e-9, doppler_hz=500.0) -> dict:
    """Returns condition tensors [B] (scalars are broadcast)."""
    return {k: torch.as_tensor(v, dtype=torch.float32).expand(batch_size).clone()
            for k, v in (("snr_db", snr_db), ("delay_spread_s", delay_spread_s), ("doppler_hz", doppler_hz))}


class SampleDataset(torch.utils.data.Dataset):
    """A Dataset of trainer samples held in tensors: pilots [N,P_f,P_t] c64, h [N,F,T] c64, conditions [N]."""

    def __init__(self, pilots, h, snr_db, delay_spread_s, doppler_hz):
        self.cols = {"pilots": pilots, "h": h, "snr_db": snr_db, "delay_spread_s": delay_spread_s, "doppler_hz": doppler_hz}

    @classmethod
    def from_frames(cls, frames):
        return cls(frames.pilots_ls, frames.h, frames.snr_db, frames.delay_spread_s, frames.doppler_hz)

    def __len__(self):
        return self.cols["h"].shape[0]

    def __getitem__(self, i):
        return {k: v[i] for k, v in self.cols.items()}

    def save(self, path):
        from safetensors.torch import save_file

        save_file({k: (torch.view_as_real(v) if v.is_complex() else v).contiguous() for k, v in self.cols.items()}, str(path))

    @classmethod
    def load(cls, path):
        from safetensors.torch import load_file

        t = load_file(str(path))
        return cls(**{k: (torch.view_as_complex(v) if k in ("pilots", "h") else v) for k, v in t.items()})


def ctrl_c_at_step(monkeypatch, step):
    """Delivers SIGINT to this process while step ``step`` (1-based) runs: from inside its learning-rate lookup."""
    import signal

    import wavefront.estimators.train as train_mod

    real = train_mod.lr_at

    def lr_at(step_count, *a, **k):
        if step_count == step - 1:
            signal.raise_signal(signal.SIGINT)
        return real(step_count, *a, **k)

    monkeypatch.setattr(train_mod, "lr_at", lr_at)
