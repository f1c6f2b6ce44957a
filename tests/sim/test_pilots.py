"""Pilot layouts: presets against TS 38.211, Kronecker layouts unchanged, scattered layouts against closed forms."""
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from wavefront.cli import main
from wavefront.errors import ConfigError
from wavefront.sim.conditions import ConditionPrior
from wavefront.sim.config import SystemConfig, preset
from wavefront.sim.estimators import get_classical
from wavefront.sim.frames import FrameGenerator
from wavefront.sim.lmmse import GenieLMMSE, genie_mse
from wavefront.sim.interpolation import interpolation_weights
from wavefront.sim.pilots import (
    PILOT_PRESETS, PilotLayout, apply_pilots, flat_pilots, read_layout_file,
)

GOLDEN = Path(__file__).parent / "kronecker_golden.json"
RANGES = {"snr_db": [0, 25], "delay_spread_s": [50e-9, 300e-9], "doppler_hz": [50, 1000]}


def db(x):
    return 10 * math.log10(float(x))


def _lattice(channel=None):
    return apply_pilots(preset("default").updated(channel=channel or {}), "lattice-4x6")


# ---- presets --------------------------------------------------------------------------------
# TS 38.211 Table 7.4.1.1.2-3 (PDSCH DM-RS positions l-bar, single-symbol DM-RS), l_d = 14,
# mapping type A, as typed from the specification; l0 = dmrs-TypeA-Position = 2.
TS38211_LBAR_TYPE_A_LD14 = {0: ["l0"], 1: ["l0", 11], 2: ["l0", 7, 11], 3: ["l0", 5, 8, 11]}


@pytest.mark.parametrize("config_type", [1, 2])
@pytest.mark.parametrize("additional_position", [0, 1, 2, 3])
def test_nr_dmrs_presets_match_ts38211_tables(config_type, additional_position):
    cfg = apply_pilots(preset("default"), f"nr-dmrs-type{config_type}-pos{additional_position}")
    symbols = [2 if v == "l0" else v for v in TS38211_LBAR_TYPE_A_LD14[additional_position]]
    # 7.4.1.1.2: k = 4n + 2k' + Delta (type 1), 6n + k' + Delta (type 2); port 1000: CDM group 0, Delta = 0
    if config_type == 1:
        subcarriers = sorted(4 * n + 2 * k for n in range(30) for k in (0, 1))
    else:
        subcarriers = sorted(6 * n + k for n in range(20) for k in (0, 1))
    layout = cfg.ofdm.pilot_layout
    assert layout.positions == tuple((f, t) for f in subcarriers for t in symbols)
    assert layout.is_kronecker and layout.pilot_shape == (len(subcarriers), len(symbols))


def test_block_12x2_preset_is_the_default_config_and_paper_preset_is_40x2():
    assert apply_pilots(preset("default"), "block-12x2").to_json() == preset("default").to_json()
    assert apply_pilots(preset("default"), "adafortitran-paper").ofdm == preset("adafortitran-paper").ofdm


def test_lattice_preset_reproduces_the_reference_bounds():
    # REFERENCE.md: 4 symbols (0, 4, 8, 12) x 6 subcarriers, every other symbol shifted by 5
    cfg = _lattice()
    got = [db(genie_mse(cfg, 20, ds, fd)) for ds, fd in ((300e-9, 1000.0), (300e-9, 500.0), (100e-9, 200.0))]
    assert np.allclose(got, [-19.96, -21.66, -25.86], atol=0.006)
    assert cfg.ofdm.pilot_layout.num_pilots == 24 and not cfg.ofdm.pilot_layout.is_kronecker


# ---- Kronecker layouts: bit for bit as before layouts existed -------------------------------
def _golden_numbers(name: str) -> dict:
    def c(t):
        return [[float(v.real), float(v.imag)] for v in t.reshape(-1)]

    cfg = preset(name).updated(channel=RANGES)
    fr = FrameGenerator(cfg).generate(3, seed=7, with_data=True)
    d = {"h": c(fr.h[0, :3, :3]), "pilots_rx": c(fr.pilots_rx[1]), "pilot_symbols": c(fr.pilot_symbols)}
    ests = ("ls-linear", "lmmse-genie")
    if name == "default":
        fr2 = FrameGenerator(cfg).generate(3, seed=7, with_data=False)
        d.update({"y": c(fr.y[2, 4:7, 4:7]), "bits": float(fr.bits.sum()), "pilots_ls_nodata": c(fr2.pilots_ls[2]),
                  "snr": fr.snr_db.tolist()})
        ests = ("ls-linear", "ls-nearest", "ls-spline", "lmmse-genie", "lmmse-robust")
    for est in ests:
        d[est] = c(get_classical(est, cfg).estimate(fr.pilots_ls, fr.meta)[:, 17:19, 6:8])
    if name == "default":
        prior = ConditionPrior.from_ranges((50e-9, 300e-9), (50.0, 1000.0), (0.0, 25.0), 125e-9, 475.0, 12.5)
        for est in ("lmmse-estimated", "mmse-bayes"):
            d[est] = c(get_classical(est, cfg, prior=prior).estimate(fr.pilots_ls, fr.meta)[:, 17:19, 6:8])
    d["genie_mse"] = genie_mse(cfg, torch.tensor([0., 10, 20, 30]), torch.tensor([300e-9, 100e-9, 200e-9, 50e-9]),
                               torch.tensor([1000., 200, 500, 50])).tolist()
    return d


@pytest.mark.parametrize("name", ["default", "adafortitran-paper"])
def test_kronecker_layouts_give_the_numbers_of_before_layouts(name):
    # Frames, LS, every LMMSE and the bound on the 12 x 2 and 40 x 2 grids, recorded on the
    # commit before issue 11 (same seeds); float32 round-off only.
    want = json.loads(GOLDEN.read_text())[name]
    got = _golden_numbers(name)
    for key, ref in want.items():
        np.testing.assert_allclose(np.asarray(got[key]), np.asarray(ref), rtol=1e-5, atol=2e-6, err_msg=key)


def test_default_config_json_is_unchanged_so_shards_and_checkpoints_keep_their_bytes():
    assert preset("default").to_json() == json.loads(GOLDEN.read_text())["config_json"]
    assert "pilot_positions" not in preset("default").ofdm.model_dump()


def test_positions_file_spelling_of_the_default_grid_is_the_kronecker_fast_path(tmp_path):
    base = preset("default").updated(channel=RANGES)
    path = tmp_path / "block.json"
    path.write_text(json.dumps({"positions": [[f, t] for t in (11, 2) for f in range(0, 120, 10)]}))  # any order
    cfg = apply_pilots(base, str(path))
    assert cfg.ofdm.pilot_positions is not None and cfg.ofdm.pilot_layout.is_kronecker
    a, b = (FrameGenerator(c).generate(50, seed=3, with_data=True) for c in (base, cfg))
    for key in ("h", "y", "pilots_rx", "pilots_ls", "pilot_symbols", "bits"):
        assert torch.equal(getattr(a, key), getattr(b, key)), key
    for est in ("ls-linear", "lmmse-genie", "lmmse-robust"):
        assert torch.equal(get_classical(est, base).estimate(a.pilots_ls, a.meta),
                           get_classical(est, cfg).estimate(b.pilots_ls, b.meta)), est


# ---- the dense (scattered) path against the Kronecker one and against closed forms ----------
@pytest.mark.parametrize("name,profile", [("default", "A"), ("adafortitran-paper", "A"), ("default", "D")])
def test_dense_bound_equals_kronecker_bound_on_a_kronecker_layout(name, profile):
    cfg = preset(name).updated(channel={"profile": profile})
    snr, ds, fd = torch.tensor([0.0, 20, 30, 10]), torch.tensor([300e-9, 100e-9, 50e-9, 200e-9]), torch.tensor([1000.0, 200, 50, 600])
    kron, dense = genie_mse(cfg, snr, ds, fd), genie_mse(cfg, snr, ds, fd, dense=True)
    assert torch.allclose(kron, dense, rtol=0, atol=1e-10)


@pytest.mark.parametrize("profile", ["A", "D"])  # D: the LoS Doppler makes the time correlation complex
def test_dense_lmmse_filter_equals_kronecker_filter_on_a_kronecker_layout(profile):
    cfg = preset("default").updated(channel={**RANGES, "profile": profile})
    fr = FrameGenerator(cfg).generate(64, seed=5, with_data=False)
    a = GenieLMMSE(cfg).estimate(fr.pilots_ls, fr.meta)
    b = GenieLMMSE(cfg, dense=True).estimate(fr.pilots_ls.reshape(64, -1), fr.meta)
    assert torch.allclose(a, b, atol=1e-5)


def test_genie_lmmse_on_a_scattered_layout_matches_its_trace_formula():
    # The LMMSE error depends on second-order statistics only, which the sum of sinusoids has exactly.
    cfg = _lattice({"snr_db": 20, "delay_spread_s": 300e-9, "doppler_hz": 1000.0})
    fr = FrameGenerator(cfg).generate(3000, seed=11, with_data=False)
    assert fr.pilots_ls.shape == (3000, 24)
    h_hat = get_classical("lmmse-genie", cfg).estimate(fr.pilots_ls, fr.meta)
    per_frame = (h_hat - fr.h).abs().square().mean((1, 2)).double()
    se_db = 10 / math.log(10) * float(per_frame.std() / per_frame.mean()) / math.sqrt(len(per_frame))
    mc, bound = db(per_frame.mean()), db(genie_mse(cfg, 20, 300e-9, 1000.0))
    assert abs(mc - bound) < max(3 * se_db, 0.05), (mc, bound, se_db)


def test_bayes_and_robust_with_a_one_point_prior_are_the_genie_on_a_scattered_layout():
    cfg = _lattice({"snr_db": 15, "delay_spread_s": 200e-9, "doppler_hz": 600.0})
    fr = FrameGenerator(cfg).generate(32, seed=2, with_data=False)
    prior = ConditionPrior.from_ranges(200e-9, 600.0, 15.0)
    genie = get_classical("lmmse-genie", cfg).estimate(fr.pilots_ls, fr.meta)
    bayes = get_classical("mmse-bayes", cfg, prior=prior).estimate(fr.pilots_ls, fr.meta)
    robust = get_classical("lmmse-robust", cfg, covariance="prior-average", prior=prior).estimate(fr.pilots_ls, fr.meta)
    estimated = get_classical("lmmse-estimated", cfg, prior=prior).estimate(fr.pilots_ls, fr.meta)
    for h in (bayes, robust, estimated):
        assert torch.allclose(h, genie, atol=1e-5)


# ---- LS interpolation over the triangulation -----------------------------------------------
@pytest.mark.parametrize("spec", ["lattice-4x6", "lattice-3x8", "random"])
def test_ls_linear_is_exact_on_an_affine_channel_inside_the_hull(spec):
    if spec == "random":
        rng = np.random.default_rng(0)
        flat = rng.choice(120 * 14, 30, replace=False)
        cfg = preset("default").updated(ofdm={"pilot_positions": [(int(i // 14), int(i % 14)) for i in flat]})
    else:
        cfg = apply_pilots(preset("default"), spec)
    lay = cfg.ofdm.pilot_layout
    f, t = np.meshgrid(np.arange(120.0), np.arange(14.0), indexing="ij")
    h = (0.3 - 0.2j) + (0.01 + 0.02j) * f - (0.07 - 0.05j) * t  # affine in (subcarrier, symbol)
    p = torch.as_tensor(h[lay.subcarrier_indices, lay.symbol_indices], dtype=torch.complex64)[None]
    est = get_classical("ls-linear", cfg).estimate(p, {})[0].numpy()
    from scipy.spatial import Delaunay

    pts = np.stack([lay.subcarrier_indices, lay.symbol_indices], 1)
    inside = Delaunay(pts).find_simplex(np.stack([f.ravel(), t.ravel()], 1)).reshape(120, 14) >= 0
    assert inside.sum() > 500
    np.testing.assert_allclose(est[inside], h[inside], atol=2e-5)
    A = interpolation_weights(lay, "linear")
    assert np.allclose(A.sum(1), 1.0) and (A >= -1e-12).all()  # outside the hull: a convex combination of pilots
    np.testing.assert_allclose(est[lay.subcarrier_indices, lay.symbol_indices], p[0].numpy(), atol=1e-6)


def test_ls_outside_the_hull_takes_the_nearest_hull_point():
    lay = PilotLayout.from_positions([(10, 2), (50, 2), (10, 8), (50, 8)], (60, 14))
    A = interpolation_weights(lay, "linear").reshape(60, 14, 4)
    # (30, 12) is beyond the edge (10, 8)-(50, 8): the edge's midpoint, half from each end
    np.testing.assert_allclose(A[30, 12], [0, 0.5, 0, 0.5], atol=1e-12)
    np.testing.assert_allclose(A[0, 0], [1, 0, 0, 0], atol=1e-12)  # the corner pilot itself


def test_nearest_on_a_scattered_layout_takes_each_cells_euclidean_nearest_pilot_and_spline_is_refused():
    lay = PilotLayout.from_positions([(10, 2), (50, 2), (30, 7), (12, 12)], (60, 14))
    A = interpolation_weights(lay, "nearest")
    pts = np.stack([lay.subcarrier_indices, lay.symbol_indices], 1).astype(float)
    grid = np.stack(np.meshgrid(np.arange(60), np.arange(14), indexing="ij"), -1).reshape(-1, 2)
    d = ((grid[:, None, :] - pts[None]) ** 2).sum(-1)
    assert (A.sum(1) == 1).all() and ((A == 0) | (A == 1)).all()
    np.testing.assert_array_equal(d[np.arange(len(grid)), A.argmax(1)], d.min(1))
    assert len(set(A.argmax(1).tolist())) == 4  # every pilot is some cell's nearest (its own, at least)
    with pytest.raises(ConfigError, match="interpolation='spline': a scattered layout supports nearest or linear"):
        interpolation_weights(lay, "spline")


def test_ls_on_collinear_and_single_pilots_is_linear_along_the_line_and_constant_beyond():
    # three pilots on a diagonal (not a Kronecker layout): the interpolant is linear in the position along
    # the line (the projection onto it), and beyond its ends the end pilot's value; one pilot: its value.
    lay = PilotLayout.from_positions([(10, 1), (20, 3), (40, 7)], (60, 14))
    A = interpolation_weights(lay, "linear").reshape(60, 14, 3)
    assert np.allclose(A.sum(-1), 1.0) and (A >= -1e-12).all()
    np.testing.assert_allclose(A[15, 2], [0.5, 0.5, 0], atol=1e-12)  # midway between the first two
    np.testing.assert_allclose(A[30, 5], [0, 0.5, 0.5], atol=1e-12)
    np.testing.assert_allclose(A[0, 0], [1, 0, 0], atol=1e-12)  # before the first pilot
    np.testing.assert_allclose(A[59, 13], [0, 0, 1], atol=1e-12)  # beyond the last
    # a line whose direction runs against the position order (its first pilot is the farthest from the mean)
    lay = PilotLayout.from_positions([(0, 13), (10, 11), (40, 5), (50, 3)], (60, 14))
    A = interpolation_weights(lay, "linear").reshape(60, 14, 4)
    np.testing.assert_allclose(A[5, 12], [0.5, 0.5, 0, 0], atol=1e-12)
    np.testing.assert_allclose(A[25, 8], [0, 0.5, 0.5, 0], atol=1e-12)
    np.testing.assert_allclose(A[59, 0], [0, 0, 0, 1], atol=1e-12)
    one = interpolation_weights(PilotLayout.from_positions([(30, 5)], (60, 14)), "linear")
    np.testing.assert_array_equal(one, np.ones((60 * 14, 1)))


def test_ls_spline_refuses_a_scattered_layout_with_a_clear_message():
    with pytest.raises(ConfigError, match="cubic spline needs a Kronecker"):
        get_classical("ls-spline", _lattice())


# ---- files and validation --------------------------------------------------------------------
@pytest.mark.parametrize("content,rule", [
    ('{"positions": [[0, 1], [120, 3]]}', r"positions\[1\]=\[120, 3\]: outside the 120x14 grid"),
    ('{"positions": [[0, 1], [5, 3], [0, 1]]}', r"positions\[2\]=\[0, 1\]: repeats position 0"),
    ('{"positions": []}', "needs at least one position"),
    ('{"positions": [[0, 1.5]]}', "must be a pair of integers"),
    ('{"positions": [[true, 1]]}', "must be a pair of integers"),  # JSON true is a Python bool, an int subclass
    ('{"pilots": [[0, 1]]}', 'must be a JSON object {"positions"'),
    ('{"positions": [[0, 1]', "not valid JSON"),
    # a dict's keys were read as the positions ("positions[0]='a': must be a pair")
    ('{"positions": {"0": 1}}', r"positions=\{'0': 1\}: must be a list of \[subcarrier, symbol\] pairs, not a dict"),
    ('{"positions": null}', r"positions=None: must be a list of \[subcarrier, symbol\] pairs, not a NoneType"),
    # a layout `pilots optimise` made on another grid: its positions fit 120 x 14 and mean another layout
    ('{"positions": [[0, 1]], "grid": [60, 14]}', r"grid=\[60, 14\]: the layout was made for that grid, "
                                                  r"the config's is \[120, 14\]"),
    ('{"positions": [[0, 1]], "grid": "120x14"}', r"grid='120x14': must be \[subcarriers, symbols\]"),
])
def test_bad_layout_files_are_one_line_config_errors(tmp_path, content, rule):
    path = tmp_path / "layout.json"
    path.write_text(content)
    with pytest.raises(ConfigError, match=rule) as exc:
        read_layout_file(path, (120, 14))
    assert exc.value.field == "pilots" and "\n" not in str(exc.value)


def test_a_layout_file_recording_this_grid_is_read(tmp_path):
    path = tmp_path / "layout.json"
    for grid in ("[120, 14]", "[120.0, 14.0]"):
        path.write_text('{"positions": [[5, 1], [0, 1]], "grid": ' + grid + ', "objective": {}}')
        assert read_layout_file(path, (120, 14)).positions == ((0, 1), (5, 1))


def test_bad_pilots_on_the_command_line_is_one_line_exit_2(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text('{"positions": [[0, 14]]}')
    for spec, msg in ((str(bad), "outside the 120x14 grid"), ("no-such-preset", "unknown preset"),
                      (str(tmp_path / "missing.json"), "file not found")):
        rc = main(["sweep", "--pilots", spec, "--estimators", "ls-linear", "--frames", "2", "--out",
                   str(tmp_path / "o"), "--no-progress"])
        err = capsys.readouterr().err.strip()
        assert rc == 2 and err.count("\n") == 0 and msg in err and err.startswith("wavefront: error: pilots=")


def test_config_positions_are_validated_naming_the_field():
    with pytest.raises(ConfigError, match=r"ofdm\.pilot_positions\[1\]=\[3, 4\]: repeats"):
        preset("default").updated(ofdm={"pilot_positions": [[3, 4], [3, 4]]})


def test_flat_and_grid_pilot_tensors_are_both_accepted():
    lay = preset("default").ofdm.pilot_layout
    p = torch.arange(24.0).to(torch.complex64).reshape(1, 12, 2)
    assert torch.equal(flat_pilots(p, lay), p.reshape(1, 24))
    with pytest.raises(ConfigError, match=r"must be \[B, 12, 2\] or \[B, 24\]"):
        flat_pilots(torch.zeros(1, 23, dtype=torch.complex64), lay)


def test_every_preset_builds_on_the_default_grid_and_survives_json():
    for name in PILOT_PRESETS:
        cfg = apply_pilots(preset("default"), name)
        assert SystemConfig.from_dict(json.loads(cfg.to_json())) == cfg


@pytest.mark.parametrize("name,rows", [
    # symbol: (first subcarrier, spacing, count) as the module docstring states them
    ("lattice-4x6", {0: (0, 20, 6), 4: (5, 20, 6), 8: (0, 20, 6), 12: (5, 20, 6)}),
    ("lattice-3x8", {1: (0, 15, 8), 6: (5, 15, 8), 11: (10, 15, 8)}),
])
def test_lattice_presets_are_the_staggered_rows_they_describe_and_clip_at_the_grid_edge(name, rows):
    cfg = apply_pilots(SystemConfig(), name)
    want = sorted((o + k * step, t) for t, (o, step, n) in rows.items() for k in range(n))
    assert list(cfg.ofdm.pilot_layout.positions) == want
    # on a grid of 100 subcarriers a row keeps the pilots strictly inside it (subcarriers 0..99)
    small = apply_pilots(SystemConfig.from_dict({"ofdm": {"num_subcarriers": 100}}), name)
    assert list(small.ofdm.pilot_layout.positions) == [(f, t) for f, t in want if f < 100]


def test_nr_dmrs_presets_refuse_a_grid_of_partial_resource_blocks():
    with pytest.raises(ConfigError, match="not a multiple of 12") as exc:
        apply_pilots(SystemConfig.from_dict({"ofdm": {"num_subcarriers": 100}}), "nr-dmrs-type1-pos1")
    assert exc.value.field == "pilots" and "\n" not in str(exc.value)


def test_is_arithmetic_means_equally_spaced():
    from wavefront.sim.pilots import is_arithmetic

    assert is_arithmetic([0, 10, 20, 30]) and is_arithmetic([3, 7]) and is_arithmetic([5]) and is_arithmetic([])
    assert not is_arithmetic([0, 10, 25]) and not is_arithmetic([0, 2, 4, 7])
