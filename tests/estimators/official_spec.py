"""The official AdaFortiTran forward computation, transcribed from its documented contract, for tests.

Written for wavefront from the contract of BerkIGuler/AdaFortiTran (MIT), not copied from it;
the parameter names are the official ones, so ``state_dict()`` has an official checkpoint's
layout. The contract, per real-valued plane:

1. ``pilot_upsampler``: Linear ``P_f*P_t -> F*T`` on the flattened (row-major) pilots;
2. ``initial_enhancer``: 3x3 convs 1 -> 8 -> 32 -> 8 -> 1, ReLU between (``conv_block.{0,2,4,6}``);
3. patches by ``nn.Unfold(kernel=stride=patch)``: row-major over patches, row-major inside one;
4. AdaFortiTran: ``channel_adapter.{snr,ds,dop}_encoder`` MLPs ``1 -> h1 -> h2 -> 2L`` on the raw
   conditions (SNR dB, delay spread ns, Doppler Hz, each ``[B, 1]``), each reshaped to
   ``[B, L, 2]`` and concatenated (snr, ds, dop) after the patch values;
5. ``transformer_encoder``: ``linear_1``, plus the first ``L`` rows of the learnable table
   ``positional_encoding.position_embeddings`` ``[1, rows, d]``, then a post-norm
   ``nn.TransformerEncoderLayer`` stack (GELU, FF 2 d, batch_first), then ``linear_2``;
6. ``nn.Fold`` back to ``[F, T]``, plus the enhancer output (residual);
7. ``final_refiner``: the same conv stack.

Real and imaginary parts go through steps 1-7 in two sequential calls. The official
``LinearEstimator`` (``linear``: ``P_f*P_t -> F*T``) is transcribed the same way, one call per part.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class _ConvStack(nn.Module):
    def __init__(self):
        super().__init__()
        widths = (1, 8, 32, 8, 1)
        layers = []
        for c_in, c_out in zip(widths[:-1], widths[1:]):
            layers += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU()]
        self.conv_block = nn.Sequential(*layers[:-1])

    def forward(self, x):
        return self.conv_block(x)


class _ConditionMLPs(nn.Module):
    def __init__(self, hidden: tuple[int, int, int]):
        super().__init__()
        h1, h2, h3 = hidden
        for name in ("snr_encoder", "ds_encoder", "dop_encoder"):
            setattr(self, name, nn.Sequential(nn.Linear(1, h1), nn.ReLU(), nn.Linear(h1, h2), nn.ReLU(), nn.Linear(h2, h3)))

    def forward(self, snr_db, ds_ns, dop_hz):
        encoders = (self.snr_encoder, self.ds_encoder, self.dop_encoder)
        return torch.cat([enc(v).reshape(v.shape[0], -1, 2) for enc, v in zip(encoders, (snr_db, ds_ns, dop_hz))], dim=2)


class _Table(nn.Module):
    def __init__(self, rows: int, d: int):
        super().__init__()
        self.position_embeddings = nn.Parameter(0.02 * torch.randn(1, rows, d))


class _Encoder(nn.Module):
    def __init__(self, d_in, d_out, d, heads, layers, rows):
        super().__init__()
        self.linear_1 = nn.Linear(d_in, d)
        self.positional_encoding = _Table(rows, d)
        self.transformer = nn.TransformerEncoder(
            nn.TransformerEncoderLayer(d, heads, 2 * d, dropout=0.1, activation="gelu", batch_first=True), layers)
        self.linear_2 = nn.Linear(d, d_out)

    def forward(self, x):
        x = self.linear_1(x)
        x = x + self.positional_encoding.position_embeddings[:, : x.shape[1]]
        return self.linear_2(self.transformer(x))


class OfficialFortiTranSpec(nn.Module):
    """(Ada)FortiTran as the official code computes it: pilots ``[B, P_f, P_t]`` complex -> ``[B, F, T]`` complex.

    Conditions (AdaFortiTran only) in the official raw units: ``snr_db`` [dB], ``ds_ns`` [ns],
    ``dop_hz`` [Hz], each ``[B, 1]`` of the pilots' real dtype.
    """

    def __init__(self, grid_shape, pilot_shape, adaptive: bool, patch_size=(3, 2), model_dim=128, num_heads=4,
                 num_layers=6, table_rows=512, hidden=(7, 42)):
        super().__init__()
        self.grid_shape, self.patch_size, self.adaptive = tuple(grid_shape), tuple(patch_size), adaptive
        (f, t), (pf, pt) = grid_shape, pilot_shape
        num_patches = (f // patch_size[0]) * (t // patch_size[1])
        patch_len = patch_size[0] * patch_size[1]
        self.pilot_upsampler = nn.Linear(pf * pt, f * t)
        self.initial_enhancer = _ConvStack()
        if adaptive:
            self.channel_adapter = _ConditionMLPs((*hidden, 2 * num_patches))
        self.transformer_encoder = _Encoder(patch_len + (6 if adaptive else 0), patch_len, model_dim, num_heads,
                                            num_layers, table_rows)
        self.final_refiner = _ConvStack()

    def forward(self, pilots, snr_db=None, ds_ns=None, dop_hz=None):
        conds = (snr_db, ds_ns, dop_hz) if self.adaptive else None
        return torch.complex(self.one_plane(pilots.real, conds), self.one_plane(pilots.imag, conds))

    def one_plane(self, x, conds):
        """Returns ``[B, F, T]`` real from one real plane of pilots ``[B, P_f, P_t]``."""
        b = x.shape[0]
        grid = self.pilot_upsampler(x.reshape(b, -1)).reshape(b, 1, *self.grid_shape)
        enhanced = self.initial_enhancer(grid)                                          # [B, 1, F, T]
        patches = F.unfold(enhanced, self.patch_size, stride=self.patch_size).transpose(1, 2)  # [B, L, p_f p_t]
        if conds is not None:
            patches = torch.cat((patches, self.channel_adapter(*conds)), dim=2)
        out = self.transformer_encoder(patches).transpose(1, 2)
        rebuilt = F.fold(out, self.grid_shape, self.patch_size, stride=self.patch_size)  # [B, 1, F, T]
        return self.final_refiner(enhanced + rebuilt).squeeze(1)


class OfficialLinearSpec(nn.Module):
    """The official LinearEstimator, once per real plane: ``[B, P_f, P_t]`` complex -> ``[B, F, T]`` complex."""

    def __init__(self, grid_shape, pilot_shape):
        super().__init__()
        self.grid_shape = tuple(grid_shape)
        self.linear = nn.Linear(pilot_shape[0] * pilot_shape[1], grid_shape[0] * grid_shape[1])

    def forward(self, pilots, *_conditions):
        def plane(x):
            return self.linear(x.flatten(1)).reshape(-1, *self.grid_shape)

        return torch.complex(plane(pilots.real), plane(pilots.imag))


def build_spec(model: str, system_config):
    """Returns the transcription of official ``model`` at its default sizes for ``system_config``'s grid."""
    grid, pilots = system_config.ofdm.grid_shape, system_config.ofdm.pilot_shape
    if model == "linear":
        return OfficialLinearSpec(grid, pilots)
    return OfficialFortiTranSpec(grid, pilots, adaptive=model == "adafortitran")


@torch.no_grad()
def perturb_(module: nn.Module, generator: torch.Generator, scale: float = 0.05) -> nn.Module:
    """Adds N(0, scale^2) to every parameter, so that no weight keeps a symmetric default (LayerNorm 1 / 0)."""
    for p in module.parameters():
        p.add_(scale * torch.randn(p.shape, generator=generator, dtype=p.dtype))
    return module
