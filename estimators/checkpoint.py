"""Checkpoints as one safetensors file: tensors in the body, everything else as JSON in its header.

Nothing is unpickled on load: a checkpoint is safe to open from any source.

Tensor names:
    ``model.<state-dict key>``      the model weights (float32)
    ``optim.<param index>.<key>``   optimiser state tensors (e.g. AdamW ``exp_avg``)
    ``rng.torch``, ``rng.cuda.<i>`` RNG states (uint8)
Header metadata (strings; JSON where structured):
    ``format``         ``wavefront-estimator/1``
    ``model``          registry name; ``hparams``: JSON keyword arguments of ``create``
    ``system_config``  ``SystemConfig.to_json()`` of the grid the model was trained for
    ``step``           optimiser steps done
    ``optim``          JSON: param groups and non-tensor state of the optimiser
    ``trainer``        JSON: schedule, scaler, early-stopping state, train config, metrics
A weights-only checkpoint (``export``) holds the ``model.*`` tensors and the header only.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from wavefront.errors import ConfigError
from wavefront.estimators.registry import create, model_class
from wavefront.sim.config import ChannelConfig, OFDMConfig, SystemConfig
from wavefront.utils import atomic_write_bytes

FORMAT = "wavefront-estimator/1"


def save(path: str | Path, model, system_config, *, step: int = 0, optimizer=None, trainer_state: dict | None = None,
         rng: bool = True) -> Path:
    """Writes a checkpoint atomically (temporary file, then rename) and returns its path.

    ``model`` is an EstimatorModel (unwrapped from DDP/compile); ``trainer_state`` a JSON-able dict.
    """
    from safetensors.torch import save as save_bytes


    path = Path(path)
    tensors = {f"model.{k}": v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    meta = {"format": FORMAT, "model": model.name, "hparams": json.dumps(model.hparams, sort_keys=True),
            "system_config": system_config.to_json(), "step": str(int(step))}
    if getattr(model, "trained_conditions", None):
        meta["conditions"] = model.trained_conditions  # estimated | true | none: what it may be given at test time
    if optimizer is not None:
        sd = optimizer.state_dict()
        plain = {}
        for idx, st in sd["state"].items():
            plain[str(idx)] = {}
            for k, v in st.items():
                if torch.is_tensor(v):
                    tensors[f"optim.{idx}.{k}"] = v.detach().to("cpu").contiguous()
                else:
                    plain[str(idx)][k] = v
        meta["optim"] = json.dumps({"param_groups": sd["param_groups"], "state": plain})
    if rng:
        tensors["rng.torch"] = torch.get_rng_state()
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            for i, s in enumerate(torch.cuda.get_rng_state_all()):
                tensors[f"rng.cuda.{i}"] = s
    if trainer_state is not None:
        meta["trainer"] = json.dumps(trainer_state)
    # Serialised in memory, then written atomically: a full disk is a SaveError naming the file (one
    # line, exit 2) and leaves the previous checkpoint as it was.
    return atomic_write_bytes(path, save_bytes(tensors, metadata=meta))


class Checkpoint:
    """A loaded checkpoint: ``tensors`` (name -> tensor) and parsed header fields."""

    def __init__(self, path: str | Path):
        from safetensors import safe_open
        from safetensors.torch import load_file

        self.path = Path(path)
        if not self.path.is_file():
            raise ConfigError("checkpoint", str(path), "file not found")
        try:
            with safe_open(str(self.path), framework="pt") as f:
                meta = f.metadata() or {}
            self.tensors = load_file(str(self.path))
        except Exception as exc:  # safetensors raises its own error types for truncated or foreign files
            hint = ""
            if self.path.suffix.lower() in (".pt", ".pth", ".ckpt", ".tar"):  # never unpickled here; say how to convert
                hint = ("; an official AdaFortiTran .pt converts in Python: checkpoint.save(OUT.safetensors, "
                        "official_weights.load_official(PT, config), config) (wavefront.estimators)")
            raise ConfigError("checkpoint", str(path),
                              f"not a readable safetensors checkpoint ({exc.__class__.__name__}: {exc}){hint}") from None
        if meta.get("format") != FORMAT:
            raise ConfigError("checkpoint", str(path), f"not a wavefront estimator checkpoint (format {meta.get('format')!r}, "
                                                       f"expected {FORMAT!r})")
        try:
            self.model_name = meta["model"]
            self.hparams = json.loads(meta["hparams"])
            self.system_config_json = meta["system_config"]
            self.step = int(meta["step"])
            self.optim = json.loads(meta["optim"]) if "optim" in meta else None
            self.trainer = json.loads(meta["trainer"]) if "trainer" in meta else None
            # older checkpoints name it only in the trainer's config
            self.conditions = meta.get("conditions") or ((self.trainer or {}).get("config") or {}).get("conditions")
        except (KeyError, ValueError) as exc:
            raise ConfigError("checkpoint", str(path), f"header is damaged ({exc.__class__.__name__}: {exc})") from None

    @property
    def system_config(self):
        """The SystemConfig stored in the checkpoint.

        A checkpoint outlives config schema changes: fields that the current schema no longer
        knows are dropped with a warning (the model depends on the grid and pilots only).
        """
        import warnings


        stored = json.loads(self.system_config_json)
        try:
            return SystemConfig.from_dict(stored)
        except ConfigError:
            known = {"ofdm": OFDMConfig.model_fields, "channel": ChannelConfig.model_fields}
            dropped = sorted(f"{sec}.{k}" for sec, fields in known.items() for k in (stored.get(sec) or {}) if k not in fields)
            if not dropped:
                raise
            warnings.warn(f"{self.path.name}: ignoring config fields unknown to this version: {', '.join(dropped)}",
                          stacklevel=2)
            return SystemConfig.from_dict({sec: {k: v for k, v in (stored.get(sec) or {}).items() if k in fields}
                                           for sec, fields in known.items()})

    def build_model(self, system_config=None):
        """Returns the model with the checkpoint's weights, for ``system_config`` (default: the stored one).

        Raises ConfigError if ``system_config``'s grid or pilots differ from the checkpoint's; a model
        whose class sets ``frequency_shift_invariant`` also takes the checkpoint's layout moved along
        the subcarriers (e.g. MIMO users 1..U-1 of a Kronecker pattern, :func:`frequency_shift`).
        """
        stored = self.system_config
        if system_config is not None:
            check_grid_matches(stored, system_config, self.path,
                               allow_frequency_shift=getattr(model_class(self.model_name), "frequency_shift_invariant", False))
        model = create(self.model_name, system_config or stored, **self.hparams)
        self.load_model_state(model)
        model.trained_conditions = self.conditions
        model.pilots_only = model.uses_conditions and self.conditions == "none"
        return model

    def load_model_state(self, model) -> None:
        """Copies the ``model.*`` tensors into ``model``; raises ConfigError on another model or shape."""
        if model.name != self.model_name:
            raise ConfigError("checkpoint", str(self.path), f"holds a {self.model_name!r} model, not {model.name!r}")
        state = {k[len("model."):]: v for k, v in self.tensors.items() if k.startswith("model.")}
        expected = model.state_dict()
        missing, extra = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
        if missing or extra:
            raise ConfigError("checkpoint", str(self.path), f"does not fit the {model.name!r} model "
                              f"(missing {missing[:3]}, unexpected {extra[:3]})")
        for k, v in state.items():
            if tuple(v.shape) != tuple(expected[k].shape):
                raise ConfigError("checkpoint", str(self.path), f"tensor {k} has shape {tuple(v.shape)}, the model "
                                                                f"expects {tuple(expected[k].shape)} (another configuration?)")
        # NaN or inf weights make every estimate NaN, which a sweep's mean-square error once read as -inf dB
        bad = {k: int((~torch.isfinite(v)).sum()) for k, v in state.items()
               if (v.is_floating_point() or v.is_complex()) and not bool(torch.isfinite(v).all())}
        if bad:
            k = min(bad)
            raise ConfigError("checkpoint", str(self.path), f"holds non-finite weights ({bad[k]} NaN/inf values in "
                                                            f"{k}{f' and {len(bad) - 1} more tensors' if len(bad) > 1 else ''}); "
                                                            "a diverged run's? use an earlier checkpoint")
        model.load_state_dict(state)

    def load_optimizer_state(self, optimizer) -> None:
        """Restores the optimiser (param groups and state tensors)."""
        if self.optim is None:
            raise ConfigError("checkpoint", str(self.path), "holds weights only, no optimiser state; it cannot be resumed")
        state = {}
        for idx, plain in self.optim["state"].items():
            st = dict(plain)
            prefix = f"optim.{idx}."
            st.update({k[len(prefix):]: v for k, v in self.tensors.items() if k.startswith(prefix)})
            state[int(idx)] = st
        optimizer.load_state_dict({"state": state, "param_groups": self.optim["param_groups"]})

    def restore_rng(self) -> None:
        """Restores the torch (and CUDA, where saved and present) RNG states."""
        if "rng.torch" in self.tensors:
            torch.set_rng_state(self.tensors["rng.torch"])
        cuda = [self.tensors[k] for k in sorted(k for k in self.tensors if k.startswith("rng.cuda."))]
        if cuda and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(cuda[: torch.cuda.device_count()])


def frequency_shift(stored_layout, wanted_layout) -> int | None:
    """Returns ``d`` (subcarriers) with ``wanted = stored`` moved by ``d`` along frequency on the same grid, else None.

    ``d = 0`` for equal layouts. Each user of a Kronecker MIMO pattern has user 0's pilots moved
    by ``u`` subcarriers (:func:`wavefront.sim.mimo.user_configs`).
    """
    a, b = stored_layout.positions, wanted_layout.positions
    if tuple(stored_layout.grid_shape) != tuple(wanted_layout.grid_shape) or len(a) != len(b):
        return None
    d = b[0][0] - a[0][0]
    return d if all(fb == fa + d and tb == ta for (fa, ta), (fb, tb) in zip(a, b)) else None


def check_grid_matches(stored, wanted, path, what: str = "checkpoint", allow_frequency_shift: bool = False) -> None:
    """Raises ConfigError if ``stored`` (a checkpoint's or dataset's SystemConfig) and ``wanted`` differ in grid or pilots.

    ``allow_frequency_shift``: accept ``wanted``'s pilots if they are ``stored``'s moved along the
    subcarriers (:func:`frequency_shift`), for models whose weights do not depend on where the
    layout sits on the grid.
    """
    a, b = stored.ofdm, wanted.ofdm
    if list(a.grid_shape) != list(b.grid_shape):
        raise ConfigError(what, str(path), f"is for ofdm.grid_shape={list(a.grid_shape)}, but the config has "
                                           f"{list(b.grid_shape)}; use a {what} made for this grid and pilot pattern")
    la, lb = a.pilot_layout, b.pilot_layout
    if allow_frequency_shift and frequency_shift(la, lb) is not None:
        return
    if la.positions != lb.positions:
        if la.is_kronecker and lb.is_kronecker:  # name the axis that differs, as before layouts existed
            for field, va, vb in (("pilot_subcarriers", a.pilot_subcarriers, b.pilot_subcarriers),
                                  ("pilot_symbols", a.pilot_symbol_indices, b.pilot_symbol_indices)):
                if list(va) != list(vb):
                    raise ConfigError(what, str(path), f"is for ofdm.{field}={list(va)}, but the config has {list(vb)}; "
                                                       f"use a {what} made for this grid and pilot pattern")
        raise ConfigError(what, str(path), f"is for pilots {la.describe()}, but the config has {lb.describe()}; "
                                           f"use a {what} made for this grid and pilot layout (--pilots)")


def export(src: str | Path, dst: str | Path) -> Path:
    """Writes a weights-only copy of checkpoint ``src`` (no optimiser or RNG state) to ``dst`` and returns it."""
    ck = Checkpoint(src)
    model = ck.build_model()
    state = {k: v for k, v in (ck.trainer or {}).items() if k in ("metrics", "config")}
    return save(dst, model, ck.system_config, step=ck.step, trainer_state=state, rng=False)
