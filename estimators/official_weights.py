"""Converts checkpoints of the official AdaFortiTran code into wavefront models with the same outputs.

The official code (BerkIGuler/AdaFortiTran, MIT) is not part of wavefront and is not needed
here: this module reads its checkpoints by parameter name and shape only.

Official parameter name (prefix)                               wavefront name (prefix)
-------------------------------------------------------------  ----------------------------------
``pilot_upsampler``                                            ``upsampler``
``initial_enhancer.conv_block.{0,2,4,6}``                      ``enhancer_in.{0,2,4,6}``
``channel_adapter.{snr,ds,dop}_encoder.{0,2,4}``               ``conditions.mlps.{0,1,2}.{0,2,4}``
``transformer_encoder.linear_1``                               ``transformer.linear_in``
``transformer_encoder.positional_encoding.position_embeddings``  ``transformer.pos`` (``[1, rows, d]``)
``transformer_encoder.transformer.layers.<i>``                 ``transformer.encoder.layers.<i>``
``transformer_encoder.linear_2``                               ``transformer.linear_out``
``final_refiner.conv_block.{0,2,4,6}``                         ``enhancer_out.{0,2,4,6}``
``linear`` (the official LinearEstimator)                      ``linear``

Two things change in value, not only in name:

- **condition units.** The official encoders read the raw integers of its file names: SNR in
  dB, delay spread in ns, Doppler in Hz. wavefront feeds ``snr_db / 10``,
  ``delay_spread_s / 100e-9`` and ``doppler_hz / 500`` (:func:`~wavefront.estimators.blocks.normalise_conditions`).
  The first Linear of each condition MLP, ``W x + b`` with ``x`` in official units, becomes
  ``(k W) x' + b`` with ``x' = x / k`` and ``k`` = 10, 100, 500: the same function.
- **the positional table.** The official table has ``max_seq_len`` (512) rows, of which only
  the first ``L`` (280 on 120 x 14 with 3 x 2 patches) are ever added to a token. By default all
  rows are kept (``pos_rows=None``): the converted model has the official parameter count
  (987,746 for AdaFortiTran at 12 x 2 pilots) and the same outputs. ``pos_rows=L`` keeps only
  the rows that are read, as a model built by ``create`` has by default; the outputs are
  unchanged because rows ``>= L`` never reach the computation.

The official ``LinearEstimator`` applies ``nn.Linear`` to its input as given; wavefront's
``linear`` applies it to the real and imaginary parts separately, as the official
(Ada)FortiTran does with its two passes.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from wavefront.errors import ConfigError
from wavefront.estimators.blocks import DELAY_SPREAD_SCALE_S, DOPPLER_SCALE_HZ, SNR_SCALE_DB, check_patch_size

OFFICIAL_MODELS = ("adafortitran", "fortitran", "linear")

# Official condition encoder -> (index of wavefront's condition MLP, k = wavefront scale in the official unit).
# wavefront's condition order is (SNR, delay spread, Doppler): blocks.CONDITION_KEYS.
CONDITION_ENCODERS = {
    "snr_encoder": (0, SNR_SCALE_DB),                  # official dB, wavefront dB / 10
    "ds_encoder": (1, DELAY_SPREAD_SCALE_S / 1e-9),    # official ns, wavefront s / 100e-9
    "dop_encoder": (2, DOPPLER_SCALE_HZ),              # official Hz, wavefront Hz / 500
}
# Fixed by the official code: ConvEnhancer 1 -> 8 -> 32 -> 8 -> 1, FF width 2 d, GELU, two condition values per patch.
_ENHANCER_CONVS = (0, 2, 4, 6)
_LAYER_SUFFIXES = ("self_attn.in_proj_weight", "self_attn.in_proj_bias", "self_attn.out_proj.weight",
                   "self_attn.out_proj.bias", "linear1.weight", "linear1.bias", "linear2.weight", "linear2.bias",
                   "norm1.weight", "norm1.bias", "norm2.weight", "norm2.bias")
_POS_LEARNABLE = "transformer_encoder.positional_encoding.position_embeddings"
_POS_SINUSOIDAL = "transformer_encoder.positional_encoding.pe"  # a saved buffer: loads as a (trainable) table
_OFFICIAL_DEFAULTS = {"num_head": 4, "patch_size": (3, 2), "dropout": 0.1}


def load_official(path_or_state_dict, system_config, model: str = "adafortitran", *, num_heads: int | None = None,
                  patch_size: tuple[int, int] | None = None, pos_rows: int | None = None,
                  dtype: torch.dtype = torch.float32):
    """Returns a wavefront model (eval mode, on the CPU) that computes what the official checkpoint computes.

    ``path_or_state_dict``: a file written by the official trainer's ``save_checkpoint`` (a
    ``torch.save`` dict holding ``model_state_dict``), a file holding a plain state dict, or a
    state dict (official parameter names). ``system_config``: the wavefront SystemConfig of the
    grid the checkpoint was trained for. ``model``: ``"adafortitran"``, ``"fortitran"`` or ``"linear"``.

    The state dict fixes the model width, depth, condition MLP and table size. It cannot tell the
    number of heads or the patch shape: they come from the trainer file's ``model_config`` when it
    has one, else from ``num_heads`` / ``patch_size``, else the official defaults (4, (3, 2)).
    ``pos_rows``: rows of the positional table to keep (None: all; see the module docstring).
    ``dtype``: floating dtype of the returned parameters; the condition scales are folded in
    float64 and rounded once to it. ``forward`` runs in float32 (complex64); float64 serves
    exact comparisons through ``forward_real``.

    The returned model takes pilots ``[B, P_f, P_t]`` complex64 and ``meta`` in wavefront units
    (``snr_db`` [dB], ``delay_spread_s`` [s], ``doppler_hz`` [Hz]) and returns ``[B, F, T]`` complex64.
    Raises ConfigError (one line: field, value, rule) for a checkpoint that does not fit.
    """
    from wavefront.estimators.registry import create

    if model not in OFFICIAL_MODELS:
        raise ConfigError("model", model, f"the official code has {', '.join(OFFICIAL_MODELS)}")
    if not system_config.ofdm.pilot_layout.is_kronecker:
        raise ConfigError("pilots", system_config.ofdm.pilot_layout.describe(),
                          "official checkpoints take a Kronecker [P_f, P_t] pilot grid")
    state, stored = read_official_checkpoint(path_or_state_dict)
    _check_stored_config(stored, system_config, model)
    if model == "linear":
        if num_heads is not None or patch_size is not None or pos_rows is not None:
            raise ConfigError("model", model, "num_heads, patch_size and pos_rows apply to fortitran/adafortitran only")
        _check_keys(state, {"linear.weight", "linear.bias"}, model)
        converted, hparams, names = dict(state), {}, {k: k for k in state}
    else:
        converted, hparams, names = _convert_fortitran(state, system_config, model, stored, num_heads, patch_size,
                                                       pos_rows)
    net = create(model, system_config, **hparams).to(dtype)
    expected = net.state_dict()
    official_name = {v: k for k, v in names.items()}
    (f, t), (pf, pt) = system_config.ofdm.grid_shape, system_config.ofdm.pilot_shape
    for name, tensor in converted.items():
        if tuple(tensor.shape) != tuple(expected[name].shape):
            patch = f", {hparams['patch_size'][0]}x{hparams['patch_size'][1]} patches" if hparams else ""
            raise ConfigError(official_name[name], list(tensor.shape),
                              f"expected {list(expected[name].shape)} for model={model!r} on the {f}x{t} grid "
                              f"with {pf}x{pt} pilots{patch}")
    net.load_state_dict({k: v.to(dtype) for k, v in converted.items()}, strict=True)
    return net.eval()


def read_official_checkpoint(source) -> tuple[dict[str, torch.Tensor], dict]:
    """Returns ``(state_dict, stored)`` from a path or a mapping; ``stored`` holds the trainer file's configs.

    ``stored`` maps ``"system_config"`` / ``"model_config"`` to plain dicts of the fields the
    official trainer pickled (empty when the source is a plain state dict).

    A file is read by ``torch.load(weights_only=True)``. The official trainer also pickles its
    pydantic configs and arguments, which that loader refuses. Every class or function the file
    names beyond tensors and containers is therefore bound to an inert record
    (:class:`_InertRecord`) that keeps the pickled fields: nothing the file names is imported or
    called, so the file is as safe to open as a plain weights-only one.
    """
    obj = source if isinstance(source, Mapping) else _load_file(source)
    if not isinstance(obj, Mapping):
        raise ConfigError("checkpoint", type(obj).__name__, "expected a state dict or the official trainer's checkpoint dict")
    stored = {}
    if "model_state_dict" in obj:
        stored = {k: _plain(obj[k]) for k in ("system_config", "model_config") if k in obj}
        obj = obj["model_state_dict"]
    bad = [k for k, v in obj.items() if not torch.is_tensor(v)]
    if bad:
        raise ConfigError("checkpoint", bad[0], "is not a tensor: neither a state dict nor the official trainer's "
                                                "checkpoint (which holds the state dict under 'model_state_dict')")
    return {k: v.detach().to("cpu") for k, v in obj.items()}, stored


class _InertRecord:
    """Stands in for a class that a checkpoint names: keeps the pickled arguments and state, runs nothing."""

    global_name = "?"

    def __init__(self, *args):
        self.args, self.state = args, None

    def __setstate__(self, state):
        self.state = state


def _load_file(path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise ConfigError("checkpoint", str(path), "file not found")
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    except Exception as exc:  # not a zip archive of torch.save
        raise ConfigError("checkpoint", str(path), f"not a torch.save file ({exc.__class__.__name__}: {exc})") from None
    records = [(type(name.rsplit(".", 1)[-1], (_InertRecord,), {"global_name": name}), name) for name in names]
    try:
        with torch.serialization.safe_globals(records):
            return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ConfigError("checkpoint", str(path),
                          f"cannot be read with torch.load(weights_only=True) ({exc.__class__.__name__}: {exc})") from None


def _plain(value):
    """Returns nested dicts / lists of the fields kept by inert records (pydantic models pickle a ``__dict__``)."""
    if isinstance(value, _InertRecord):
        state = value.state
        if isinstance(state, Mapping) and isinstance(state.get("__dict__"), Mapping):
            state = state["__dict__"]
        return _plain(state) if isinstance(state, Mapping) else None
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _field(stored: dict, *path):
    cur = stored
    for p in path:
        if not isinstance(cur, Mapping) or p not in cur:
            return None
        cur = cur[p]
    return cur


def _check_stored_config(stored: dict, system_config, model: str) -> None:
    """Raises ConfigError when the trainer file's own configs contradict ``system_config`` or ``model``."""
    (f, t), (pf, pt) = system_config.ofdm.grid_shape, system_config.ofdm.pilot_shape
    wanted = {("ofdm", "num_scs"): f, ("ofdm", "num_symbols"): t, ("pilot", "num_scs"): pf, ("pilot", "num_symbols"): pt}
    for path, value in wanted.items():
        got = _field(stored, "system_config", *path)
        if got is not None and got != value:
            raise ConfigError(f"checkpoint.system_config.{'.'.join(path)}", got,
                              f"the checkpoint was trained for another grid; system_config has {f}x{t} with {pf}x{pt} pilots")
    got = _field(stored, "model_config", "model_type")
    if got is not None and got != model:
        raise ConfigError("checkpoint.model_config.model_type", got, f"does not match model={model!r}")
    act = _field(stored, "model_config", "activation")
    if act is not None and act != "gelu":
        raise ConfigError("checkpoint.model_config.activation", act, "wavefront's transformer uses GELU; "
                                                                     "this checkpoint cannot be converted exactly")


def _looks_like(keys) -> str:
    if any(k.startswith("channel_adapter.") for k in keys):
        return "adafortitran"
    if any(k.startswith("transformer_encoder.") for k in keys):
        return "fortitran"
    return "linear" if "linear.weight" in keys else "unknown"


def _check_keys(state: Mapping, expected: set[str], model: str) -> None:
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    hint = f"; the keys look like a {_looks_like(state)!r} checkpoint"
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise ConfigError("state_dict", missing[0], f"missing{more}: an official {model!r} has this key{hint}")
    if unexpected:
        more = f" (and {len(unexpected) - 1} more)" if len(unexpected) > 1 else ""
        raise ConfigError("state_dict", unexpected[0], f"unexpected{more} for an official {model!r}{hint}")


def _name_map(num_layers: int, adaptive: bool, pos_key: str) -> dict[str, str]:
    """Returns official parameter name -> wavefront parameter name for (Ada)FortiTran."""
    names = {"pilot_upsampler.weight": "upsampler.weight", "pilot_upsampler.bias": "upsampler.bias",
             pos_key: "transformer.pos"}
    for wb in ("weight", "bias"):
        for i in _ENHANCER_CONVS:
            names[f"initial_enhancer.conv_block.{i}.{wb}"] = f"enhancer_in.{i}.{wb}"
            names[f"final_refiner.conv_block.{i}.{wb}"] = f"enhancer_out.{i}.{wb}"
        names[f"transformer_encoder.linear_1.{wb}"] = f"transformer.linear_in.{wb}"
        names[f"transformer_encoder.linear_2.{wb}"] = f"transformer.linear_out.{wb}"
        if adaptive:
            for enc, (idx, _) in CONDITION_ENCODERS.items():
                for j in (0, 2, 4):
                    names[f"channel_adapter.{enc}.{j}.{wb}"] = f"conditions.mlps.{idx}.{j}.{wb}"
    for i in range(num_layers):
        for s in _LAYER_SUFFIXES:
            names[f"transformer_encoder.transformer.layers.{i}.{s}"] = f"transformer.encoder.layers.{i}.{s}"
    return names


def _convert_fortitran(state, system_config, model, stored, num_heads, patch_size, pos_rows):
    """Returns (wavefront state dict, ``create`` overrides, official name -> wavefront name)."""
    adaptive = model == "adafortitran"
    layer_ids = {int(m.group(1)) for k in state if (m := re.match(r"transformer_encoder\.transformer\.layers\.(\d+)\.", k))}
    num_layers = max(layer_ids, default=0) + 1  # layer 0 is expected even when absent: reported as missing
    pos_key = _POS_SINUSOIDAL if _POS_SINUSOIDAL in state else _POS_LEARNABLE
    names = _name_map(num_layers, adaptive, pos_key)
    _check_keys(state, set(names), model)

    def setting(key, given, wavefront_key):
        from_file = _field(stored, "model_config", key)
        if from_file is not None and given is not None and _as_tuple(from_file) != _as_tuple(given):
            raise ConfigError(wavefront_key, given, f"the checkpoint's model_config has {key}={from_file!r}")
        value = given if given is not None else from_file if from_file is not None else _OFFICIAL_DEFAULTS[key]
        return _as_tuple(value)

    heads = setting("num_head", num_heads, "num_heads")
    patch = tuple(int(p) for p in setting("patch_size", patch_size, "patch_size"))
    dropout = _field(stored, "model_config", "dropout")
    n_f, n_t = check_patch_size(system_config.ofdm.grid_shape, patch)
    num_patches = n_f * n_t
    table = state[pos_key]
    if table.dim() != 3 or table.shape[0] != 1 or table.shape[1] < num_patches:
        raise ConfigError(pos_key, list(table.shape), f"must be [1, rows >= {num_patches} patches, d]")
    rows = table.shape[1] if pos_rows is None else int(pos_rows)
    if not num_patches <= rows <= table.shape[1]:
        raise ConfigError("pos_rows", pos_rows, f"must be between the {num_patches} patches and the table's {table.shape[1]} rows")
    model_dim = state["transformer_encoder.linear_1.weight"].shape[0]
    hparams = {"patch_size": list(patch), "model_dim": int(model_dim), "num_heads": int(heads), "num_layers": num_layers,
               "ff_mult": 2, "dropout": 0.1 if dropout is None else float(dropout), "pos_rows": rows,
               "adaptive_token_length": 6, "enhancer_channels": [8, 32, 8]}
    if adaptive:
        hparams["condition_hidden"] = [int(state[f"channel_adapter.snr_encoder.{j}.weight"].shape[0]) for j in (0, 2)]
    converted = {names[k]: v for k, v in state.items()}
    converted["transformer.pos"] = table[:, :rows]
    if adaptive:
        for enc, (idx, scale) in CONDITION_ENCODERS.items():
            key = f"conditions.mlps.{idx}.0.weight"
            converted[key] = converted[key].double() * scale  # rounded once, to the model's dtype, on loading
    return converted, hparams, names


def _as_tuple(v):
    return tuple(v) if isinstance(v, (list, tuple)) else v
