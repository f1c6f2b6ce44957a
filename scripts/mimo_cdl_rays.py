"""``mimo.spatial: rays`` in numbers: the array genie's bound against the per-antenna 2-D genie's over antenna count,
the Kronecker-model genie (the best rho of a grid) on the same rays frames, and the speed of rays frames against
Kronecker frames.

    python scripts/mimo_cdl_rays.py [--profile CDL-C] [--users 2] [--snr-db 10] [--frames 200]

The bound and the per-antenna genie are closed forms (:func:`~wavefront.sim.mimo.mimo_genie_mse`; the per-antenna
2-D genie has the SISO bound :func:`~wavefront.sim.lmmse.genie_mse` of each user's pilots, every antenna's marginal
channel being the SISO CDL channel). The Kronecker-model genie is :class:`~wavefront.sim.mimo.MimoGenieLMMSE` told
``rho``: Monte Carlo on ``--frames`` rays frames, mean +- SE over frames. "Kron. true S": the LMMSE that assumes
``S (x) R_ft`` with the true marginal spatial covariance ``S = sum_c P_c S_c`` (complex), closed form
(:func:`kronecker_marginal_mse`): how much of the array genie's gain needs the per-cluster covariances.
"""
from __future__ import annotations

import argparse
import math
import time

import torch


def kronecker_marginal_mse(cfg, snr_db: float) -> float:
    """Returns the MSE per element (users' mean) of the LMMSE that assumes the Kronecker model with the *true* marginal
    spatial covariance ``S = sum_k P_k S_k`` (what Sionna's "t-f-s" would be told), on the rays channel: closed form
    ``[tr R_hh - 2 Re tr(W R_ph) + tr(W (R_pp + s I) W^H)] / (R F T)``, ``W = R_hp~ (R_pp~ + s I)^-1``, ``~`` the model."""
    from wavefront.sim.mimo_cdl import user_covariance_terms

    def kron3(a, b, c):
        return torch.kron(a, torch.kron(b, c))

    ch, m = cfg.channel, cfg.mimo
    F, T = cfg.ofdm.grid_shape
    s = 10 ** (-snr_db / 10)
    out = []
    for u in range(m.num_users):
        terms = user_covariance_terms(cfg, u, ch.delay_spread_s, ch.doppler_hz)
        sbar = sum(S * Fp[0, 0].real for S, _, _, Fp, _ in terms)
        r_pp = sum(kron3(S, Fp, Tp) for S, _, _, Fp, Tp in terms)
        r_pp_m = sum(kron3(sbar, Fp, Tp) for _, _, _, Fp, Tp in terms)
        X = sum(kron3(S.mH @ sbar, A.mH @ A2, C.mH @ C2) for S, A, C, _, _ in terms for _, A2, C2, _, _ in terms)
        Y = sum(kron3(sbar @ sbar, A.mH @ A2, C.mH @ C2) for _, A, C, _, _ in terms for _, A2, C2, _, _ in terms)
        eye = torch.eye(r_pp.shape[0], dtype=r_pp.dtype)
        Z = torch.linalg.inv(r_pp_m + s * eye)
        cross = torch.trace(Z @ X).real
        power = torch.trace((r_pp + s * eye) @ Z.mH @ Y @ Z).real
        out.append(float(1.0 - (2 * cross - power) / (m.num_rx_antennas * F * T)))
    return sum(out) / len(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="CDL-C")
    ap.add_argument("--users", type=int, default=2)
    ap.add_argument("--snr-db", type=float, default=10.0)
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--antennas", default="2,4,8,16")
    a = ap.parse_args()
    torch.set_num_threads(1)
    from wavefront.sim.config import SystemConfig
    from wavefront.sim.lmmse import genie_mse
    from wavefront.sim.mimo import MimoFrameGenerator, MimoGenieLMMSE, mimo_genie_mse, user_configs

    def db(x):
        return 10 * math.log10(x)

    print(f"{a.profile}, {a.users} users, SNR {a.snr_db:g} dB, default grid (120 x 14, pilots 12 x 2 dealt to the "
          f"users), 300 ns, 500 Hz; one thread")
    print(f"{'R':>3} {'per-antenna':>12} {'array bound':>12} {'gain dB':>8} {'best-rho genie':>15} {'rho':>5} "
          f"{'array MC':>14} {'Kron. true S':>12} {'rays ms/frame':>14} {'kron ms/frame':>14}")
    for R in [int(x) for x in a.antennas.split(",")]:
        cfg = SystemConfig.from_dict({"channel": {"profile": a.profile, "snr_db": a.snr_db},
                                      "mimo": {"num_rx_antennas": R, "num_users": a.users, "spatial": "rays"}})
        ch = cfg.channel
        bound = float(mimo_genie_mse(cfg, a.snr_db, ch.delay_spread_s, ch.doppler_hz))
        pair = sum(float(genie_mse(c, a.snr_db, ch.delay_spread_s, ch.doppler_hz)) for c in user_configs(cfg)) / a.users
        gen = MimoFrameGenerator(cfg)
        gen.generate(4, seed=0, with_data=False)
        t0 = time.perf_counter()
        fr = gen.generate(a.frames, seed=1, with_data=False)
        t_rays = (time.perf_counter() - t0) / a.frames
        kron = cfg.updated(mimo={"spatial": "kronecker", "rx_correlation": 0.7})
        kgen = MimoFrameGenerator(kron)
        kgen.generate(4, seed=0, with_data=False)
        t0 = time.perf_counter()
        kgen.generate(a.frames, seed=1, with_data=False)
        t_kron = (time.perf_counter() - t0) / a.frames

        def mc(est):
            err = (est.estimate(fr.pilots_ls, fr.meta) - fr.h).abs().square().mean((1, 2, 3, 4)).double()
            return float(err.mean()), float(err.std()) / math.sqrt(len(err))

        from wavefront.sim.mimo_cdl import RaysGenieLMMSE

        arr, arr_se = mc(RaysGenieLMMSE(cfg))
        best = min(((mc(MimoGenieLMMSE(cfg.updated(mimo={"spatial": "kronecker", "rx_correlation": r}))), r)
                    for r in (0.0, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 0.99)), key=lambda v: v[0][0])
        (k, k_se), rho = best
        print(f"{R:>3} {db(pair):>9.2f} dB {db(bound):>9.2f} dB {db(pair) - db(bound):>8.2f} "
              f"{db(k):>9.2f} +-{10 / math.log(10) * k_se / k:.2f} {rho:>5g} "
              f"{db(arr):>8.2f} +-{10 / math.log(10) * arr_se / arr:.2f} {db(kronecker_marginal_mse(cfg, a.snr_db)):>9.2f} dB "
              f"{1e3 * t_rays:>14.3f} {1e3 * t_kron:>14.3f}")


if __name__ == "__main__":
    main()
