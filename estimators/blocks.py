"""Building blocks shared by the learned estimators.

Two conventions live here and nowhere else:

- **complex <-> real.** Public tensors are complex64 ``[B, ...]``. Networks see real
  tensors ``[2B, ...]``: the real parts of the batch followed by its imaginary parts, so
  both go through the same weights in **one** batched pass (the official AdaFortiTran code
  makes two sequential calls; the function is the same, the kernels are twice as large).
  :func:`complex_to_stacked` and :func:`stacked_to_complex` do the conversion.
- **channel conditions.** :func:`normalise_conditions` maps the physical conditions to
  network inputs of order one:

  ============  ===========================  =====================
  condition     unit on the API              network input
  ============  ===========================  =====================
  SNR           ``snr_db`` [dB]              ``snr_db / 10``
  delay spread  ``delay_spread_s`` [s]       ``delay_spread_s / 100e-9`` (hundreds of ns)
  Doppler       ``doppler_hz`` [Hz]          ``doppler_hz / 500``
  ============  ===========================  =====================

  (The official code feeds the raw integers of its file names: dB, ns and Hz.)
"""
from __future__ import annotations

import torch
from torch import nn

from wavefront.errors import ConfigError
from wavefront.sim.interpolation import interpolation_matrix, interpolation_weights

# One documented place for the scales of the condition inputs (see the module docstring).
SNR_SCALE_DB = 10.0
DELAY_SPREAD_SCALE_S = 100e-9
DOPPLER_SCALE_HZ = 500.0
CONDITION_KEYS = ("snr_db", "delay_spread_s", "doppler_hz")


def normalise_conditions(meta: dict[str, torch.Tensor], batch_size: int, device, dtype=torch.float32) -> torch.Tensor:
    """Returns the network's condition input ``[B, 3]`` (SNR, delay spread, Doppler), scaled to order one.

    ``meta`` holds ``snr_db`` [dB], ``delay_spread_s`` [s] and ``doppler_hz`` [Hz], each a
    ``[B]`` tensor (or a scalar, broadcast to the batch).
    """
    scales = (SNR_SCALE_DB, DELAY_SPREAD_SCALE_S, DOPPLER_SCALE_HZ)
    cols = []
    for key, scale in zip(CONDITION_KEYS, scales):
        if meta is None or key not in meta:
            raise ConfigError("meta", sorted(meta) if meta else None,
                              f"this model is conditioned on the channel and needs '{key}' in meta")
        v = torch.as_tensor(meta[key], dtype=torch.float64, device=device).reshape(-1)
        if v.numel() == 1:
            v = v.expand(batch_size)
        if v.numel() != batch_size:
            raise ConfigError(f"meta.{key}", tuple(v.shape), f"must hold one value per frame ({batch_size})")
        cols.append(v / scale)
    return torch.stack(cols, dim=1).to(dtype)


def complex_to_stacked(x: torch.Tensor) -> torch.Tensor:
    """Returns ``[2B, ...]`` real: the real parts of ``x`` ``[B, ...]`` complex, then the imaginary parts."""
    return torch.cat((x.real, x.imag), dim=0)


def stacked_to_complex(y: torch.Tensor) -> torch.Tensor:
    """Returns ``[B, ...]`` complex64 from ``[2B, ...]`` real (real parts first, as :func:`complex_to_stacked`)."""
    re, im = y.float().chunk(2, dim=0)
    return torch.complex(re.contiguous(), im.contiguous())


# ---- fixed interpolation from the pilot grid to the full grid ------------------------------
class PilotInterpolator(nn.Module):
    """Maps pilots to the full grid ``[N, F, T]`` by fixed linear interpolation.

    A Kronecker layout: pilot grid ``[N, P_f, P_t]``, separable linear interpolation. A
    scattered layout: pilots ``[N, P]``, linear over the layout's Delaunay triangulation
    (:func:`wavefront.sim.interpolation.interpolation_weights`, the ``ls-linear`` weights).
    The weights are fixed (a buffer that is not saved): the classical LS-linear front end
    that ChannelNet and the ConvNeXt estimator refine.
    """

    def __init__(self, ofdm):
        super().__init__()
        layout = ofdm.pilot_layout
        self.separable = layout.is_kronecker
        self.grid_shape = tuple(ofdm.grid_shape)
        if not self.separable:
            w = interpolation_weights(layout, "linear")  # [F*T, P]
            self.register_buffer("w", torch.tensor(w, dtype=torch.float32), persistent=False)
            return
        w_f = interpolation_matrix(ofdm.pilot_subcarriers, ofdm.num_subcarriers, "linear")
        w_t = interpolation_matrix(ofdm.pilot_symbol_indices, ofdm.num_symbols, "linear")
        self.register_buffer("w_f", torch.tensor(w_f, dtype=torch.float32), persistent=False)
        self.register_buffer("w_t", torch.tensor(w_t, dtype=torch.float32), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.separable:
            return (x @ self.w.to(x.dtype).T).reshape(x.shape[0], *self.grid_shape)
        return self.w_f.to(x.dtype) @ x @ self.w_t.to(x.dtype).T


# ---- AdaFortiTran blocks ------------------------------------------------------------------
class ConvEnhancer(nn.Sequential):
    """Four 3x3 convolutions, 1 -> 8 -> 32 -> 8 -> 1 channels, ReLU between them: ``[N, 1, F, T] -> [N, 1, F, T]``."""

    def __init__(self, channels=(1, 8, 32, 8, 1)):
        layers = []
        for i, (c_in, c_out) in enumerate(zip(channels[:-1], channels[1:])):
            if i:
                layers.append(nn.ReLU())
            layers.append(nn.Conv2d(c_in, c_out, kernel_size=3, padding=1))
        super().__init__(*layers)


def check_patch_size(grid_shape: tuple[int, int], patch_size: tuple[int, int]) -> tuple[int, int]:
    """Returns the patch counts ``(F / p_f, T / p_t)``, or raises ConfigError if a patch does not tile the grid."""
    (f, t), (pf, pt) = grid_shape, patch_size
    if pf < 1 or pt < 1:
        raise ConfigError("patch_size", list(patch_size), "both sides must be >= 1")
    if f % pf or t % pt:
        raise ConfigError("patch_size", list(patch_size),
                          f"must divide the {f}x{t} grid (subcarriers % {pf} = {f % pf}, symbols % {pt} = {t % pt})")
    return f // pf, t // pt


def patchify(x: torch.Tensor, patch_size: tuple[int, int]) -> torch.Tensor:
    """Returns ``[N, L, p_f*p_t]`` non-overlapping patches of ``x`` ``[N, F, T]``, row-major (as ``nn.Unfold``)."""
    n, f, t = x.shape
    pf, pt = patch_size
    x = x.reshape(n, f // pf, pf, t // pt, pt).permute(0, 1, 3, 2, 4)
    return x.reshape(n, (f // pf) * (t // pt), pf * pt)


def unpatchify(x: torch.Tensor, grid_shape: tuple[int, int], patch_size: tuple[int, int]) -> torch.Tensor:
    """Returns ``[N, F, T]`` from patches ``[N, L, p_f*p_t]`` (inverse of :func:`patchify`)."""
    n = x.shape[0]
    (f, t), (pf, pt) = grid_shape, patch_size
    x = x.reshape(n, f // pf, t // pt, pf, pt).permute(0, 1, 3, 2, 4)
    return x.reshape(n, f, t)


class ConditionTokens(nn.Module):
    """Encodes SNR, delay spread and Doppler, each by an MLP ``1 -> h1 -> h2 -> L * k``, into adaptive tokens.

    Input ``[N, 3]`` (normalised conditions), output ``[N, L, 3k]``: each patch gets ``k``
    values from each condition (``3k`` = the adaptive token length, 6 in the paper, so the
    last layer is ``2 L`` = 560 wide for 280 patches).
    """

    def __init__(self, num_patches: int, token_length: int = 6, hidden=(7, 42)):
        super().__init__()
        if token_length % 3:
            raise ConfigError("adaptive_token_length", token_length, "must be a multiple of 3 (SNR, delay spread, Doppler)")
        self.num_patches, self.per_condition = num_patches, token_length // 3
        out = num_patches * self.per_condition
        self.mlps = nn.ModuleList(
            nn.Sequential(nn.Linear(1, hidden[0]), nn.ReLU(), nn.Linear(hidden[0], hidden[1]), nn.ReLU(),
                          nn.Linear(hidden[1], out))
            for _ in range(3))

    def forward(self, cond: torch.Tensor) -> torch.Tensor:
        n = cond.shape[0]
        toks = [mlp(cond[:, i:i + 1]).reshape(n, self.num_patches, self.per_condition) for i, mlp in enumerate(self.mlps)]
        return torch.cat(toks, dim=2)


class PatchTransformer(nn.Module):
    """Linear in, learnable positions, post-norm transformer encoder (GELU, FF = ff_mult * d), linear out.

    ``[N, L, d_in] -> [N, L, d_out]``. ``nn.TransformerEncoderLayer`` runs PyTorch's fused
    scaled-dot-product attention. The positional table has ``pos_rows`` rows (>= L).
    """

    def __init__(self, d_in: int, d_out: int, num_patches: int, model_dim=128, num_heads=4, num_layers=6,
                 ff_mult=2, dropout=0.1, pos_rows: int | None = None):
        super().__init__()
        if model_dim % num_heads:
            raise ConfigError("num_heads", num_heads, f"must divide model_dim={model_dim}")
        pos_rows = num_patches if pos_rows is None else int(pos_rows)
        if pos_rows < num_patches:
            raise ConfigError("pos_rows", pos_rows, f"the positional table needs at least one row per patch ({num_patches})")
        self.linear_in = nn.Linear(d_in, model_dim)
        self.pos = nn.Parameter(torch.zeros(1, pos_rows, model_dim))
        nn.init.trunc_normal_(self.pos, std=0.02)
        layer = nn.TransformerEncoderLayer(model_dim, num_heads, dim_feedforward=ff_mult * model_dim, dropout=dropout,
                                           activation="gelu", batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers=num_layers, enable_nested_tensor=False)
        self.linear_out = nn.Linear(model_dim, d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.linear_in(x) + self.pos[:, : x.shape[1]]
        return self.linear_out(self.encoder(x))


class ResidualBlock(nn.Module):
    """``x + conv(relu(conv(x)))`` with 3x3 convolutions of ``channels`` channels (ReEsNet's block)."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(),
                                  nn.Conv2d(channels, channels, 3, padding=1))

    def forward(self, x):
        return x + self.body(x)


def require_pilot_grid(ofdm, model: str) -> tuple[int, int]:
    """Returns ``(P_f, P_t)``, or raises ConfigError when the layout is scattered (no pilot grid to convolve)."""
    layout = ofdm.pilot_layout
    if not layout.is_kronecker:
        raise ConfigError("model", model, f"convolves the [P_f, P_t] pilot grid, and the pilot layout is "
                                          f"{layout.describe()}; use gated-lmmse, linear, fortitran, adafortitran "
                                          "(any P) or channelnet, convnext (on the LS-interpolated grid)")
    return layout.pilot_shape


def integer_upsampling(ofdm, model: str) -> tuple[int, int]:
    """Returns ``(F / P_f, T / P_t)``, or raises ConfigError when the pilot grid does not divide the full grid."""
    (f, t), (pf, pt) = ofdm.grid_shape, require_pilot_grid(ofdm, model)
    if f % pf or t % pt:
        raise ConfigError("model", model, f"needs the pilot grid {pf}x{pt} to divide the {f}x{t} grid by whole factors "
                                          f"(learned upsampling by integer strides); use interpolatenet or convnext")
    return f // pf, t // pt
