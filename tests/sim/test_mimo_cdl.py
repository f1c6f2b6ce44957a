"""``mimo.spatial: rays``: CDL rays on the base station's ULA. The clusters' spatial covariance against Sionna's CDL
with a PanelArray, the frames' covariance against the closed form by Monte Carlo, the array genie's bound against
a dense evaluation, and the command line."""
import json
import math

import numpy as np
import pytest
import torch
from mimo_helpers import genie_on_bound_ls_above

from wavefront.cli import main
from wavefront.errors import ConfigError
from wavefront.sim.config import SystemConfig
from wavefront.sim.mimo import MimoFrameGenerator, mimo_estimators, mimo_genie_mse, user_configs
from wavefront.sim.mimo_cdl import bs_rays, cluster_spatial_covariances, user_covariance_terms
from wavefront.sim.profiles import channel_profile, subcarrier_offsets_hz, symbol_times_s
from wavefront.sim.statistics import cdl_time_correlation

# 12 x 4 grid, pilots on every 2nd subcarrier of symbols 0 and 3: 6 x 2, dealt to 2 users (3 x 2 each)
TINY = {"num_subcarriers": 12, "num_symbols": 4, "pilot_subcarrier_spacing": 2, "pilot_symbols": [0, 3]}


def rays(R=3, U=2, profile="CDL-C", ofdm=TINY, spacing=0.5, **channel) -> SystemConfig:
    ch = {"profile": profile, "delay_spread_s": 300e-9, "doppler_hz": 400.0, "snr_db": 10.0, **channel}
    return SystemConfig.from_dict({"ofdm": ofdm, "channel": ch, "mimo": {
        "num_rx_antennas": R, "num_users": U, "spatial": "rays", "antenna_spacing_wavelengths": spacing}})


def _z(samples: torch.Tensor, want: complex) -> tuple[float, float]:
    """z-scores (real, imaginary) of the mean of iid complex ``samples`` [N] against ``want``."""
    n = samples.numel()
    out = []
    for part, w in ((samples.real, want.real), (samples.imag, want.imag)):
        se = float(part.std()) / math.sqrt(n)
        out.append((float(part.mean()) - w) / max(se, 1e-12))
    return out[0], out[1]


def test_cluster_spatial_covariance_matches_sionnas_cdl_with_a_ula():
    """Each cluster's S_c against Sionna's CDL-C uplink on a 4-element PanelArray (1 row, omni, V): the statistic
    ``x_r x_s^* - S_c[r, s] mean_q |x_q|^2`` has mean 0 exactly when S_c is Sionna's (every ray reaches every element
    at unit modulus), whatever Sionna's cluster powers; 1500 draws, |z| < 4.5 over 24 clusters x 6 pairs x 2 parts
    (288 z-scores: a false alarm somewhere has probability below 0.2 %)."""
    from sionna.phy.channel.tr38901 import CDL, Antenna, PanelArray

    torch.manual_seed(3)  # Sionna draws from torch's global generator
    fc, R = 3.5e9, 4
    bs = PanelArray(num_rows_per_panel=1, num_cols_per_panel=R, polarization="single", polarization_type="V",
                    antenna_pattern="omni", carrier_frequency=fc, device="cpu", precision="double")
    ut = Antenna("single", "V", "omni", carrier_frequency=fc, device="cpu", precision="double")
    cdl = CDL("C", 300e-9, fc, ut_array=ut, bs_array=bs, direction="uplink", device="cpu", precision="double")
    a, tau = cdl(1500, 1, 1.0)
    x = a[:, 0, :, 0, 0, :, 0]  # [N, R, L], Sionna's paths sorted by delay
    S, s_los = cluster_spatial_covariances("CDL-C", R, 0.5)
    assert s_los is None and S.shape == (x.shape[2], R, R)
    ours = torch.as_tensor(channel_profile("CDL-C").norm_delays) * 300e-9
    cluster = (tau[0, 0, 0, :, None] - ours[None, :]).abs().argmin(1)  # Sionna's path j is our cluster[j]
    assert sorted(cluster.tolist()) == list(range(len(ours)))
    zs = []
    for j, c in enumerate(cluster.tolist()):
        xc = x[:, :, j]
        power = xc.abs().square().mean(1)  # [N]
        for r in range(R):
            for s in range(r + 1, R):
                zs += _z(xc[:, r] * xc[:, s].conj() - S[c, r, s] * power, 0j)
    assert max(abs(z) for z in zs) < 4.5, max(zs, key=abs)
    # and the clusters are far from one another and from identity (the test has power to tell them apart)
    assert float((S[0] - S[1]).abs().max()) > 0.5 and float(S[5, 0, 1].abs()) > 0.9


@pytest.mark.parametrize("channel", [{}, {"doppler_hz": [0.0, 1000.0], "delay_spread_s": [50e-9, 300e-9]}])
def test_one_antenna_rays_are_the_siso_cdl_channel(channel):
    """With one antenna the steering phase is 1: the rays' h equals the Kronecker path's from the same seed (both
    draw the users' CDL rays first), within float32 round-off of the two evaluations (|h| ~ 1, 1e-5 ~ 100 ulp).
    With per-frame conditions each frame's users take that frame's Doppler and delay spread (frame-major, as the
    Kronecker path deals them): user-major Dopplers or one delay spread for the batch fail this."""
    ray = MimoFrameGenerator(rays(R=1, U=2, **channel)).generate(8, seed=11)
    kron = rays(R=1, U=2, **channel).updated(mimo={"spatial": "kronecker"})
    ref = MimoFrameGenerator(kron).generate(8, seed=11)
    assert torch.equal(ray.doppler_hz, ref.doppler_hz) and torch.equal(ray.delay_spread_s, ref.delay_spread_s)
    if channel:
        assert float(ray.doppler_hz.max() - ray.doppler_hz.min()) > 300  # conditions that differ between frames
    torch.testing.assert_close(ray.h, ref.h, rtol=0, atol=1e-5)


@pytest.mark.parametrize("profile,spacing", [("CDL-C", 0.5), ("CDL-D", 0.5), ("CDL-B", 2.0)])
def test_frames_covariance_matches_the_cluster_sum(profile, spacing):
    """Monte Carlo over 3000 frames (R = 4, one user): spatial entries at one resource element and space-time entries
    across subcarriers and symbols against ``sum_k S_k F_k T_k`` (CDL-D: with the LoS rank-one term). Frames are iid,
    so each entry's SE is its sample SD / sqrt(N); |z| < 4.5 over 20 z-scores (false alarm below 0.02 %). The wide
    spacing (2 wavelengths) makes S_c depend on the pairing of each ray's BS azimuth and zenith: it sees the random
    coupling (one pair per ray in table order instead moves S_c by up to 0.4 at CDL-B)."""
    cfg = rays(R=4, U=1, profile=profile, spacing=spacing)
    fr = MimoFrameGenerator(cfg).generate(3000, seed=7, with_data=False)
    h = fr.h[:, :, 0].to(torch.complex128)  # [N, R, F, T]
    terms = user_covariance_terms(cfg, 0, 300e-9, 400.0)
    # the full grid's frequency and time terms: user 0's A_k / C_k are over its pilots; use the statistics directly
    from wavefront.sim.statistics import covariance_terms

    full = covariance_terms(cfg.ofdm, channel_profile(profile), 300e-9, 400.0)
    S = [t[0] for t in terms]
    entries = [((0, 0, 0), (1, 0, 0)), ((0, 0, 0), (3, 0, 0)), ((1, 2, 1), (2, 2, 1)), ((0, 0, 0), (2, 5, 3)),
               ((3, 7, 2), (0, 1, 0)), ((2, 4, 0), (2, 9, 3)), ((1, 0, 0), (1, 0, 0)), ((0, 11, 3), (3, 0, 0)),
               ((2, 3, 1), (0, 3, 2)), ((3, 6, 0), (1, 6, 3))]
    zs = []
    for (r1, f1, t1), (r2, f2, t2) in entries:
        want = sum(complex(Sk[r1, r2] * Fk[0, f1, f2] * Tk[0, t1, t2]) for Sk, (Fk, Tk) in zip(S, full))
        zs += _z(h[:, r1, f1, t1] * h[:, r2, f2, t2].conj(), want)
    assert max(abs(z) for z in zs) < 4.5, zs
    # not a Kronecker model R_rx (x) R_ft: the antennas' correlation changes with the subcarrier lag (CDL-C; CDL-D's
    # LoS path, 13 dB above its clusters, leaves it nearly Kronecker)
    def entry(r, f):
        return sum(complex(Sk[0, r] * Fk[0, 0, f] * Tk[0, 0, 0]) for Sk, (Fk, Tk) in zip(S, full))
    if profile == "CDL-C":
        assert abs(entry(1, 0) / entry(0, 0) - entry(1, 6) / entry(0, 6)) > 0.05


def test_ray_directions_are_randomly_coupled_per_cluster():
    """Each ray slot's BS (azimuth, zenith) pair is uniform over the cluster's M^2 pairs (random coupling), so the mean
    over frames and ray slots of ``exp(j 2 pi D x)`` is S_c's entry at the element distance D (6 wavelengths here,
    where pairing matters: one pair per ray in table order moves it by up to 0.5). 400 draws x 20 rays per cluster,
    each term's SE from its sample SD (rays of one draw are a permutation: their sum has less variance than
    independent ones, so the iid SE is conservative); |z| < 4.5 over 23 x 2 z-scores."""
    from wavefront.sim.mimo_cdl import RaysChannel

    cfg = rays(R=4, U=1, profile="CDL-B", spacing=2.0)
    chan = RaysChannel(cfg, channel_profile("CDL-B"), torch.device("cpu"))
    x = chan.directions(400, torch.Generator().manual_seed(2)).double()  # [N, L, M]
    S, _ = cluster_spatial_covariances("CDL-B", 4, 2.0)
    zs = []
    for c in range(x.shape[1]):
        zs += _z(torch.exp(2j * math.pi * 6.0 * x[:, c].reshape(-1)), complex(S[c, 3, 0]))
    assert max(abs(z) for z in zs) < 4.5, max(zs, key=abs)


def _dense_covariance(cfg: SystemConfig, ds: float, fd: float) -> torch.Tensor:
    """The full (R F T)^2 covariance of one user, from the ray angles and the profile directly (not the module's
    separable terms): S_c by an explicit mean over the (azimuth, zenith) pairs, F_c from the delays, T_c from
    :func:`cdl_time_correlation`, the LoS term rank one."""
    m = cfg.mimo
    R, d = m.num_rx_antennas, m.antenna_spacing_wavelengths
    prof = channel_profile(cfg.channel.profile)
    br = bs_rays(cfg.channel.profile)
    pos = d * (np.arange(R) - (R - 1) / 2)
    f = subcarrier_offsets_hz(cfg.ofdm).numpy()
    t = symbol_times_s(cfg.ofdm).numpy()
    dt = t[:, None] - t[None, :]
    rho = cdl_time_correlation(prof, fd, torch.from_numpy(dt)).numpy()  # [T, T, L]
    total = 0
    for c in range(len(prof.norm_delays)):
        Sc = np.zeros((R, R), complex)
        for az in br.aod[c]:
            for ze in br.zod[c]:
                a = np.exp(2j * np.pi * pos * np.sin(ze) * np.sin(az))
                Sc += np.outer(a, a.conj())
        Sc /= br.aod.shape[1] ** 2
        Fc = prof.nlos_powers[c] * np.exp(-2j * np.pi * prof.norm_delays[c] * ds * (f[:, None] - f[None, :]))
        total = total + np.kron(Sc, np.kron(Fc, rho[:, :, c]))
    if prof.is_los:
        a = np.exp(2j * np.pi * pos * np.sin(br.los_zod) * np.sin(br.los_aod))
        Fl = prof.los_power * np.exp(-2j * np.pi * prof.norm_delays[0] * ds * (f[:, None] - f[None, :]))
        Tl = np.exp(2j * np.pi * prof.los_cos_aoa * fd * dt)
        total = total + np.kron(np.outer(a, a.conj()), np.kron(Fl, Tl))
    return torch.from_numpy(total)


def _dense_filter_and_mse(cfg: SystemConfig, user: int, ds: float, fd: float, nv: float):
    R = cfg.mimo.num_rx_antennas
    F, T = cfg.ofdm.grid_shape
    full = _dense_covariance(cfg, ds, fd)
    o = user_configs(cfg)[user].ofdm
    idx = torch.tensor([r * F * T + f * T + t for r in range(R) for f in o.pilot_subcarriers
                        for t in o.pilot_symbol_indices])
    r_hp, r_pp = full[:, idx], full[idx][:, idx]
    W = r_hp @ torch.linalg.inv(r_pp + nv * torch.eye(len(idx), dtype=full.dtype))
    mse = torch.trace(full - W @ r_hp.mH).real / (R * F * T)
    return float(mse), W


@pytest.mark.parametrize("profile,snr_db", [("CDL-C", 10.0), ("CDL-C", 30.0), ("CDL-D", 0.0), ("CDL-A", 20.0)])
def test_bound_equals_a_dense_evaluation(profile, snr_db):
    """tr(R_hh - R_hp R_pp^-1 R_ph) / (R F T) per user at R = 3, U = 2, 12 x 4, against the dense covariance built
    independently (:func:`_dense_covariance`); 1e-9 relative plus 1e-10 absolute: both are float64, the bound
    ``1 -`` a sum of order-one terms (its round-off ~1e-12 absolute, 7e-9 relative at 30 dB)."""
    cfg = rays(R=3, U=2, profile=profile)
    nv = 10 ** (-snr_db / 10)
    got = mimo_genie_mse(cfg, snr_db, 300e-9, 400.0, per_user=True)
    for u in range(2):
        want, _ = _dense_filter_and_mse(cfg, u, 300e-9, 400.0, nv)
        assert abs(float(got[u]) - want) < 1e-9 * want + 1e-10, (u, float(got[u]), want)


@pytest.mark.parametrize("snr_db", [0.0, 30.0])
def test_low_rank_factorisation_where_the_pilots_outnumber_the_clusters(snr_db):
    """CDL-D (13 clusters + LoS) with 24 x 2 pilots per user at 3 antennas: R_pp has rank at most 14 x 3 x 2 = 84 < 144
    = R P, so the genie keeps 84 directions and drops the rest; its bound and filter still equal the dense ones
    (tolerances as above)."""
    from wavefront.sim.mimo_cdl import _rays_user_eig

    cfg = rays(R=3, U=2, profile="CDL-D", ofdm={"num_subcarriers": 48, "num_symbols": 4, "pilot_subcarrier_spacing": 1,
                                               "pilot_symbols": [0, 3]})
    assert _rays_user_eig(cfg, 0, 300e-9, 400.0)[2].shape == (144, 84)
    nv = 10 ** (-snr_db / 10)
    got = mimo_genie_mse(cfg, snr_db, 300e-9, 400.0, per_user=True)
    fr = MimoFrameGenerator(cfg.updated(channel={"snr_db": snr_db})).generate(2, seed=1)
    est = mimo_estimators(["lmmse-genie"], cfg)[0].estimate(fr.pilots_ls, fr.meta)
    F, T = cfg.ofdm.grid_shape
    for u in range(2):
        want, W = _dense_filter_and_mse(cfg, u, 300e-9, 400.0, nv)
        assert abs(float(got[u]) - want) < 1e-9 * want + 1e-10, (u, float(got[u]), want)
        p = fr.pilots_ls[:, :, u].reshape(2, -1).to(torch.complex128)
        torch.testing.assert_close(est[:, :, u].to(torch.complex128), (p @ W.T).reshape(2, 3, F, T), rtol=0, atol=2e-5)


def test_array_genie_applies_the_dense_filter():
    """The separable genie (per-cluster R_hp, eigen-factored R_pp) gives the dense LMMSE's estimate on the same
    pilots; 2e-5 absolute: the output is complex64 of values ~1."""
    cfg = rays(R=3, U=2, profile="CDL-D", spacing=0.8)
    fr = MimoFrameGenerator(cfg).generate(3, seed=5)
    est = mimo_estimators(["lmmse-genie"], cfg)[0].estimate(fr.pilots_ls, fr.meta)
    F, T = cfg.ofdm.grid_shape
    for u in range(2):
        _, W = _dense_filter_and_mse(cfg, u, 300e-9, 400.0, float(fr.noise_var[0]))
        p = fr.pilots_ls[:, :, u].reshape(3, -1).to(torch.complex128)
        torch.testing.assert_close(est[:, :, u].to(torch.complex128), (p @ W.T).reshape(3, 3, F, T), rtol=0, atol=2e-5)


def test_rays_bound_follows_the_pilot_grid_snr_convention():
    """Under snr_convention pilot-grid the per-RE noise is 10^(-(snr + offset)/10), offset = 10 log10(F T / P)
    (12 x 4 grid, 6 x 2 pilots: 6.02 dB): the rays bound at SNR s is the per-RE bound at s + offset, to float64
    round-off, and 6 dB apart from the per-RE bound at s."""
    grid, per_re = rays(snr_convention="pilot-grid"), rays()
    offset = grid.snr_offset_db
    assert offset == pytest.approx(10 * math.log10(12 * 4 / 12))
    for snr in (0.0, 20.0):
        got = mimo_genie_mse(grid, snr, 300e-9, 400.0, per_user=True)
        torch.testing.assert_close(got, mimo_genie_mse(per_re, snr + offset, 300e-9, 400.0, per_user=True),
                                   rtol=1e-12, atol=0)
        assert float(got.mean()) < 0.75 * float(mimo_genie_mse(per_re, snr, 300e-9, 400.0))

def test_wider_spacing_decorrelates_the_antennas():
    """Spacing d scales the steering phase: at d -> 0 every S_c is all-ones (one point in space), and the mean
    |S_c[0, 1]| falls as d grows from 0.1 to 2 wavelengths."""
    S0, _ = cluster_spatial_covariances("CDL-C", 2, 1e-9)
    torch.testing.assert_close(S0, torch.ones_like(S0), rtol=0, atol=1e-7)
    mags = [float(cluster_spatial_covariances("CDL-C", 2, d)[0][:, 0, 1].abs().mean()) for d in (0.1, 0.5, 2.0)]
    assert mags[0] > mags[1] > mags[2]


def test_rays_sweep_through_the_cli(tmp_path):
    """The user-facing run (fewer antennas and frames): the array genie within 3 SE of its bound at every SNR and
    below the per-antenna 2-D genie, LS above both; the spec records the spatial model."""
    out = tmp_path / "rays"
    rc = main(["sweep", "--profile", "CDL-C", "--rx-antennas", "4", "--users", "2", "--spatial", "rays",
               "--estimators", "ls-linear,lmmse-genie-per-pair,lmmse-genie", "--snr-db", "0:30:30", "--frames", "120",
               "--batch-size", "60", "--out", str(out), "--no-progress"])
    assert rc == 0
    res = json.loads((out / "results.json").read_text())
    assert res["spec"]["mimo"]["spatial"].startswith("rays") and res["spec"]["config"]["mimo"]["spatial"] == "rays"
    genie = genie_on_bound_ls_above(res, 2)
    pair = [r for r in res["rows"] if r["estimator"] == "lmmse-genie-per-pair"]
    for g, p in zip(genie, pair):
        assert p["mse_db"] > g["mse_db"] + 1.0, (p, g)


@pytest.mark.parametrize("args,field", [
    (["--profile", "C"], "mimo.spatial"),
    (["--profile", "CDL-C", "--rx-correlation", "0.5"], "mimo.rx_correlation"),
    (["--profile", "CDL-C", "--mimo-pilots", "dmrs-type1"], "mimo.pilots"),
    (["--profile", "CDL-C", "--estimators", "mmse-bayes"], "estimators"),
    (["--profile", "CDL-C", "--estimators", "lmmse-estimated"], "estimators"),
    (["--profile", "CDL-C", "--antenna-spacing", "200"], "mimo.antenna_spacing_wavelengths"),
    (["--profile", "CDL-C", "--antenna-spacing", "0"], "antenna_spacing=0"),
    (["--profile", "CDL-A", "--estimators", "sionna-lmmse-tfs"], "estimators"),
])
def test_bad_rays_input_is_one_line(tmp_path, capsys, args, field):
    base = ["sweep", "--rx-antennas", "2", "--users", "2", "--spatial", "rays", "--snr-db", "10", "--frames", "10",
            "--out", str(tmp_path / "o"), "--no-progress"]
    if "--estimators" not in args:
        base += ["--estimators", "ls-linear"]
    rc = main(base + args)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and field in err[0], err


def test_spacing_without_rays_is_refused_and_defaults_keep_the_json():
    with pytest.raises(ConfigError, match="antenna_spacing_wavelengths"):
        SystemConfig.from_dict({"mimo": {"num_rx_antennas": 2, "antenna_spacing_wavelengths": 0.7}})
    kron = SystemConfig.from_dict({"mimo": {"num_rx_antennas": 2, "rx_correlation": 0.5}})
    assert "spatial" not in kron.to_json() and "antenna_spacing" not in kron.to_json()
    assert json.loads(rays().to_json())["mimo"]["spatial"] == "rays"


def test_generate_writes_rays_shards_that_say_so(tmp_path):
    """``wavefront generate --spatial rays``: the manifest names the spatial model and spacing, and the shards' config
    reads back as the rays config (so evaluation regenerates nothing under the Kronecker model by mistake)."""
    import h5py

    cfg = tmp_path / "cdl.yaml"
    cfg.write_text("channel:\n  profile: CDL-C\n")
    out = tmp_path / "shards"
    rc = main(["generate", "--config", str(cfg), "--rx-antennas", "3", "--users", "2", "--spatial", "rays",
               "--antenna-spacing", "0.7", "--frames", "4", "--out", str(out), "--no-progress"])
    assert rc == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["mimo"]["spatial"] == "rays" and manifest["mimo"]["antenna_spacing_wavelengths"] == 0.7
    with h5py.File(out / "shard-00000.h5") as f:
        stored = SystemConfig.from_dict(json.loads(f.attrs["config"]))
        assert f["h_true"].shape == (4, 3, 2, 120, 14)
    assert stored.mimo.spatial == "rays" and stored.mimo.antenna_spacing_wavelengths == 0.7


def test_rays_frames_are_bit_identical_with_one_and_two_threads():
    """As tests/sim/test_threads.py holds for the other channels: the rays' blocks are large enough for torch to split
    their elementwise ops across threads, and a (config, seed) pair must give the same bits either way."""
    before = torch.get_num_threads()
    out = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            cfg = rays(R=8, U=2, profile="CDL-D", ofdm={}, doppler_hz=[0.0, 1000.0])
            fr = MimoFrameGenerator(cfg).generate(40, seed=5)  # 80 links: two blocks of the ray sums
            out.append((fr.h, fr.y, fr.bits))
    finally:
        torch.set_num_threads(before)
    for a, b in zip(*out):
        assert torch.equal(a, b)
