"""The second-order yardsticks that know the receiver impairments' distribution: ``lmmse-genie-impaired``, ``mmse-bayes-impaired``.

``lmmse-genie`` and ``mmse-bayes`` model the LS pilots as ``h + n``; with impairments on they are
``c h + i + n`` (:mod:`~wavefront.sim.impairment_stats`: a timing ramp, a common phase per symbol, ICI).
These two estimators use the pilots' true second-order statistics under the impairments' distribution,

    R_yy = R_pp * E[c c^H] + (sigma^2 + P_ici) I,     R_hy = R_hp * conj(E[c])^T,

with the label's covariance that of each symbol's average channel (the time-domain path's label) and
``P_ici = 1 - (1 - P_imp)(1 - P_dop)``: they know the distribution, not the frame's offset, CFO or
phase. ``E[c c^H]`` is a Kronecker product (timing in frequency, oscillator in time), so each Kronecker
term of the channel's covariance is modulated factor by factor and ``mmse-bayes``'s separable machinery
is reused unchanged (:meth:`BayesMMSE.bank`, :meth:`GenieLMMSE.second_order`).

- :class:`ImpairedGenieLMMSE`: the LMMSE at each frame's true delay spread, Doppler and SNR. Its MSE is
  :func:`impaired_genie_mse` exactly (a linear estimator's MSE depends on second-order statistics alone):
  the best any linear estimator does with the genie's knowledge; a nonlinear one that infers the frame's
  impairment from the pilots may do better.
- :class:`ImpairedBayesMMSE`: ``mmse-bayes``'s posterior-weighted bank over the prior's grid with every
  hypothesis' covariance modulated as above: the Gaussian-mixture posterior mean of a model whose pilots
  are Gaussian with the impaired second-order statistics. The impaired pilots are not Gaussian (the
  impairment multiplies the channel), so it is the best *second-order* estimator given the prior, not
  the MMSE.

With every impairment off both return their parents' numbers bit for bit (the hooks hand back the
parents' blocks).
"""
from __future__ import annotations

from functools import lru_cache

import torch

from wavefront.sim.conditions import ConditionPrior, _Bank, _build_bank, separable_blocks
from wavefront.sim.config import SystemConfig, profile_label
from wavefront.sim.impairment_stats import impairment_moments, impairment_text
from wavefront.sim.lmmse import GenieLMMSE, _Stats, _true_stats, _unique_conditions, lmmse_mse
from wavefront.sim.prior_lmmse import BayesMMSE
from wavefront.sim.profiles import channel_profile
from wavefront.sim.statistics import ici_power


class ImpairedGenieLMMSE(GenieLMMSE):
    """``lmmse-genie`` with the pilots' second-order statistics under the impairments' distribution.

    ``estimate(pilots [B, P_f, P_t] or [B, P] c64, meta) -> [B, F, T] c64``; ``meta`` as ``lmmse-genie``'s
    (true ``delay_spread_s``, ``doppler_hz``, ``noise_var``); the frame's impairment values are not read.
    """

    name = "lmmse-genie-impaired"
    needs = "truth"

    def __init__(self, config: SystemConfig, dense: bool = False):
        super().__init__(config, dense)
        self.moments = impairment_moments(config)  # None with every impairment off
        if self.moments is not None:
            self.given = f"true profile, delay spread, Doppler and SNR (genie); {impairment_text(config)}; ICI as extra noise"

    def second_order(self, ds: torch.Tensor, fd: torch.Tensor, noise_var: torch.Tensor) -> tuple[_Stats, torch.Tensor]:
        """Returns (``R_hy`` and ``R_yy`` blocks, white noise per RE ``sigma^2 + P_ici`` [U] float64) at conditions [U]."""
        if self.moments is None:
            return super().second_order(ds, fd, noise_var)
        stats = _true_stats(self.ofdm, self.profile, ds, fd, self.dense, symbol_average=True, moments=self.moments)
        return stats, noise_var + self.moments.total_ici_power(ici_power(self.ofdm, self.profile, fd))


def impaired_genie_mse(config: SystemConfig, snr_db, delay_spread_s, doppler_hz) -> torch.Tensor:
    """Returns the MSE per RE of ``lmmse-genie-impaired``, ``tr(R_hh - R_hy R_yy^-1 R_yh) / (F T)``, float64 linear.

    ``snr_db`` (the config's convention), ``delay_spread_s`` [s], ``doppler_hz`` [Hz] broadcast to [B] (scalars: 0-d).
    With every impairment off it is :func:`~wavefront.sim.lmmse.genie_mse`'s value.
    """
    est = ImpairedGenieLMMSE(config)
    snr = torch.as_tensor(snr_db, dtype=torch.float64) + config.snr_offset_db
    snr, ds, fd = torch.broadcast_tensors(snr, *(torch.as_tensor(v, dtype=torch.float64) for v in (delay_spread_s, doppler_hz)))
    uniq, index = _unique_conditions(snr, ds, fd)
    stats, noise = est.second_order(uniq[:, 1], uniq[:, 2], torch.pow(10.0, -uniq[:, 0] / 10))
    power = 1.0 - ici_power(config.ofdm, est.profile, uniq[:, 2]) if est.ici else 1.0
    return lmmse_mse(stats, noise, power, config.ofdm)[index].reshape(snr.shape)


class ImpairedBayesMMSE(BayesMMSE):
    """``mmse-bayes`` whose every hypothesis has the impaired pilots' second-order statistics (``mmse-bayes-impaired``).

    ``estimate(pilots [B, P_f, P_t] or [B, P] c64, meta) -> [B, F, T] c64``; ``meta`` is not read.
    """

    name = "mmse-bayes-impaired"
    needs = "none"

    def __init__(self, config: SystemConfig, prior: ConditionPrior | None = None):
        super().__init__(config, prior)
        self.moments = impairment_moments(config)
        if self.moments is not None:
            self.given = (f"{profile_label(config.channel.profile)} shape; uniform prior over {self.prior.describe()}; "
                          f"{impairment_text(config)}; ICI as extra noise; posterior-weighted LMMSE bank")

    def bank(self, device: torch.device) -> _Bank:
        """Returns the bank of the impaired second-order statistics (cached; ``mmse-bayes``'s without impairments)."""
        if self.moments is None:
            return super().bank(device)
        return _impaired_bank(self.config, self.prior, device)


@lru_cache(maxsize=8)
def _impaired_bank(config: SystemConfig, prior: ConditionPrior, device: torch.device) -> _Bank:
    """Returns the :class:`_Bank` of the prior's hypotheses with the impairments' moments (same size as ``mmse-bayes``'s)."""
    mom = impairment_moments(config)
    layout = config.ofdm.pilot_layout
    blocks = mom.modulate(*separable_blocks(config, prior, symbol_average=True), *layout.covariance_columns())
    snr = torch.tensor(prior.snrs_db, dtype=torch.float64)
    ds = torch.tensor(prior.delay_spreads_s, dtype=torch.float64)
    fd = torch.tensor(prior.dopplers_hz, dtype=torch.float64)
    prof = channel_profile(config.channel.profile, config.channel.travel_azimuth_deg)
    extra = mom.total_ici_power(ici_power(config.ofdm, prof, fd)).repeat(len(ds))  # [K], k = d N_fd + f
    return _build_bank(*blocks, layout.is_kronecker, config.noise_variance(snr).to(torch.float64), ds, fd, snr, device,
                       extra_noise=extra)
