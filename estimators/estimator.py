"""Trained models behind the estimator interface that the sweep and evaluation share."""
from __future__ import annotations

import warnings
from pathlib import Path

import torch

from wavefront.errors import ConfigError
from wavefront.estimators.blocks import CONDITION_KEYS
from wavefront.estimators.checkpoint import Checkpoint
from wavefront.estimators.registry import list_models
from wavefront.sim.config import profile_label
from wavefront.sim.estimators import Estimator
from wavefront.sim.impairments import impairment_record
from wavefront.utils import resolve_device

PRETRAINED_DIR = Path(__file__).resolve().parent / "pretrained"


class LearnedEstimator(Estimator):
    """A trained model with the estimator interface: ``name`` and ``estimate(pilots, meta)``.

    ``estimate`` runs without gradients in eval mode, on the model's device, with bf16
    autocast on CUDA when ``amp`` is set, in chunks of ``max_batch`` frames.
    """

    def __init__(self, model, name: str | None = None, device="cpu", amp: bool = False, max_batch: int = 4096):
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.name = name or model.name
        self.amp = bool(amp) and self.device.type == "cuda"
        self.max_batch = int(max_batch)
        # what the experiment engine passes it: the conditions for condition-aware models, else nothing
        self.needs = "conditions" if getattr(model, "reads_conditions", getattr(model, "uses_conditions", False)) else "none"
        self.trained_on: str | None = None
        # a model over the antenna axis maps one user's antennas [B, R, P] -> [B, R, F, T] (MIMO wrappers read this)
        self.across_antennas = bool(getattr(model, "antenna_axis", False))

    @torch.no_grad()
    def estimate(self, pilots: torch.Tensor, meta: dict | None = None) -> torch.Tensor:
        """Returns ``[B, F, T]`` complex64 on ``pilots``' device from LS pilots ``[B, P_f, P_t]`` complex64.

        ``meta``: ``{"snr_db", "delay_spread_s", "doppler_hz"}`` as ``[B]`` tensors (dB, s, Hz).
        """
        out = []
        for start in range(0, pilots.shape[0], self.max_batch):
            sl = slice(start, start + self.max_batch)
            m = {k: (v[sl].to(self.device) if torch.is_tensor(v) and v.dim() else v) for k, v in (meta or {}).items()}
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.amp):
                out.append(self.model(pilots[sl].to(self.device), m).to(torch.complex64))
        return torch.cat(out).to(pilots.device)


def pretrained_path(name: str) -> Path:
    """Returns the path of the shipped checkpoint for registry name ``name`` (it may not exist)."""
    return PRETRAINED_DIR / f"{name}-default.safetensors"


def shipped_for(name: str, config) -> Path:
    """Returns the shipped checkpoint of model ``name`` that fits ``config``'s grid and pilots, else the default's path.

    Shipped checkpoints are ``pretrained/<name>-default.safetensors`` (the default grid) and
    ``pretrained/<name>-<setting>.safetensors`` (e.g. ``gated-lmmse-mimo-chest``: one user's
    pilots at that preset); the default is tried first, the others in name order. A checkpoint
    fits as :meth:`Checkpoint.build_model` would accept it (its layout moved along the
    subcarriers, for a model that allows it). When none fits, the default's path is returned and
    loading it names the mismatch (or that none is shipped).
    """
    from wavefront.estimators.checkpoint import check_grid_matches
    from wavefront.estimators.registry import model_class

    default = pretrained_path(name)
    others = sorted(p for p in PRETRAINED_DIR.glob(f"{name}-*.safetensors") if p != default)
    shift_ok = getattr(model_class(name), "frequency_shift_invariant", False)
    for path in ([default] if default.is_file() else []) + others:
        try:
            ck = Checkpoint(path)
            if ck.model_name != name:  # another model whose name starts with this one
                continue
            check_grid_matches(ck.system_config, config, path, allow_frequency_shift=shift_ok)
        except ConfigError:
            continue
        return path
    return default


def load_estimator(name_or_path: str, config, device="cpu", conditions: str | None = None) -> LearnedEstimator:
    """Returns a trained estimator for ``config`` (a SystemConfig) from a registry name or a checkpoint path.

    A registry name (e.g. ``adafortitran``) loads the shipped checkpoint
    ``estimators/pretrained/<name>-default.safetensors``. Raises ConfigError for an unknown name,
    a missing, corrupt or foreign checkpoint, or one trained for another grid or pilot pattern;
    and, with ``conditions="none"`` (pilots only), for a model that was trained with conditions.
    """
    p = Path(str(name_or_path))
    if p.suffix == ".safetensors" or p.exists():
        path, label = p, None
    elif name_or_path in list_models():
        path, label = shipped_for(name_or_path, config), name_or_path
        own = sorted(f.stem for f in PRETRAINED_DIR.glob(f"{name_or_path}-*.safetensors"))
        if not path.is_file() and own:  # shipped for other settings only
            raise ConfigError("estimator", name_or_path, f"no shipped checkpoint of this model fits the config's "
                              f"{'x'.join(map(str, config.ofdm.grid_shape))} grid and pilots "
                              f"{config.ofdm.pilot_layout.describe()} (shipped: {', '.join(own)}); train one and "
                              "pass its path")
        if not path.is_file():
            shipped = sorted(f.name.removesuffix("-default.safetensors") for f in PRETRAINED_DIR.glob("*-default.safetensors"))
            raise ConfigError("estimator", name_or_path, f"no pretrained checkpoint is shipped for this model "
                              f"(shipped: {', '.join(shipped) or 'none'}); train one with `wavefront train` and pass its path")
    else:
        raise ConfigError("estimator", name_or_path, "neither a checkpoint file nor a learned model "
                                                     f"({', '.join(list_models())})")
    ck = Checkpoint(path)
    stored = ck.system_config
    model = ck.build_model(config)
    if stored.ofdm.subcarrier_spacing_hz != config.ofdm.subcarrier_spacing_hz:
        warnings.warn(f"{path.name} was trained at {stored.ofdm.subcarrier_spacing_hz:g} Hz subcarrier spacing, "
                      f"the config has {config.ofdm.subcarrier_spacing_hz:g} Hz", stacklevel=2)
    if label is None:  # a run's best/last checkpoint is named after its model, other files after themselves
        label = ck.model_name if p.stem in ("best", "last") else p.stem
    if conditions == "none" and getattr(model, "reads_conditions", False):
        raise ConfigError("conditions", "none", f"{path.name} was trained with {ck.conditions or 'the'} conditions "
                          "(SNR, delay spread, Doppler) and cannot run on pilots only; give estimated or true "
                          "conditions, or train it with --conditions none")
    est = LearnedEstimator(model, name=label, device=device)
    est.trained_on = trained_on_text(stored, path.with_suffix(".json"), ck.conditions)
    return est


def trained_on_text(stored, card_path: Path, conditions: str | None = None) -> str:
    """Returns a one-line description of the training data: profile and ranges, and frames and conditions from a card."""
    ch = stored.channel
    span = lambda v, s=1.0: f"{v[0] * s:g}-{v[1] * s:g}" if isinstance(v, tuple) else f"{v * s:g}"  # noqa: E731
    text = (f"{profile_label(ch.profile)}, SNR {span(ch.snr_db)} dB, delay spread {span(ch.delay_spread_s, 1e9)} ns, "
            f"Doppler {span(ch.doppler_hz)} Hz")
    if impairment_record(ch):  # trained on impaired frames: say which (others read as before)
        text += ", receiver impairments " + ", ".join(f"{k}={r['value']}" for k, r in impairment_record(ch).items())
    try:
        import json

        card = json.loads(card_path.read_text())
        text += f", {card['frames_seen']:,} frames" if "frames_seen" in card else ""
        text += f", {card['conditions_given']}" if "conditions_given" in card else ""
        conditions = None if "conditions_given" in card else conditions
    except (OSError, ValueError, TypeError):
        pass
    if conditions:
        text += ", pilots only" if conditions == "none" else f", {conditions} conditions"
    return text



class CudaGraphForward:
    """Replays one captured CUDA graph of ``model(pilots, meta)`` for a fixed batch size (inference only).

    At small batches a transformer's time is kernel launches, not arithmetic: one graph replay
    launches them all at once. ``__call__(pilots [B, P_f, P_t] c64, meta)`` copies the inputs
    into the captured buffers, replays, and returns ``[B, F, T]`` complex64 (a fresh tensor).
    ``meta`` needs ``snr_db``, ``delay_spread_s`` and ``doppler_hz`` as ``[B]`` tensors.
    ``amp``: run under bf16 autocast. Raises ConfigError off CUDA.
    """

    def __init__(self, model, batch_size: int, amp: bool = True, warmup: int = 3):
        device = next(model.parameters()).device
        if device.type != "cuda":
            raise ConfigError("device", str(device), "CUDA graphs need the model on a CUDA device")
        self.model, self.amp = model.eval(), bool(amp)
        self.pilots = torch.zeros(batch_size, *model.pilot_shape, dtype=torch.complex64, device=device)
        self.meta = {k: torch.ones(batch_size, device=device) for k in CONDITION_KEYS}
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):  # warm-up off the capture: cuBLAS/cuDNN pick their kernels here
            for _ in range(warmup):
                self._run()
        torch.cuda.current_stream(device).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.out = self._run()

    @torch.no_grad()
    def _run(self):
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.amp):
            return self.model(self.pilots, self.meta).to(torch.complex64)

    def __call__(self, pilots: torch.Tensor, meta: dict) -> torch.Tensor:
        if tuple(pilots.shape) != tuple(self.pilots.shape):
            raise ConfigError("pilots", tuple(pilots.shape), f"this graph was captured for {tuple(self.pilots.shape)}")
        self.pilots.copy_(pilots, non_blocking=True)
        for k, buf in self.meta.items():
            buf.copy_(torch.as_tensor(meta[k], device=buf.device).reshape(buf.shape), non_blocking=True)
        self.graph.replay()
        return self.out.clone()
