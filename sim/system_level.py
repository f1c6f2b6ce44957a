"""TR 38.901 system-level channels (UMi, UMa) drawn through Sionna, and the LMMSE whose covariances come from samples.

**Channels** (:class:`SystemLevelChannel`). ``channel.profile: UMi`` or ``UMa`` with several
antennas or users: each frame drops its U single-antenna users in one sector of one cell
(Sionna's ``gen_single_sector_topology``) and draws their channels to the base station's
R-element uniform linear array with Sionna's ``UMi``/``UMa`` (uplink; TR 38.901 spec 19.2), then
its channel impulse response at the frame's T symbol starts and ``cir_to_ofdm_channel`` on the
grid's F subcarriers: ``h`` [B, R, U, F, T] complex64. The base station's elements are
vertically polarised, omnidirectional and half a wavelength apart, the users' single omni
antennas; pathloss and shadow fading are off and each user's channel is scaled to unit mean
power over its antennas, subcarriers and symbols in every frame (power control), so the SNR keeps
the MIMO convention ``E|h_u x_u|^2 / sigma^2`` per resource element and antenna. Delay spread,
angles, LoS state and clusters come from the scenario; each user's speed is uniform in the
``doppler_hz`` range converted at the carrier (``v = f_d c / f_c``). A frame records its
largest user Doppler ``max_u |v_u| f_c / c`` (Hz) and the mean of its users' RMS delay spreads
(s, the scenario's large-scale parameter).

Sionna draws from its own generator: each batch reseeds it (``sionna.phy.config.seed``) with a
number drawn from the frame generator's, so a seed gives the same frames in any process.

**Covariances from samples** (:class:`SampleCovarianceLMMSE`, ``lmmse-sample``), as the
benchmark's LMMSE estimates them: the space, frequency and time covariances of the prior's
channels, each from ``frames`` frames of its own seed stream, and the LMMSE with their Kronecker
product ``R_s (x) R_f (x) R_t``. ``R_f`` and ``R_t`` are Toeplitz (a wide-sense stationary
uncorrelated-scattering channel), estimated as correlation functions averaged over every pair of
lags; ``R_s`` is the full sample matrix. With a TDL profile and fixed conditions the channel is
exactly Kronecker and the filter tends to the genie (a test holds it there).
"""
from __future__ import annotations

import math
from functools import cached_property

import torch

from wavefront.errors import ConfigError
from wavefront.sim.config import SYSTEM_LEVEL_PROFILES, SystemConfig, profile_label
from wavefront.sim.estimators import Estimator
from wavefront.sim.profiles import subcarrier_offsets_hz

SPEED_OF_LIGHT = 299_792_458.0  # m/s
_SAMPLE_SEED = 0x5A3C  # the covariance frames' seed: never a measured batch's (those derive from the sweep's seed)


def is_system_level(config: SystemConfig) -> bool:
    """Returns whether ``config``'s channel is a system-level scenario drawn through Sionna."""
    return config.channel.profile in SYSTEM_LEVEL_PROFILES


class SystemLevelChannel:
    """Sionna's UMi/UMa uplink to an R-element ULA for U users: ``draw(B, seed) -> (h, doppler_hz, delay_spread_s)``.

    ``h`` [B, R, U, F, T] complex64 (each user at unit mean power per frame), ``doppler_hz`` [B]
    float32 (the frame's largest user Doppler, Hz), ``delay_spread_s`` [B] float32 (its users'
    mean RMS delay spread, s). See the module docstring.
    """

    def __init__(self, config: SystemConfig, device: torch.device):
        from sionna.phy.channel.tr38901 import UMa, UMi, PanelArray

        if not (config.mimo.is_mimo and config.channel.profile in SYSTEM_LEVEL_PROFILES):
            raise ConfigError("channel.profile", config.channel.profile, "SystemLevelChannel needs a MIMO UMi/UMa config")
        o, ch = config.ofdm, config.channel
        self.config, self.device = config, device
        self.R, self.U = config.mimo.num_rx_antennas, config.mimo.num_users
        self.scenario = ch.profile.lower()
        fc = o.carrier_frequency_hz
        lo, hi = ch.doppler_hz if isinstance(ch.doppler_hz, tuple) else (ch.doppler_hz, ch.doppler_hz)
        self.speeds = (lo * SPEED_OF_LIGHT / fc, hi * SPEED_OF_LIGHT / fc)  # m/s
        arrays = dict(polarization="single", polarization_type="V", antenna_pattern="omni", carrier_frequency=fc,
                      device=str(device))
        ut = PanelArray(num_rows_per_panel=1, num_cols_per_panel=1, **arrays)
        bs = PanelArray(num_rows_per_panel=1, num_cols_per_panel=self.R, **arrays)  # spacing lambda / 2
        model = UMi if ch.profile == "UMi" else UMa
        self.model = model(carrier_frequency=fc, o2i_model="low", ut_array=ut, bs_array=bs, direction="uplink",
                           enable_pathloss=False, enable_shadow_fading=False, device=str(device))
        self.freqs = subcarrier_offsets_hz(o).to(device)
        self.sampling_hz = 1.0 / o.symbol_duration_s  # the CIR at every symbol start, as the TDL path's label
        self.fc = fc

    def draw(self, batch_size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        from sionna.phy import config as sionna_config
        from sionna.phy.channel import cir_to_ofdm_channel, gen_single_sector_topology

        B, (F, T) = batch_size, self.config.ofdm.grid_shape
        sionna_config.seed = int(seed)
        topology = gen_single_sector_topology(B, self.U, self.scenario, min_ut_velocity=self.speeds[0],
                                              max_ut_velocity=self.speeds[1], device=str(self.device))
        self.model.reset_topology()
        self.model.set_topology(*topology)
        a, tau = self.model(B, T, self.sampling_hz)
        h = cir_to_ofdm_channel(self.freqs, a, tau, normalize=False)  # [B, 1, R, U, 1, T, F]
        h = h.reshape(B, self.R, self.U, T, F).transpose(3, 4).to(torch.complex64)
        h = h / h.abs().square().mean(dim=(1, 3, 4), keepdim=True).sqrt()  # each user at unit mean power
        v = topology[4].double().norm(dim=-1)  # [B, U] m/s
        doppler = (v.max(dim=1).values * self.fc / SPEED_OF_LIGHT).float()
        ds = self._delay_spreads(B)
        return h.contiguous(), doppler.to(self.device), ds.to(self.device)

    def _delay_spreads(self, B: int) -> torch.Tensor:
        """Returns [B] float32: the mean over users of the scenario's RMS delay spread (s), NaN where Sionna keeps none."""
        lsp = getattr(self.model, "_lsp", None)
        ds = getattr(lsp, "ds", None)
        if ds is None:
            return torch.full((B,), math.nan)
        return ds.reshape(B, -1).double().mean(1).float()


def _toeplitz(r: torch.Tensor) -> torch.Tensor:
    """Returns the Hermitian Toeplitz matrix [n, n] with first column ``r`` [n]: ``M[i, j] = r[i - j]``, ``conj`` above."""
    n = r.shape[0]
    i = torch.arange(n)
    d = i[:, None] - i[None, :]
    return torch.where(d >= 0, r[d.abs()], r[d.abs()].conj())


def _lag_correlation(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Returns (``sum_v sum_i x_v[i + k] conj(x_v[i])`` [n] complex128 for lags k = 0..n-1, vectors v) of ``x`` [..., n]."""
    n = x.shape[-1]
    v = x.reshape(-1, n).to(torch.complex128)
    X = torch.fft.fft(v, n=2 * n)
    return torch.fft.ifft(X.abs().square(), dim=-1)[:, :n].sum(0), v.shape[0]


class SampleCovariances:
    """The prior's space, frequency and time covariances from samples: ``R_s`` [R, R], ``R_f`` [F, F], ``R_t`` [T, T] complex128.

    Each has unit mean diagonal and ``R_s (x) R_f (x) R_t`` the channel's power; built from ``frames``
    frames of ``config`` drawn with their own seed, in batches of ``batch`` (about 4.5 MB a frame at
    mimo-chest), so the memory is one batch's channels.
    """

    def __init__(self, config: SystemConfig, frames: int = 256, batch: int = 16, seed: int = _SAMPLE_SEED):
        from wavefront.sim.mimo import MimoFrameGenerator  # it builds on this module

        R = config.mimo.num_rx_antennas
        F, T = config.ofdm.grid_shape
        gen = MimoFrameGenerator(config)
        s_sum = torch.zeros(R, R, dtype=torch.complex128)
        f_sum, t_sum = torch.zeros(F, dtype=torch.complex128), torch.zeros(T, dtype=torch.complex128)
        f_n, t_n, s_n = 0, 0, 0
        for i, start in enumerate(range(0, frames, batch)):
            h = gen.generate(min(batch, frames - start), seed=seed + i, with_data=False).h.cpu()  # [b, R, U, F, T]
            x = h.permute(0, 2, 3, 4, 1).reshape(-1, R).to(torch.complex128)  # space vectors
            s_sum += x.T @ x.conj()
            s_n += x.shape[0]
            c, n = _lag_correlation(h.transpose(3, 4))  # along F
            f_sum, f_n = f_sum + c, f_n + n
            c, n = _lag_correlation(h)  # along T
            t_sum, t_n = t_sum + c, t_n + n
        self.frames = frames
        self.R_s = s_sum / s_n
        self.R_s = self.R_s / self.R_s.diagonal().real.mean()
        # unbiased: lag k averages (n - k) products per vector
        r_f = f_sum / (f_n * (F - torch.arange(F)))
        r_t = t_sum / (t_n * (T - torch.arange(T)))
        self.R_f, self.R_t = _toeplitz(r_f / r_f[0].real), _toeplitz(r_t / r_t[0].real)


class SampleCovarianceLMMSE(Estimator):
    """``lmmse-sample``: the joint LMMSE over space, frequency and time with covariances estimated from samples.

    ``estimate(pilots [B, R, U, P_f', P_t] c64, meta) -> [B, R, U, F, T] c64``, reading the noise
    variance (``meta["noise_var"]``). Per user, with ``R_s = V diag(lambda) V^H`` and the pilots'
    ``R_p = R_f[p, p] (x) R_t[p, p] = Q diag(mu) Q^H``, the filter is that of the genie over space
    (:class:`~wavefront.sim.mimo.MimoGenieLMMSE`) with these matrices in place of the true ones:
    ``V^H p``, a 2-D LMMSE per eigen-index at noise ``sigma^2 / lambda_k``, back by ``V``.
    The covariances (:class:`SampleCovariances`) are drawn at the first call from the config it
    was built with (the prior), ``frames`` frames with their own seed.
    """

    name = "lmmse-sample"
    needs = "noise"
    mimo = True

    def __init__(self, config: SystemConfig, frames: int = 256):
        from wavefront.sim.mimo import user_configs

        if config.mimo.pilots != "kronecker":
            raise ConfigError("estimators", self.name, f"needs the Kronecker pattern, not {config.mimo.pilots}")
        self.config, self.frames = config, frames
        self.users = user_configs(config)
        ch = config.channel
        span = lambda v, s=1.0: f"{v[0] * s:g}-{v[1] * s:g}" if isinstance(v, tuple) else f"{v * s:g}"  # noqa: E731
        prior = (f"{ch.profile}, Doppler {span(ch.doppler_hz)} Hz" if is_system_level(config) else
                 f"{profile_label(ch.profile)}, delay spread {span(ch.delay_spread_s, 1e9)} ns, Doppler "
                 f"{span(ch.doppler_hz)} Hz")
        self.given = (f"space, frequency and time covariances estimated from {frames} frames of the prior ({prior}; "
                      "their own seed), Kronecker")

    @cached_property
    def _filters(self):
        cov = SampleCovariances(self.config, self.frames)
        lam, V = torch.linalg.eigh(cov.R_s)
        t = torch.tensor(self.config.ofdm.pilot_symbol_indices)
        out = []
        for user in self.users:
            f = torch.tensor(user.ofdm.pilot_subcarriers)
            A, C = cov.R_f[:, f], cov.R_t[:, t]  # [F, P_f'], [T, P_t]
            mu, Q = torch.linalg.eigh(torch.kron(cov.R_f[f][:, f], cov.R_t[t][:, t]))
            out.append((A, C, mu.clamp_min(0.0), Q))
        return lam.clamp_min(1e-12), V, out

    def estimate(self, pilots: torch.Tensor, meta: dict[str, torch.Tensor]) -> torch.Tensor:
        from wavefront.sim.mimo import eigen_filter  # it builds on this module

        B, R, U = pilots.shape[:3]
        dev, c128 = pilots.device, torch.complex128
        F, T = self.config.ofdm.grid_shape
        lam, V, per_user = self._filters
        lam, V = lam.to(dev), V.to(dev)
        nv = meta["noise_var"].double().to(dev) if "noise_var" in meta else \
            self.config.noise_variance(meta["snr_db"].double()).to(dev)
        z = torch.einsum("rk,bru...->bku...", V.conj(), pilots.to(c128))  # V^H p
        s = (nv[:, None] / lam).reshape(-1, 1)  # [B R, 1]: sigma^2 / lambda_k
        out = torch.empty(B, R, U, F, T, dtype=c128, device=dev)
        for u, (A, C, mu, Q) in enumerate(per_user):
            out[:, :, u] = eigen_filter(z[:, :, u], s, [A], [C], mu, Q)  # the genie's filter with these matrices
        return torch.einsum("rk,bku...->bru...", V, out).to(torch.complex64)
