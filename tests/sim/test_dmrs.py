"""NR DM-RS ports in the multi-user uplink: the port table against Sionna's, the genie and its bound against a
dense LMMSE over the stacked users of a CDM group and all antennas, despreading, and the sweep through the CLI."""
import json

import pytest
import torch
from mimo_helpers import genie_on_bound_ls_above

from wavefront.cli import main
from wavefront.errors import ConfigError
from wavefront.sim.config import SystemConfig
from wavefront.sim.dmrs import dmrs_layout, port_table
from wavefront.sim.mimo import MimoFrameGenerator, MimoGenieLMMSE, mimo_estimators, mimo_genie_mse, pilots_per_user
from wavefront.sim.profiles import channel_profile
from wavefront.sim.statistics import covariance_terms

KINDS = ["dmrs-type1", "dmrs-type2", "dmrs-type1-double", "dmrs-type2-double"]
DS, FD = 300e-9, 400.0


def small(kind="dmrs-type1", R=2, U=4, rho=0.6, snr_db=10.0, profile="A") -> SystemConfig:
    """24 subcarriers x 14 symbols, DM-RS on symbols 2 and 11 (2-3 and 11-12 when double): a dense reference is cheap."""
    return SystemConfig.from_dict({"ofdm": {"num_subcarriers": 24, "num_symbols": 14},
                                   "channel": {"delay_spread_s": DS, "doppler_hz": FD, "snr_db": snr_db, "profile": profile},
                                   "mimo": {"num_rx_antennas": R, "num_users": U, "rx_correlation": rho, "pilots": kind}})


@pytest.mark.parametrize("kind", KINDS)
def test_port_table_is_sionnas_pusch_dmrs_config(kind):
    from sionna.phy.nr import PUSCHDMRSConfig

    double = kind.endswith("-double")
    cfg = PUSCHDMRSConfig(config_type=1 if "type1" in kind else 2, length=2 if double else 1)
    cfg.num_cdm_groups_without_data = 2 if "type1" in kind else 3
    table = port_table(kind)
    cfg.dmrs_port_set = list(range(len(table)))
    assert [g for g, _, _ in table] == list(cfg.cdm_groups)
    assert [list(wf) for _, wf, _ in table] == cfg.w_f.T.tolist()
    assert [list(wt) for _, _, wt in table] == cfg.w_t.T.tolist()
    # and the subcarriers: k = 4n + 2k' + Delta (type 1) or 6n + k' + Delta (type 2), Delta as Sionna's
    lay = dmrs_layout(small(kind, U=len(table)))
    for u, (g, _, _) in enumerate(table):
        step, spacing = (2, 4) if "type1" in kind else (1, 6)
        want = sorted(spacing * n + step * kp + cfg.deltas[u] for n in range(24 // spacing) for kp in (0, 1))
        assert list(lay.group_subcarriers[g]) == want


def _dense(cfg: SystemConfig, u: int, nv: float, users=None):
    """Returns (MSE per element, W [R F T, R N]) of the LMMSE of user u from its group's raw observations
    ``sum_v (I (x) W_v) h_v + n`` over all antennas, with the dense ``R_rx (x) R_ft``, float64.

    ``users``: the users whose ports overlap u's (default: every user of u's group)."""
    lay = dmrs_layout(cfg)
    o = cfg.ofdm
    F, T = o.grid_shape
    terms = covariance_terms(o, channel_profile(cfg.channel.profile), DS, FD)
    r_ft = sum(torch.kron(a[0], b[0]) for a, b in terms)
    R = cfg.mimo.num_rx_antennas
    full = torch.kron(cfg.mimo.rx_covariance().to(torch.complex128), r_ft)  # [R F T, R F T]
    g = lay.user_group[u]
    pos = torch.tensor([f * T + t for f in lay.group_subcarriers[g] for t in lay.symbols])
    cols = torch.cat([r * F * T + pos for r in range(R)])
    users = [v for v, gv in enumerate(lay.user_group) if gv == g] if users is None else users
    cov = nv * torch.eye(len(cols), dtype=torch.complex128)
    for v in users:
        w = lay.cover[v].reshape(-1).repeat(R).to(torch.complex128)
        cov = cov + w[:, None] * full[cols][:, cols] * w[None, :]
    w_u = lay.cover[u].reshape(-1).repeat(R).to(torch.complex128)
    r_hz = full[:, cols] * w_u[None, :]
    W = r_hz @ torch.linalg.inv(cov)
    mse = (torch.trace(full).real - torch.trace(W @ r_hz.mH).real) / full.shape[0]
    return float(mse), W


@pytest.mark.parametrize("kind,U", [("dmrs-type1", 4), ("dmrs-type2", 5), ("dmrs-type1-double", 7), ("dmrs-type2-double", 12)])
def test_genie_equals_the_dense_lmmse_over_the_groups_users_and_antennas(kind, U):
    cfg = small(kind, R=2, U=U, rho=0.8)
    fr = MimoFrameGenerator(cfg).generate(2, seed=5)
    est = MimoGenieLMMSE(cfg).estimate(fr.pilots_ls, fr.meta)
    F, T = cfg.ofdm.grid_shape
    for u in range(U):
        _, W = _dense(cfg, u, float(fr.noise_var[0]))
        z = fr.pilots_dmrs[:, :, u].reshape(2, -1).to(torch.complex128)  # [B, R N] (antenna, then RE)
        want = (z @ W.T).reshape(2, 2, F, T)
        torch.testing.assert_close(est[:, :, u].to(torch.complex128), want, rtol=0, atol=1e-5)


@pytest.mark.parametrize("kind,snr_db", [("dmrs-type1", 0.0), ("dmrs-type2", 10.0), ("dmrs-type1-double", 20.0),
                                         ("dmrs-type2-double", 5.0)])
def test_bound_equals_the_dense_trace_formula(kind, snr_db):
    U = {"dmrs-type1": 4, "dmrs-type2": 6, "dmrs-type1-double": 6, "dmrs-type2-double": 9}[kind]
    cfg = small(kind, R=3, U=U, rho=0.7)
    got = mimo_genie_mse(cfg, snr_db, DS, FD, per_user=True)
    for u in range(U):
        want, _ = _dense(cfg, u, 10 ** (-snr_db / 10))
        assert abs(float(got[u]) - want) < 1e-9 * max(want, 1e-3), (u, float(got[u]), want)


def test_a_user_alone_in_its_cdm_group_gets_the_independent_estimate():
    """Users 0 and 1 share group 0, user 2 has group 1 to itself: its genie is the single-user LMMSE on
    ``conj(r) y`` (no overlap, the Kronecker-style independent problem), and its bound that LMMSE's MSE."""
    cfg = small("dmrs-type1", R=2, U=3, rho=0.5)
    fr = MimoFrameGenerator(cfg).generate(2, seed=9)
    est = MimoGenieLMMSE(cfg).estimate(fr.pilots_ls, fr.meta)
    nv = float(fr.noise_var[0])
    mse, W = _dense(cfg, 2, nv, users=[2])
    z = fr.pilots_dmrs[:, :, 2].reshape(2, -1).to(torch.complex128)
    torch.testing.assert_close(est[:, :, 2].to(torch.complex128), (z @ W.T).reshape(est[:, :, 2].shape), rtol=0, atol=1e-5)
    assert abs(float(mimo_genie_mse(cfg, 10.0, DS, FD, per_user=True)[2]) - mse) < 1e-9
    # two users sharing a group do worse than one alone there (same statistics, same group size)
    both = mimo_genie_mse(cfg, 10.0, DS, FD, per_user=True)
    assert float(both[0]) > float(both[2])


@pytest.mark.parametrize("kind", ["dmrs-type1", "dmrs-type2-double"])
def test_noiseless_despread_ls_is_the_users_channel_averaged_over_the_cdm_pair(kind):
    """User 2 alone in group 1 (no other port there): at 100 dB its despread LS is the mean of its channel over each pair."""
    cfg = small(kind, R=2, U=3, snr_db=100.0)
    lay = dmrs_layout(cfg)
    fr = MimoFrameGenerator(cfg).generate(3, seed=1)
    sf = torch.tensor(lay.group_subcarriers[lay.user_group[2]])
    st = torch.tensor(lay.symbols)
    h = fr.h[:, :, 2][:, :, sf[:, None], st[None, :]]  # [B, R, N_f, N_t]
    want = h.reshape(3, 2, len(sf) // 2, 2, len(st) // lay.pair_t, lay.pair_t).mean((-3, -1))
    torch.testing.assert_close(fr.pilots_ls[:, :, 2], want, rtol=0, atol=1e-4)
    # the pair's first RE is where the LS sits: the SISO interpolators get a Kronecker comb
    assert pilots_per_user(cfg)[2]["positions"][0] == [int(sf[0]), int(st[0])]


def test_pilots_per_user_lists_the_groups_res_and_the_cover_products():
    per = pilots_per_user(small("dmrs-type1-double", U=8))
    assert len(per) == 8 and all(len(p["positions"]) == 12 * 4 == len(p["cover"]) for p in per)
    assert per[0]["positions"][:4] == [[0, 2], [0, 3], [0, 11], [0, 12]]
    assert per[5]["cover"][:8] == [1, -1, 1, -1, -1, 1, -1, 1]  # port 5: w_f [+1, -1], w_t [+1, -1]
    assert per[2]["positions"][0] == [1, 2]  # group 1 starts at subcarrier 1


def test_no_data_on_dmrs_symbols():
    cfg = small("dmrs-type2-double", U=2)
    fr = MimoFrameGenerator(cfg).generate(1, seed=2)
    assert fr.codewords.shape[-1] == 24 * (14 - 4) * 2  # QPSK on the 10 other symbols, every subcarrier


def test_more_users_than_ports_is_refused():
    with pytest.raises(ConfigError, match="mimo.num_users"):
        small("dmrs-type2", U=7)
    with pytest.raises(ConfigError, match="Kronecker"):
        mimo_estimators(["sionna-ls"], small())


def test_dmrs_sweep_genie_sits_on_the_bound_through_the_cli(tmp_path, capsys):
    out = tmp_path / "dmrs"
    rc = main(["sweep", "--rx-antennas", "2", "--users", "4", "--mimo-pilots", "dmrs-type1", "--rx-correlation", "0.5",
               "--estimators", "ls-linear,lmmse-genie", "--snr-db", "0:20:10", "--doppler-hz", "300",
               "--frames", "200", "--batch-size", "100", "--out", str(out), "--no-progress"])
    assert rc == 0
    res = json.loads((out / "results.json").read_text())
    per = res["spec"]["pilots_per_user"]
    assert len(per) == 4 and per[1]["cover"][:4] == [1, 1, -1, -1] and "DM-RS" in res["spec"]["mimo"]["pilots"]
    genie_on_bound_ls_above(res, 3)
    rc = main(["sweep", "--rx-antennas", "2", "--users", "5", "--mimo-pilots", "dmrs-type1", "--estimators", "ls-linear",
               "--snr-db", "10", "--frames", "10", "--out", str(tmp_path / "o"), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and "mimo.num_users" in err[-1]


@pytest.mark.parametrize("kind", ["dmrs-type1", "dmrs-type2-double"])
def test_noiseless_group_observations_are_the_covered_sum_of_the_groups_channels(kind):
    """``conj(r_g) y = sum_{v in g} w_v h_v`` on the group's REs: the users of a group overlap, each under its cover."""
    cfg = small(kind, R=2, U=4, snr_db=100.0)
    lay = dmrs_layout(cfg)
    fr = MimoFrameGenerator(cfg).generate(2, seed=3)
    st = torch.tensor(lay.symbols)
    for u, g in enumerate(lay.user_group):
        sf = torch.tensor(lay.group_subcarriers[g])
        want = sum(fr.h[:, :, v][:, :, sf[:, None], st[None, :]] * lay.cover[v].float()
                   for v, gv in enumerate(lay.user_group) if gv == g)
        torch.testing.assert_close(fr.pilots_dmrs[:, :, u], want, rtol=0, atol=1e-4)


def test_dmrs_with_one_antenna_and_one_user_is_refused_rather_than_dropped():
    with pytest.raises(ConfigError, match="mimo.pilots"):
        small(R=1, U=1)


@pytest.mark.parametrize("kind,pair", [("dmrs-type1", 2), ("dmrs-type1-double", 4)])
def test_per_user_estimators_read_the_despread_noise_level(kind, pair):
    """The despread LS averages a CDM pair: a SISO estimator that reads the noise is given sigma^2 / 2 (/ 4), and the
    detector is told the same error variance."""
    from wavefront.sim.estimators import get_classical
    from wavefront.sim.mimo import PerUser, error_variance, user_configs

    cfg = small(kind)
    fr = MimoFrameGenerator(cfg).generate(3, seed=2)
    est = PerUser("lmmse-robust", cfg)
    got = est.estimate(fr.pilots_ls, {"noise_var": fr.noise_var})
    B, R = fr.pilots_ls.shape[:2]
    for u, c in enumerate(user_configs(cfg)):
        siso = get_classical("lmmse-robust", c)
        want = siso.estimate(fr.pilots_ls[:, :, u].reshape(B * R, *fr.pilots_ls.shape[3:]),
                             {"noise_var": fr.noise_var.repeat_interleave(R) / pair})
        torch.testing.assert_close(got[:, :, u], want.view(B, R, *want.shape[1:]), rtol=0, atol=1e-6)
    torch.testing.assert_close(error_variance(est, fr.noise_var, None), fr.noise_var.double() / pair)


@pytest.mark.parametrize("kind,U", [("dmrs-type1", 3), ("dmrs-type2-double", 5)])
def test_genie_and_bound_equal_the_dense_lmmse_on_a_los_profile_with_two_covariance_terms(kind, U):
    """Profile D (LoS) has two Kronecker terms (NLoS and the specular tap, each with its own Doppler spectrum): the group
    covariance, the genie's filter and the bound must sum both. Profile A, one term, cannot tell a sum from its first term."""
    cfg = small(kind, R=2, U=U, rho=0.5, profile="D")
    assert len(covariance_terms(cfg.ofdm, channel_profile("D"), DS, FD)) == 2
    fr = MimoFrameGenerator(cfg).generate(2, seed=6)
    est = MimoGenieLMMSE(cfg).estimate(fr.pilots_ls, fr.meta)
    F, T = cfg.ofdm.grid_shape
    got = mimo_genie_mse(cfg, 10.0, DS, FD, per_user=True)
    for u in range(U):
        _, W = _dense(cfg, u, float(fr.noise_var[0]))
        z = fr.pilots_dmrs[:, :, u].reshape(2, -1).to(torch.complex128)
        torch.testing.assert_close(est[:, :, u].to(torch.complex128), (z @ W.T).reshape(2, 2, F, T), rtol=0, atol=1e-5)
        want, _ = _dense(cfg, u, 10 ** (-10.0 / 10))
        assert abs(float(got[u]) - want) < 1e-9 * want, (u, float(got[u]), want)


@pytest.mark.parametrize("kind", KINDS)
def test_each_users_siso_layout_is_the_first_re_of_its_groups_cdm_pairs(kind):
    """The per-user (SISO) estimators interpolate the despread LS from where it sits: the lowest subcarrier of each
    CDM pair of the user's own group, on the first symbol of each DM-RS symbol pair."""
    from wavefront.sim.mimo import user_configs

    U = {"dmrs-type1": 4, "dmrs-type2": 6, "dmrs-type1-double": 8, "dmrs-type2-double": 12}[kind]
    cfg = small(kind, U=U)
    lay = dmrs_layout(cfg)
    start = [2, 11]
    for u, c in enumerate(user_configs(cfg)):
        subs = lay.group_subcarriers[port_table(kind)[u][0]]
        want = tuple((f, t) for f in subs[::2] for t in start)
        assert c.ofdm.pilot_layout.positions == want, u
        assert c.ofdm.pilot_layout.pilot_shape == (len(subs) // 2, 2)  # the despread LS's [P_f', P_t]


@pytest.mark.parametrize("kind,pair", [("dmrs-type1", 2), ("dmrs-type1-double", 4)])
def test_per_user_estimators_given_only_the_snr_read_it_raised_by_the_despreading_gain(kind, pair):
    """Given the SNR alone (no noise variance in meta), a per-user estimator must read it 10 log10(pair) dB higher, the
    despread LS averaging pair REs: its estimate is the one it gives when told sigma^2 / pair (held to the SISO
    estimator by the test above)."""
    from wavefront.sim.mimo import PerUser

    cfg = small(kind)
    fr = MimoFrameGenerator(cfg).generate(3, seed=2)
    est = PerUser("lmmse-robust", cfg)
    by_snr = est.estimate(fr.pilots_ls, {"snr_db": fr.snr_db})
    by_nv = est.estimate(fr.pilots_ls, {"noise_var": fr.noise_var})
    torch.testing.assert_close(by_snr, by_nv, rtol=0, atol=1e-4)
    # and the SNR matters here: told the SNR without the gain, the estimate moves by far more than that tolerance
    plain = PerUser("lmmse-robust", small(kind)).per_user[0]
    moved = plain.estimate(fr.pilots_ls[:, :, 0].reshape(-1, *fr.pilots_ls.shape[3:]), {"noise_var": fr.noise_var.repeat_interleave(2)})
    assert float((moved.view(3, 2, *moved.shape[1:]) - by_nv[:, :, 0]).abs().max()) > 1e-2
    # what it states to the detector is its model's MSE at the despread noise sigma^2 / pair, too
    _, ev = est.estimate_with_error_variance(fr.pilots_ls, {"noise_var": fr.noise_var})
    want = torch.stack([siso.stated_mse({"noise_var": fr.noise_var / pair}, 3) for siso in est.per_user]).mean(0)
    torch.testing.assert_close(ev.double(), want.double(), rtol=1e-6, atol=0)
    assert float((want - torch.stack([s.stated_mse({"noise_var": fr.noise_var}, 3) for s in est.per_user]).mean(0)).abs().min()) > 1e-4
