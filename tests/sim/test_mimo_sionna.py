"""Sionna's OFDM channel estimators on wavefront's MIMO frames: the same LS, and a genie at least as good as theirs."""
import torch

from wavefront.sim.config import SystemConfig
from wavefront.sim.mimo import MimoFrameGenerator, mimo_estimators
from wavefront.sim.sionna_ref import sionna_estimates

CFG = SystemConfig.from_dict({"ofdm": {"num_subcarriers": 48, "pilot_subcarrier_spacing": 2},
                              "channel": {"delay_spread_s": 100e-9, "doppler_hz": 200.0, "snr_db": 10.0},
                              "mimo": {"num_rx_antennas": 4, "num_users": 2, "rx_correlation": 0.7}})


def _nmse_db(h_hat, h):
    return float(10 * torch.log10((h_hat - h).abs().square().sum() / h.abs().square().sum()))


def test_ls_equals_sionnas_and_the_genie_beats_sionnas_lmmse_on_the_same_frames():
    fr = MimoFrameGenerator(CFG).generate(48, seed=1)
    ours = {e.name: e.estimate(fr.pilots_ls, fr.meta) for e in mimo_estimators(["ls-linear", "lmmse-genie"], CFG)}
    theirs = sionna_estimates(CFG, fr)
    # the same pilots, the same linear interpolation: equal to float32 rounding (|h| ~ 1)
    torch.testing.assert_close(ours["ls-linear"], theirs["ls"], rtol=0, atol=5e-6)
    genie = _nmse_db(ours["lmmse-genie"], fr.h)
    # Sionna's passes are separable (t, then f, then s smoothing); the joint genie is the MMSE: never worse.
    # Measured: genie -19.8 dB, Sionna t-f -17.7 dB, t-f-s -17.7 dB, LS -11.6 dB.
    assert genie <= _nmse_db(theirs["lmmse-tfs"], fr.h) + 0.05
    assert genie <= _nmse_db(theirs["lmmse-tf"], fr.h) + 0.05
    assert _nmse_db(theirs["lmmse-tfs"], fr.h) < _nmse_db(theirs["ls"], fr.h)


def test_sionna_rows_read_only_the_pilots():
    """The estimator form (grid rebuilt from the LS pilots) equals Sionna's LS on the real received grid."""
    from wavefront.sim.sionna_ref import SionnaEstimator

    fr = MimoFrameGenerator(CFG).generate(8, seed=2)
    real = sionna_estimates(CFG, fr, kinds=("ls",))["ls"]
    rebuilt = SionnaEstimator("sionna-ls", CFG).estimate(fr.pilots_ls, {})
    torch.testing.assert_close(rebuilt, real, rtol=0, atol=2e-6)


def _small(snr_db=0.0, rho=0.95, **channel):
    return SystemConfig.from_dict({"ofdm": {"num_subcarriers": 24, "num_symbols": 4, "pilot_subcarrier_spacing": 2,
                                            "pilot_symbols": [0, 3]},
                                   "channel": {"delay_spread_s": 100e-9, "doppler_hz": 200.0, "snr_db": snr_db, **channel},
                                   "mimo": {"num_rx_antennas": 4, "num_users": 2, "rx_correlation": rho}})


def test_sionnas_lmmse_is_best_at_the_true_noise_and_gains_from_the_spatial_covariance():
    from wavefront.sim.sionna_ref import SionnaEstimator

    cfg = _small()  # 0 dB, rho 0.95: smoothing across the 4 antennas pays
    fr = MimoFrameGenerator(cfg).generate(32, seed=1, with_data=False)
    tf, tfs = (SionnaEstimator(n, cfg) for n in ("sionna-lmmse-tf", "sionna-lmmse-tfs"))
    m = fr.meta
    at = lambda scale: _nmse_db(tf.estimate(fr.pilots_ls, {**m, "noise_var": m["noise_var"] * scale}), fr.h)  # noqa: E731
    # measured: -10.7 dB at the true noise, -9.2 dB told 1/30 of it, -2.8 dB told 30 times it; t-f-s -12.6 dB
    true = at(1.0)
    assert true < at(1 / 30) - 0.5 and true < at(30.0) - 0.5  # the MMSE weights need the noise they are told
    assert _nmse_db(tfs.estimate(fr.pilots_ls, m), fr.h) < true - 1.0  # R_rx reaches the t-f-s pass


def test_frames_of_several_conditions_are_each_filtered_with_their_own_covariances():
    from wavefront.sim.sionna_ref import SionnaEstimator

    cfg = _small(snr_db=[0.0, 20.0], delay_spread_s=[50e-9, 300e-9], doppler_hz=[50.0, 900.0])
    fr = MimoFrameGenerator(cfg).generate(3, seed=4, with_data=False)
    est = SionnaEstimator("sionna-lmmse-tf", cfg)
    together = est.estimate(fr.pilots_ls, fr.meta)
    alone = torch.cat([est.estimate(fr.pilots_ls[i:i + 1], {k: v[i:i + 1] for k, v in fr.meta.items()}) for i in range(3)])
    torch.testing.assert_close(together, alone, rtol=0, atol=1e-6)  # grouping by condition is exact, frame by frame


def test_a_profile_of_several_covariance_terms_is_refused_when_the_row_is_made():
    import pytest

    from wavefront.errors import ConfigError
    from wavefront.sim.sionna_ref import SionnaEstimator, sionna_covariances

    cfg = _small(profile="TDL-D")  # a LOS path plus scattering: two Kronecker terms
    with pytest.raises(ConfigError, match="channel.profile='D'.*one-term profile"):
        SionnaEstimator("sionna-lmmse-tf", cfg)  # at construction, before any frame is read
    with pytest.raises(ConfigError, match="separable statistics"):
        sionna_covariances(cfg, 100e-9, 100.0)
    assert SionnaEstimator("sionna-ls", cfg).needs == "none"  # LS reads no covariance: any profile
