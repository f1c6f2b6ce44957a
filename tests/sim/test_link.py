"""BER of the data path against closed forms."""
import math

import pytest
import torch

from wavefront.sim.link import ber_awgn, ber_rayleigh_qpsk, bit_errors, demap, equalize


def _transmit(bits_per_symbol, n_symbols, seed):
    from sionna.phy.mapping import Mapper

    g = torch.Generator().manual_seed(seed)
    bits = torch.randint(0, 2, (1, n_symbols * bits_per_symbol), generator=g).float()
    x = Mapper("qam", bits_per_symbol, device="cpu")(bits)
    return bits, x, g


def _noise(shape, nv, g):
    return torch.view_as_complex(torch.randn(*shape, 2, generator=g)) * math.sqrt(nv / 2)


@pytest.mark.parametrize("modulation,k,snrs", [("qpsk", 2, [0, 4, 8, 10]), ("16qam", 4, [0, 6, 12, 16])])
def test_awgn_ber_matches_closed_form(modulation, k, snrs):
    bits, x, g = _transmit(k, 1_000_000, seed=k)
    for snr in snrs:
        nv = 10 ** (-snr / 10)
        y = x + _noise(x.shape, nv, g)
        h = torch.ones_like(y)
        x_hat, no = equalize(y, h, torch.tensor([nv]), "zf")
        # max-log hard bits are the nearest symbol's, the detector of the closed form (exact for Gray QAM);
        # the bitwise-MAP ("app") bits err less at low SNR (16-QAM at 0 dB: 0.2826 against 0.2873)
        errors = (demap(x_hat, no, k, method="maxlog") != bits).float().reshape(-1, k).sum(1)  # bit errors per symbol
        ber = float(errors.mean()) / k
        theory = ber_awgn(modulation, snr)
        # the bits of a symbol err together, so the SE is per symbol
        se = float(errors.std()) / k / math.sqrt(errors.numel())
        assert theory >= 1e-4
        assert abs(ber - theory) < 5 * se, (snr, ber, theory, se)


@pytest.mark.parametrize("equalizer", ["zf", "mmse"])
def test_rayleigh_qpsk_ber_matches_closed_form(equalizer):
    bits, x, g = _transmit(2, 1_000_000, seed=3)
    h = _noise(x.shape, 1.0, g)  # flat Rayleigh, E|h|^2 = 1, one tap per symbol
    for snr in (0, 10, 20):
        nv = 10 ** (-snr / 10)
        y = h * x + _noise(x.shape, nv, g)
        x_hat, no = equalize(y, h, torch.tensor([nv]), equalizer)
        ber = bit_errors(bits, demap(x_hat, no, 2)) / bits.numel()
        assert abs(ber / ber_rayleigh_qpsk(snr) - 1) < 0.10, (snr, ber)


def test_mmse_equalizer_is_unbiased_and_its_llrs_are_calibrated_on_16qam_rayleigh():
    # One tap: the unbiased MMSE output is y / h (ZF's) and its noise sigma^2 / |h|^2. With that noise the
    # exact ("app") LLRs are posteriors, P(b = 1 | L) = sigmoid(L), so E[(2b - 1) tanh(L/2)] = E[tanh(L/2)^2];
    # a biased output or a wrong noise variance (over- or under-confident LLRs) breaks the equality.
    bits, x, g = _transmit(4, 200_000, seed=11)
    h = _noise(x.shape, 1.0, g)
    nv = 10 ** (-12 / 10)
    y = h * x + _noise(x.shape, nv, g)
    x_zf, no_zf = equalize(y, h, torch.tensor([nv]), "zf")
    x_mmse, no_mmse = equalize(y, h, torch.tensor([nv]), "mmse")
    assert torch.allclose(x_mmse, x_zf, rtol=1e-4, atol=1e-5)
    assert torch.allclose(no_mmse, no_zf, rtol=1e-5)
    t = torch.tanh(demap(x_mmse, no_mmse, 4, hard=False).double() / 2)
    lhs, rhs = (2 * bits.double() - 1) * t, t.square()
    diff = (lhs - rhs).reshape(-1, 4).sum(1)  # per symbol: its bits share the noise
    se = float(diff.std()) / math.sqrt(diff.numel())
    assert abs(float(diff.mean())) < 5 * se, (float(diff.mean()), se)
    # the same check has power: LLRs a quarter too confident fail it
    t_over = torch.tanh(1.25 * demap(x_mmse, no_mmse, 4, hard=False).double() / 2)
    over = ((2 * bits.double() - 1) * t_over - t_over.square()).reshape(-1, 4).sum(1)
    assert abs(float(over.mean())) > 10 * se


def test_soft_demapping_signs_agree_with_hard_decisions():
    bits, x, g = _transmit(4, 20_000, seed=5)
    nv = 0.05
    y = x + _noise(x.shape, nv, g)
    x_hat, no = equalize(y, torch.ones_like(y), torch.tensor([nv]))
    llr = demap(x_hat, no, 4, hard=False)
    hard = demap(x_hat, no, 4, hard=True)
    # Sionna's LLR convention: positive means bit 1
    assert bit_errors(bits, llr, hard=False) == bit_errors(bits, hard)


def test_ldpc_coding_removes_most_errors_at_moderate_snr():
    # one 5G LDPC codeword (rate 1/2) per frame: at 12 dB with perfect CSI the raw BER is a few
    # percent, and decoding leaves under a tenth of those errors
    from wavefront.sim.config import SystemConfig
    from wavefront.sim.sweep import SweepSpec, run_sweep

    cfg = SystemConfig.from_dict({"channel": {"doppler_hz": 100.0, "delay_spread_s": 300e-9}})
    spec = SweepSpec(config=cfg, axis="snr_db", values=[12.0], estimators=["perfect"], frames=8, batch_size=8,
                     seed=0, device="cpu", ldpc_rate=0.5)
    (row,) = run_sweep(spec, progress=False).rows
    assert row.ber > 0.005
    assert row.coded_ber < row.ber / 10
    assert row.bler is not None and 0.0 <= row.bler <= 1.0


def test_sweep_ber_with_perfect_csi_on_a_flat_static_channel_is_the_rayleigh_closed_form():
    # Delay spread 0 and Doppler 0: each frame is one flat Rayleigh coefficient, so the BER
    # the sweep measures (generator, mapper, ZF equaliser, demapper, counting) over many frames
    # is the Rayleigh QPSK closed form at the per-RE SNR.
    from wavefront.sim.config import SystemConfig
    from wavefront.sim.sweep import SweepSpec, run_sweep

    cfg = SystemConfig.from_dict({"channel": {"doppler_hz": 0.0, "delay_spread_s": 0.0}})
    spec = SweepSpec(config=cfg, axis="snr_db", values=[5.0, 15.0], estimators=["perfect"], frames=3000,
                     batch_size=1000, seed=2, device="cpu", conditions="true")
    for row in run_sweep(spec, progress=False).rows:
        assert abs(row.ber / ber_rayleigh_qpsk(row.axis_value) - 1) < 0.12, (row.axis_value, row.ber)


def test_a_modulation_without_a_closed_form_is_refused_naming_it():
    from wavefront.errors import ConfigError

    with pytest.raises(ConfigError, match=r"modulation='64qam': closed form available for qpsk and 16qam"):
        ber_awgn("64qam", 10.0)  # not None, which a BER-over-theory ratio would turn into a TypeError later
