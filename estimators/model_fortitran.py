"""FortiTran and AdaFortiTran (Guler et al., ICC 2025, arXiv 2505.09076): hybrid CNN-transformer estimators.

Pipeline, per real-valued plane ``[N, P_f, P_t]``:

1. a linear upsampler from the ``P`` pilots (``P_f*P_t`` on a Kronecker grid; any pilot layout) to the ``F*T`` grid;
2. a conv enhancer (3x3, 1 -> 8 -> 32 -> 8 -> 1, ReLU between);
3. non-overlapping ``p_f x p_t`` patches (3x2), each a token;
4. AdaFortiTran only: SNR, delay spread and Doppler, each through an MLP ``1 -> 7 -> 42 -> 2L``,
   reshaped to 2 values per patch and concatenated to every patch (adaptive token length 6);
5. a transformer encoder (d 128, 4 heads, 6 layers, FF 2d, GELU, dropout 0.1, learnable positions);
6. patches back to the grid, plus the enhancer output (residual);
7. a final conv enhancer of the same shape.

Differences from the official code, none of which changes the function:

- real and imaginary parts run in one batched pass (``[2B, ...]``), not two calls;
- the positional table has one row per patch (280 on 120 x 14) by default; the official code
  has 512 rows, of which only the first 280 are ever used. ``pos_rows=512`` restores its
  parameter count exactly (987,746 / 913,688 for 12 x 2 pilots);
- ``enhancer_channels`` (default 8, 32, 8, the paper's) and the transformer sizes are options,
  for small models on small machines; ``adaptive_token_length`` and ``condition_hidden``
  matter to AdaFortiTran only.

:func:`wavefront.estimators.official_weights.load_official` converts an official checkpoint into these
classes; ``tests/estimators/test_est_official.py`` checks the outputs against the official computation.
"""
from __future__ import annotations

import torch
from torch import nn

from wavefront.estimators.blocks import ConditionTokens, ConvEnhancer, PatchTransformer, check_patch_size, patchify, unpatchify
from wavefront.estimators.registry import EstimatorModel, register_model


@register_model("fortitran")
class FortiTran(EstimatorModel):
    """FortiTran: the AdaFortiTran pipeline without the channel-condition tokens."""

    def __init__(self, system_config, patch_size=(3, 2), model_dim=128, num_heads=4, num_layers=6, ff_mult=2,
                 dropout=0.1, pos_rows=None, adaptive_token_length=6, condition_hidden=(7, 42),
                 enhancer_channels=(8, 32, 8)):
        super().__init__(system_config)
        self.patch_size = tuple(patch_size)
        n_f, n_t = check_patch_size(self.grid_shape, self.patch_size)
        num_patches = n_f * n_t
        patch_len = self.patch_size[0] * self.patch_size[1]
        f, t = self.grid_shape
        self.upsampler = nn.Linear(self.num_pilots, f * t)  # any layout: P inputs
        conv = (1, *enhancer_channels, 1)
        self.enhancer_in = ConvEnhancer(conv)
        token_len = adaptive_token_length if self.uses_conditions else 0
        self.conditions = ConditionTokens(num_patches, adaptive_token_length, tuple(condition_hidden)) if token_len else None
        self.transformer = PatchTransformer(patch_len + token_len, patch_len, num_patches, model_dim, num_heads,
                                            num_layers, ff_mult, dropout, pos_rows)
        self.enhancer_out = ConvEnhancer(conv)

    def forward_real(self, x: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        n = x.shape[0]
        grid = self.upsampler(x.reshape(n, -1)).reshape(n, 1, *self.grid_shape)
        enhanced = self.enhancer_in(grid).squeeze(1)
        tokens = patchify(enhanced, self.patch_size)
        if self.conditions is not None:
            tokens = torch.cat((tokens, self.conditions(cond).to(tokens.dtype)), dim=2)
        rebuilt = unpatchify(self.transformer(tokens), self.grid_shape, self.patch_size)
        return self.enhancer_out((enhanced + rebuilt).unsqueeze(1)).squeeze(1)

    def forward_two_pass(self, pilots: torch.Tensor, meta: dict | None = None) -> torch.Tensor:
        """Returns the same estimate as :meth:`forward`, computed as the official code does: real, then imaginary.

        Kept as the baseline of ``scripts/bench_train.py``.
        """
        from wavefront.estimators.blocks import normalise_conditions

        cond = normalise_conditions(meta, pilots.shape[0], pilots.device) if self.uses_conditions else None
        re = self.forward_real(pilots.real.float().contiguous(), cond)
        im = self.forward_real(pilots.imag.float().contiguous(), cond)
        return torch.complex(re.float(), im.float())


@register_model("adafortitran")
class AdaFortiTran(FortiTran):
    """AdaFortiTran: FortiTran with SNR / delay-spread / Doppler tokens concatenated to every patch."""

    uses_conditions = True
