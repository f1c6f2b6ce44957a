"""One registry of learned estimators: ``@register_model`` on a class, ``create(name, config, **overrides)``.

Every model file in this folder is named ``model_*.py`` and is imported on first use, so
adding a model is one file and one decorator; the trainer never changes.

A registered model is an :class:`EstimatorModel`: it takes complex pilots ``[B, P]`` (any pilot
layout, in position order; a Kronecker layout also as ``[B, P_f, P_t]``) and the channel
conditions and returns the complex grid ``[B, F, T]``. Subclasses write only
:meth:`EstimatorModel.forward_real`, which sees real tensors ``[2B, *pilot_shape]`` (real
parts, then imaginary parts: one batched pass through shared weights); ``pilot_shape`` is
``(P_f, P_t)`` for a Kronecker layout and ``(P,)`` for a scattered one. Models that need the
pilots on a grid (convolutions on ``[P_f, P_t]``) refuse a scattered layout at construction
(:func:`~wavefront.estimators.blocks.require_pilot_grid`); those that refine an interpolated
grid take any layout (:class:`~wavefront.estimators.blocks.PilotInterpolator`).
"""
from __future__ import annotations

import contextlib
import importlib
import inspect
import pkgutil
from typing import Callable

import torch
from torch import nn

from wavefront.errors import ConfigError
from wavefront.estimators.blocks import complex_to_stacked, normalise_conditions, stacked_to_complex

_REGISTRY: dict[str, type] = {}
_LOADED = False
# The learned estimator that sweep and evaluate show by default: it reads the pilots only and
# matches mmse-bayes's Bayes risk at a few times lmmse-genie's CPU throughput (README).
DEFAULT_LEARNED = "gated-lmmse"


class EstimatorModel(nn.Module):
    """Base of every learned estimator.

    Attributes set by :func:`create`: ``name`` (registry name), ``hparams`` (the keyword
    arguments that rebuild it), ``ofdm`` (the grid it was built for).
    ``uses_conditions``: whether the model reads SNR / delay spread / Doppler.
    ``pilots_only``: a condition-aware model trained without them (``--conditions none``): its
    condition input is a constant zero, so it needs nothing but the pilots.
    ``trained_conditions``: what it was trained on (``estimated``, ``true`` or ``none``), set by
    the trainer and a checkpoint; None for a fresh model.
    """

    uses_conditions = False
    pilots_only = False
    trained_conditions: str | None = None

    @property
    def reads_conditions(self) -> bool:
        """Whether :meth:`forward` needs ``snr_db``, ``delay_spread_s`` and ``doppler_hz`` in ``meta``."""
        return self.uses_conditions and not self.pilots_only

    def __init__(self, system_config):
        super().__init__()
        self.ofdm = system_config.ofdm
        self.grid_shape = tuple(self.ofdm.grid_shape)
        self.pilot_shape = tuple(self.ofdm.pilot_shape)
        self.num_pilots = self.ofdm.num_pilots

    def forward_real(self, x: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        """Returns ``[N, F, T]`` real from real pilots ``[N, *pilot_shape]`` and conditions ``[N, 3]`` (or None)."""
        raise NotImplementedError

    def forward(self, pilots: torch.Tensor, meta: dict | None = None) -> torch.Tensor:
        """Returns the channel estimate ``[B, F, T]`` complex64.

        ``pilots``: ``[B, P]`` or ``[B, *pilot_shape]`` complex, the LS estimates at the pilots.
        ``meta``: ``{"snr_db" [dB], "delay_spread_s" [s], "doppler_hz" [Hz]}``, each ``[B]``;
        needed only by conditioned models.
        """
        if tuple(pilots.shape[1:]) != self.pilot_shape:
            if tuple(pilots.shape[1:]) != (self.num_pilots,):
                want = ", ".join(map(str, self.pilot_shape))
                raise ConfigError("pilots", tuple(pilots.shape), f"expected [B, {want}] or [B, {self.num_pilots}]")
            pilots = pilots.reshape(pilots.shape[0], *self.pilot_shape)
        b = pilots.shape[0]
        x = complex_to_stacked(pilots.to(torch.complex64))
        cond = None
        if self.reads_conditions:
            cond = normalise_conditions(meta, b, pilots.device).repeat(2, 1)
        elif self.uses_conditions:  # pilots only: a constant input the network learned to do without
            cond = torch.zeros(2 * b, 3, device=pilots.device)
        real_fn = self.__dict__.get("_compiled_real") or self.forward_real
        return stacked_to_complex(real_fn(x, cond))

    @contextlib.contextmanager
    def eager(self):
        """Context in which :meth:`forward` runs ``forward_real`` uncompiled (e.g. a short validation pass)."""
        compiled = self.__dict__.pop("_compiled_real", None)
        try:
            yield self
        finally:
            if compiled is not None:
                self.__dict__["_compiled_real"] = compiled

    def compile_real(self, **options) -> "EstimatorModel":
        """Compiles :meth:`forward_real` with ``torch.compile(**options)`` and returns the model.

        Only the real-valued network is compiled: the complex <-> real conversion around it
        stays eager, because Inductor does not generate code for complex operators.
        ``options`` go to ``torch.compile`` (e.g. ``mode="reduce-overhead"``).
        """
        self.__dict__["_compiled_real"] = torch.compile(self.forward_real, **options)
        return self


def register_model(name: str) -> Callable[[type], type]:
    """Class decorator: registers an :class:`EstimatorModel` subclass under ``name``."""

    def wrap(cls):
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"model name {name!r} is registered twice")
        _REGISTRY[name] = cls
        cls.registry_name = name
        return cls

    return wrap


def _load_model_files() -> None:
    global _LOADED
    if _LOADED:
        return
    import wavefront.estimators as pkg

    for info in pkgutil.iter_modules(pkg.__path__):
        if info.name.startswith("model_"):
            importlib.import_module(f"wavefront.estimators.{info.name}")
    _LOADED = True


def list_models() -> list[str]:
    """Returns the registered model names, sorted."""
    _load_model_files()
    return sorted(_REGISTRY)


def model_defaults(name: str) -> dict:
    """Returns the default hyper-parameters (keyword arguments) of model ``name``."""
    cls = _lookup(name)
    sig = inspect.signature(cls.__init__)
    return {k: p.default for k, p in list(sig.parameters.items())[2:] if p.default is not inspect.Parameter.empty}


def model_class(name: str) -> type:
    """Returns the registered class of model ``name`` (ConfigError if unknown)."""
    return _lookup(name)


def _lookup(name: str) -> type:
    _load_model_files()
    if name not in _REGISTRY:
        raise ConfigError("model", name, f"unknown; choose one of {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def _check_hparam(model: str, key: str, value, default) -> None:
    """Raises ConfigError unless ``value`` has the kind of the default: int, number, bool, string or list."""
    field = f"{model}.{key}"
    if isinstance(default, bool):
        ok, kind = isinstance(value, bool), "true or false"
    elif isinstance(default, int):
        ok, kind = isinstance(value, int) and not isinstance(value, bool), "an integer"
    elif isinstance(default, float):
        ok, kind = isinstance(value, (int, float)) and not isinstance(value, bool), "a number"
    elif isinstance(default, str):
        ok, kind = isinstance(value, str), "a string"
    elif isinstance(default, (list, tuple)):
        ok, kind = isinstance(value, (list, tuple)), "a list like [3, 2]"
    else:  # None or another kind: the model checks it
        return
    if not ok:
        raise ConfigError(field, value, f"must be {kind} (the default is {default!r})")


def create(name: str, system_config, **overrides) -> EstimatorModel:
    """Returns a freshly initialised model ``name`` for ``system_config`` (a SystemConfig).

    ``overrides`` replace default hyper-parameters (e.g. ``model_dim=32``); an unknown key,
    or a grid the model cannot handle, raises ConfigError.
    """
    cls = _lookup(name)
    defaults = model_defaults(name)
    unknown = sorted(set(overrides) - set(defaults))
    if unknown:
        raise ConfigError(f"{name}.{unknown[0]}", overrides[unknown[0]],
                          f"unknown hyper-parameter; allowed: {', '.join(sorted(defaults)) or 'none'}")
    for k, v in overrides.items():
        _check_hparam(name, k, v, defaults[k])
    hparams = {**defaults, **overrides}
    hparams = {k: (list(v) if isinstance(v, tuple) else v) for k, v in hparams.items()}
    try:
        model = cls(system_config, **hparams)
    except (TypeError, ValueError, RuntimeError, ZeroDivisionError) as exc:
        # a rule the model states about one of the overrides stands as it is; any other failure (a rule about a
        # default the override broke, e.g. num_heads against model_dim=-1) names the override that caused it
        if not overrides or (isinstance(exc, ConfigError) and exc.field in overrides):
            raise
        k = sorted(overrides)[0] if len(overrides) == 1 else "hyper-parameters"
        v = overrides[k] if len(overrides) == 1 else overrides
        raise ConfigError(f"{name}.{k}", v, "the model cannot be built with this value ("
                          + " ".join(f"{exc.__class__.__name__}: {exc}".split())[:160] + ")") from None
    model.name, model.hparams = name, hparams
    return model


def count_parameters(model: nn.Module) -> int:
    """Returns the number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
