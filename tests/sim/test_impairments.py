"""Receiver impairments (sim/impairments.py) against their closed forms, through the frame generator.

Every statistic runs on a flat channel (delay spread 0, Doppler 0) with all 128 bins of the FFT
loaded (128 subcarriers, N = 128, N_cp = 9) at 100 dB SNR, on the data-only symbols, where the
received ``z_k = y_k / (h_k x_k) = c_s + I_k / (h x_k)`` with ``I_k`` the ICI/ISI, which is
uncorrelated with ``x_k`` and between distinct data symbols: so ``mean_k z_k`` estimates ``c_s``
and ``Q_s = (|sum_k z_k|^2 - sum_k |z_k|^2) / (N (N - 1))`` (pairs k != k') estimates ``|c_s|^2``
without bias. Monte Carlo agrees with each closed form within 3 standard errors.
"""
from __future__ import annotations

import json
import math

import pytest
import torch

from wavefront.cli import main
from wavefront.errors import ConfigError
from wavefront.sim.config import SystemConfig
from wavefront.sim.frames import FrameGenerator
from wavefront.sim.impairments import (cfo_attenuation, cfo_common_phase_rad, cfo_ici_power, phase_noise_cpe_variance,
                                       phase_noise_ici_power, timing_coefficient)

N = 128
SCS = 15e3
BASE = {"delay_spread_s": 0.0, "doppler_hz": 0.0, "snr_db": 100.0}


def _config(**channel) -> SystemConfig:
    return SystemConfig.from_dict({"ofdm": {"num_subcarriers": N}, "channel": {**BASE, **channel}})


def _z(batch: int, seed: int = 3, **impairment) -> tuple[SystemConfig, torch.Tensor, list[int]]:
    """Returns (config, z [B, F, T] complex128, the data-only symbols): y / (h x), x from the unimpaired frames of the seed."""
    cfg = _config(**impairment)
    frames = FrameGenerator(cfg).generate(batch, seed)
    ref = FrameGenerator(_config(ici=True)).generate(batch, seed)  # same channel, noise and bits, no impairment
    assert torch.equal(frames.h, ref.h)
    hx = ref.y.to(torch.complex128)
    data = [t for t in range(cfg.ofdm.num_symbols) if t not in cfg.ofdm.pilot_symbol_indices]
    return cfg, frames.y.to(torch.complex128) / hx, data


def _pairs(z: torch.Tensor) -> torch.Tensor:
    """Returns Q [B, T] float64: the mean of z_k conj(z_k') over pairs k != k' (estimates |c|^2)."""
    n = z.shape[1]
    return ((z.sum(1).abs() ** 2 - (z.abs() ** 2).sum(1)) / (n * (n - 1))).real


def _within(mc: torch.Tensor, closed: float, label: str):
    m, se = float(mc.mean()), float(mc.std() / math.sqrt(mc.numel()))
    print(f"{label}: MC {m:.6g} +- {se:.2g} (SE), closed form {closed:.6g}")
    assert abs(m - closed) <= 3 * max(se, 1e-9), (label, m, se, closed)


@pytest.mark.parametrize("epsilon", [0.05, 0.1, 0.2])
def test_cfo_attenuation_ici_power_and_common_phase_match_closed_forms(epsilon):
    cfg, z, data = _z(60, cfo_hz=epsilon * SCS)
    q = _pairs(z[:, :, data])  # [B, data symbols]
    _within(q.reshape(-1), float(cfo_attenuation(epsilon, N)), f"CFO eps={epsilon} |c|^2")
    _within(1 - q.reshape(-1), float(cfo_ici_power(epsilon, N)), f"CFO eps={epsilon} ICI power")
    for s in (data[0], data[-1]):  # the common rotation: mean of z over frames and subcarriers
        c = z[:, :, s].mean()
        expected = cfo_common_phase_rad(cfg.ofdm, epsilon * SCS, s)
        err = math.remainder(float(torch.angle(c)) - expected, 2 * math.pi)
        se = float((z[:, :, s] - c).abs().std() / math.sqrt(z[:, :, s].numel())) / float(c.abs())
        print(f"CFO eps={epsilon} symbol {s}: phase {float(torch.angle(c)):.6f} vs {math.remainder(expected, 2 * math.pi):.6f}"
              f" (SE {se:.2g} rad)")
        assert abs(err) <= 3 * se + 1e-6


@pytest.mark.parametrize("linewidth_hz", [10.0, 100.0, 1000.0])
def test_phase_noise_ici_power_and_common_phase_error_variance_match_closed_forms(linewidth_hz):
    cfg, z, data = _z(300, seed=int(linewidth_hz), phase_noise_linewidth_hz=linewidth_hz)  # a walk of its own per setting
    q = _pairs(z[:, :, data])
    _within(1 - q.reshape(-1), phase_noise_ici_power(cfg.ofdm, linewidth_hz), f"PN {linewidth_hz:g} Hz ICI power")
    # the common phase error of the first symbol (the phase starts at 0 on the frame's first sample, so its
    # CPE is the smallest and never wraps): angle of mean_k z_k, the ICI averaging out over 128 bins
    s = data[0]
    cpe = torch.angle(z[:, :, s].mean(1))
    _within(cpe ** 2, phase_noise_cpe_variance(cfg.ofdm, linewidth_hz, s), f"PN {linewidth_hz:g} Hz CPE variance, symbol {s}")


@pytest.mark.parametrize("delta", [0.5, 4.0, 9.0])
def test_timing_offset_within_the_cp_is_the_linear_phase_ramp(delta):
    cfg, z, data = _z(20, timing_offset_samples=delta)
    c = timing_coefficient(cfg.ofdm, delta)  # [F]
    err = (z[:, :, data] - c[None, :, None]).abs()
    print(f"timing {delta}: max |z - ramp| = {float(err.max()):.2g}")
    assert float(err.max()) < 1e-3
    # the ramp's slope: -2 pi delta / N per subcarrier
    slope = torch.angle((z[:, 1:, data] * z[:, :-1, data].conj()).mean())
    assert abs(float(slope) + 2 * math.pi * delta / N) < 1e-4


@pytest.mark.parametrize("delta", [-3.0, -1.0, 13.0])
def test_a_window_beyond_the_cp_keeps_its_own_samples_share_and_turns_the_rest_into_isi(delta):
    cfg, z, data = _z(60, timing_offset_samples=delta)
    c = timing_coefficient(cfg.ofdm, delta)
    amplitude = float(c.abs()[0])
    assert amplitude == pytest.approx((N - abs(delta if delta < 0 else delta - 9)) / N)
    ramp = c / c.abs()
    inner = data[:-1] if delta < 0 else data[1:]  # a symbol with a neighbour on the side the window reads
    zr = z[:, :, inner] / ramp[None, :, None]
    _within(_pairs(zr).reshape(-1), amplitude ** 2, f"timing {delta}: |c|^2")
    _within(zr.real.mean((1,)).reshape(-1), amplitude, f"timing {delta}: c")


def test_every_impairment_off_is_bit_identical_and_keeps_the_json():
    plain = SystemConfig.from_dict({"channel": {"doppler_hz": [100.0, 900.0]}})
    off = SystemConfig.from_dict({"channel": {"doppler_hz": [100.0, 900.0], "cfo_hz": None,
                                              "phase_noise_linewidth_hz": None, "timing_offset_samples": None}})
    assert plain.to_json() == off.to_json() and "cfo" not in off.to_json()
    a, b = (FrameGenerator(c).generate(8, 5) for c in (plain, off))
    for name in ("h", "y", "pilots_rx", "bits"):
        assert torch.equal(getattr(a, name), getattr(b, name))
    assert set(a.meta) == set(b.meta) == {"snr_db", "delay_spread_s", "doppler_hz", "noise_var"}


def test_impairments_are_drawn_per_frame_recorded_and_leave_the_label():
    cfg = SystemConfig.from_dict({"channel": {"cfo_hz": [-300.0, 300.0], "phase_noise_linewidth_hz": 50.0,
                                              "timing_offset_samples": [-2.0, 2.0], "ici": True}})
    assert '"cfo_hz": [-300.0, 300.0]' in cfg.to_json()
    frames = FrameGenerator(cfg).generate(6, 2)
    ref = FrameGenerator(SystemConfig.from_dict({"channel": {"ici": True}})).generate(6, 2)
    assert torch.equal(frames.h, ref.h)  # the label is the channel without the impairment
    assert not torch.equal(frames.y, ref.y)
    cfo = frames.meta["cfo_hz"]
    assert cfo.shape == (6,) and cfo.unique().numel() == 6 and float(cfo.abs().max()) <= 300
    assert torch.all(frames.meta["phase_noise_linewidth_hz"] == 50.0)


def test_phase_noise_frames_do_not_depend_on_the_time_domain_paths_blocks(monkeypatch):
    """The Wiener increments are drawn in row blocks fixed by the batch size (32 on CPU): the path's cache-sized
    blocks (fading._CHUNK_ICI_RUN runs, _CHUNK_ICI blocks; _CHUNK_ICI_RUN_SLOT and _CHUNK_ICI_SPAN where the series
    spans the slot, as it does at 300 Hz) are tuning, and tuning them must leave every frame as it was.

    To float32 rounding: a run's series terms follow its largest Doppler, so other runs move y by ~3e-7 even
    without impairments; another phase-noise draw moves it by the phase itself (order 0.1 at these linewidths).
    """
    import wavefront.sim.fading as fading

    cfg = SystemConfig.from_dict({"channel": {"phase_noise_linewidth_hz": [20.0, 200.0], "cfo_hz": 50.0,
                                              "doppler_hz": 300.0}})
    ref = FrameGenerator(cfg).generate(40, 4)  # 40 frames: two blocks of 20 increments rows
    for run, block in ((7, 3), (40, 40), (10 ** 6, 10 ** 6)):
        monkeypatch.setattr(fading, "_CHUNK_ICI_RUN", run)
        monkeypatch.setattr(fading, "_CHUNK_ICI", block)
        monkeypatch.setattr(fading, "_CHUNK_ICI_RUN_SLOT", run)
        monkeypatch.setattr(fading, "_CHUNK_ICI_SPAN", block)
        again = FrameGenerator(cfg).generate(40, 4)
        for name in ("y", "pilots_rx", "h"):
            err = float((getattr(again, name) - getattr(ref, name)).abs().max())
            assert err < 1e-5, (run, block, name, err)


@pytest.mark.parametrize("channel, field", [({"phase_noise_linewidth_hz": -1.0}, "phase_noise_linewidth_hz"),
                                            ({"timing_offset_samples": 200.0}, "timing_offset_samples")])
def test_bad_impairments_are_refused_naming_the_field(channel, field):
    with pytest.raises(ConfigError, match=field):
        SystemConfig.from_dict({"channel": channel})


@pytest.mark.parametrize("argv, field, rule", [
    (["--phase-noise-hz", "-5"], "channel.phase_noise_linewidth_hz", "must be >= 0"),
    (["--timing-offset", "1000"], "channel.timing_offset_samples", "within the symbol"),
    (["--timing-offset=-140"], "channel.timing_offset_samples", "within the symbol"),
    (["--cfo-hz", "1:2:3"], "--cfo-hz", "LOW:HIGH"),
])
def test_sweep_refuses_bad_impairments_in_one_line_with_exit_2(argv, field, rule, tmp_path, capsys):
    rc = main(["sweep", "--no-progress", "--frames", "10", "--estimators", "ls-linear", "--out", str(tmp_path), *argv])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and field in err and rule in err, err


def test_sweep_with_a_cfo_records_it_and_the_genie_says_it_ignores_it(tmp_path, capsys):
    rc = main(["sweep", "--no-progress", "--frames", "20", "--batch-size", "20", "--estimators", "ls-linear,lmmse-genie",
               "--snr-db", "20", "--cfo-hz", "1500", "--out", str(tmp_path)])
    assert rc == 0
    result = json.loads((tmp_path / "results.json").read_text())
    text = json.dumps(result)
    assert "cfo_hz=1500.0" in text and "ignore" in text
    assert result["impairments"] == {"cfo_hz": {"value": 1500.0, "units": "Hz (residual carrier frequency offset)"}}


@pytest.mark.parametrize("delta", [-5, 4, 20])
def test_the_fft_window_is_a_slice_of_the_serial_cp_stream_shifted_by_the_timing_offset(delta):
    # Independently of the generator's frequency-domain delays: on a flat channel, build the transmitted serial
    # stream (each symbol's CP, then its N useful samples, x_s(n) = (1/N) sum_i X_i exp(j 2 pi k_i n / N), k_i the
    # signed subcarrier index, silence before and after the frame), cut symbol s's window starting delta samples
    # before its nominal start s (N + N_cp) + N_cp, and demodulate at the same k_i. A late window (delta < 0) reads
    # the next symbol's CP, one early beyond the CP (delta > N_cp) the previous symbol's tail: the neighbour's samples
    # must be the right ones, which the statistical tests above cannot see (ISI from any independent data has the same power).
    from wavefront.sim.profiles import subcarrier_offsets_hz

    cfg = _config(timing_offset_samples=float(delta))
    n_fft, cp = cfg.ofdm.time_sampling()
    assert (n_fft, cp) == (N, 9)
    frames = FrameGenerator(cfg).generate(3, 4)
    ref = FrameGenerator(_config(ici=True)).generate(3, 4).y.to(torch.complex128)  # h x (+ noise 1e-5) [B, F, T]
    T = cfg.ofdm.num_symbols
    k = subcarrier_offsets_hz(cfg.ofdm) / SCS  # [N] signed indices
    m = torch.arange(-cp, N, dtype=torch.float64)  # a symbol's samples from the start of its CP
    synth = torch.exp(2j * math.pi * m[:, None] * k[None, :] / N) / N  # [N + N_cp, N]
    stream = torch.einsum("mi,bit->btm", synth, ref).reshape(3, T * (N + cp))
    stream = torch.cat([torch.zeros(3, N + cp, dtype=stream.dtype), stream, torch.zeros(3, N + cp, dtype=stream.dtype)], 1)
    analysis = torch.exp(-2j * math.pi * torch.arange(N, dtype=torch.float64)[:, None] * k[None, :] / N)  # [N, N]
    for s in range(T):
        start = (s + 1) * (N + cp) + cp - delta  # +1: the leading silence
        want = stream[:, start:start + N] @ analysis  # [B, N]
        err = (frames.y[:, :, s].to(torch.complex128) - want).abs().max()
        assert float(err) < 1e-3, (s, float(err))
