"""Model zoo: shapes on two grids, clear errors, official parameter counts; official outputs: test_est_official.py."""
import pytest
import torch
from est_helpers import TINY, meta_for

from wavefront.errors import ConfigError
from wavefront.estimators import count_parameters, create, list_models
from wavefront.sim.config import SystemConfig

ALL = ["adafortitran", "antenna-attention", "channelnet", "convnext", "espcn", "fortitran", "gated-lmmse", "interpolatenet", "linear", "reesnet"]


def test_registry_lists_the_zoo():
    assert list_models() == ALL


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("which", ["default_config", "narrow_config"])
def test_every_model_maps_pilots_to_the_full_grid(name, which, request):
    config = request.getfixturevalue(which)
    torch.manual_seed(0)
    model = create(name, config)
    pf, pt = config.ofdm.pilot_shape
    pilots = torch.randn(3, pf, pt, dtype=torch.complex64)
    with torch.no_grad():
        out = model(pilots, meta_for(3))
    assert out.shape == (3, *config.ofdm.grid_shape) and out.dtype == torch.complex64
    assert torch.isfinite(torch.view_as_real(out)).all()
    if which == "default_config":
        assert (pf, pt) == (12, 2) and out.shape[1:] == (120, 14)


@pytest.mark.parametrize("name", ["reesnet", "espcn"])
def test_integer_upsamplers_refuse_a_pilot_grid_that_does_not_divide(name):
    config = SystemConfig.from_dict({"ofdm": {"num_subcarriers": 72, "pilot_subcarrier_spacing": 5}})  # 15 pilots
    with pytest.raises(ConfigError, match="divide the 72x14 grid"):
        create(name, config)
    create("interpolatenet", config)  # the resize-based sibling handles it


def test_patch_that_does_not_tile_the_grid_is_a_config_error(default_config):
    with pytest.raises(ConfigError, match=r"patch_size=\[7, 2\].*must divide the 120x14 grid"):
        create("adafortitran", default_config, patch_size=(7, 2))


def test_unknown_model_or_option_is_a_config_error(default_config):
    with pytest.raises(ConfigError, match="unknown; choose one of adafortitran"):
        create("resnet9000", default_config)
    with pytest.raises(ConfigError, match="unknown hyper-parameter"):
        create("linear", default_config, model_dim=3)
    with pytest.raises(ConfigError, match="must divide model_dim"):
        create("fortitran", default_config, model_dim=30, num_heads=4)


def test_wrong_pilot_shape_is_a_config_error(default_config):
    with pytest.raises(ConfigError, match=r"expected \[B, 12, 2\]"):
        create("linear", default_config)(torch.zeros(2, 40, 2, dtype=torch.complex64))


@pytest.mark.parametrize("preset_name,ada,forti", [("default", 987_746, 913_688), ("adafortitran-paper", 1_081_826, 1_007_768)])
def test_parameter_counts_match_the_official_code_with_its_512_row_table(preset_name, ada, forti):
    from wavefront.sim.config import preset

    config = preset(preset_name)
    assert count_parameters(create("adafortitran", config, pos_rows=512)) == ada
    assert count_parameters(create("fortitran", config, pos_rows=512)) == forti
    # Our default sizes the table to the 280 patches: 232 x 128 fewer parameters.
    assert count_parameters(create("adafortitran", config)) == ada - 232 * 128


def test_conditions_steer_adafortitran_only(default_config):
    torch.manual_seed(2)
    pilots = torch.randn(2, 12, 2, dtype=torch.complex64)
    ada = create("adafortitran", default_config, **TINY).eval()
    forti = create("fortitran", default_config, **TINY).eval()
    with torch.no_grad():
        assert not torch.allclose(ada(pilots, meta_for(2, snr_db=0.0)), ada(pilots, meta_for(2, snr_db=20.0)))
        assert torch.equal(forti(pilots, meta_for(2, snr_db=0.0)), forti(pilots, None))
    with pytest.raises(ConfigError, match="needs 'snr_db'"):
        ada(pilots, None)


def test_condition_tokens_are_the_papers_mlp_1_7_42_560(default_config):
    model = create("adafortitran", default_config)
    shapes = [tuple(m.weight.shape) for m in model.conditions.mlps[0] if isinstance(m, torch.nn.Linear)]
    assert shapes == [(7, 1), (42, 7), (560, 42)]
    assert len(model.transformer.encoder.layers) == 6 and model.transformer.linear_in.in_features == 6 + 6


@pytest.mark.parametrize("name", ["default", "adafortitran-paper"])
def test_the_interpolated_grid_models_refine_is_ls_linear_on_kronecker_layouts(name):
    # one home for LS weights (wavefront.sim.interpolation): the learned front end and ls-linear agree,
    # extrapolation beyond the outer pilots included
    from wavefront.estimators.blocks import PilotInterpolator
    from wavefront.sim.config import preset
    from wavefront.sim.estimators import get_classical
    from wavefront.sim.frames import FrameGenerator

    cfg = preset(name)
    fr = FrameGenerator(cfg).generate(3, seed=2, with_data=False)
    interp = PilotInterpolator(cfg.ofdm)
    ls = get_classical("ls-linear", cfg).estimate(fr.pilots_ls, fr.meta)
    assert torch.allclose(torch.complex(interp(fr.pilots_ls.real), interp(fr.pilots_ls.imag)), ls, atol=1e-5)


@pytest.mark.parametrize("name", ["adafortitran", "channelnet", "reesnet", "interpolatenet", "fortitran"])
def test_real_and_imaginary_parts_go_through_the_same_real_network_with_their_frames_conditions(name, default_config):
    """The complex estimate is ``f(Re p, c) + j f(Im p, c)``, one real network ``f`` for both parts and each frame's own
    conditions ``c`` with both: so the imaginary part of the estimate from ``a + j b`` is the real part of the estimate
    from ``b`` alone (frames with different conditions, so pairing a part with another frame's conditions shows)."""
    torch.manual_seed(0)
    model = create(name, default_config).eval()
    pf, pt = default_config.ofdm.pilot_shape
    a, b = torch.randn(2, 3, pf, pt)
    meta = {"snr_db": torch.tensor([0.0, 10.0, 25.0]), "delay_spread_s": torch.tensor([50e-9, 200e-9, 400e-9]),
            "doppler_hz": torch.tensor([10.0, 400.0, 900.0])}
    with torch.no_grad():
        both = model(torch.complex(a, b), meta)
        re_only = model(torch.complex(b, torch.zeros_like(b)), meta)
        swapped = model(torch.complex(b, a), meta)
    tol = 1e-5 * float(both.abs().max())  # float32 convolutions differ slightly with the batch's other members
    torch.testing.assert_close(both.imag, re_only.real, rtol=0, atol=tol)
    torch.testing.assert_close(both.real, swapped.imag, rtol=0, atol=tol)
    assert float((both.real - both.imag).abs().max()) > 100 * tol  # the parts differ well beyond it: a swap shows


def test_residual_blocks_and_the_trunk_keep_their_skips():
    """ReEsNet's block is ``x + conv(relu(conv(x)))`` and its trunk ``h + tail(blocks(h))``, ``h = head(x)``: with the
    residual branches' last convolution zeroed, a block is the identity and the trunk is its head."""
    from wavefront.estimators.blocks import ResidualBlock
    from wavefront.estimators.model_reesnet import ResidualTrunk

    torch.manual_seed(0)
    block = ResidualBlock(4)
    torch.nn.init.zeros_(block.body[2].weight), torch.nn.init.zeros_(block.body[2].bias)
    x = torch.randn(2, 4, 6, 5)
    with torch.no_grad():
        torch.testing.assert_close(block(x), x, rtol=0, atol=0)
    trunk = ResidualTrunk(channels=4, num_blocks=2)
    torch.nn.init.zeros_(trunk.tail.weight), torch.nn.init.zeros_(trunk.tail.bias)
    x1 = torch.randn(2, 1, 6, 5)
    with torch.no_grad():
        torch.testing.assert_close(trunk(x1), trunk.head(x1), rtol=0, atol=0)


def test_channelnets_dncnn_subtracts_the_noise_it_predicts():
    """DnCNN predicts the noise and returns ``x - noise``: with its last convolution zeroed it is the identity, so
    ChannelNet is then SRCNN on the LS-linear grid; and the noise it predicts is subtracted, not added."""
    from wavefront.estimators.model_channelnet import DnCNN

    torch.manual_seed(0)
    dn = DnCNN(depth=4, channels=8).eval()
    x = torch.randn(2, 1, 12, 7)
    with torch.no_grad():
        noise = dn.body(x)
        torch.testing.assert_close(dn(x), x - noise, rtol=0, atol=1e-6)
        assert float(noise.abs().max()) > 1e-3
        torch.nn.init.zeros_(dn.body[-1].weight), torch.nn.init.zeros_(dn.body[-1].bias)
        torch.testing.assert_close(dn(x), x, rtol=0, atol=0)


def test_condition_inputs_are_the_documented_scales_in_float64_one_per_frame():
    from wavefront.estimators.blocks import normalise_conditions

    meta = {"snr_db": torch.tensor([20.0, -5.0], dtype=torch.float64),
            "delay_spread_s": torch.tensor([300e-9, 25e-9], dtype=torch.float64),
            "doppler_hz": torch.tensor([1000.0, 50.0], dtype=torch.float64)}
    got = normalise_conditions(meta, 2, "cpu", dtype=torch.float64)
    want = torch.tensor([[2.0, 3.0, 2.0], [-0.5, 0.25, 0.1]], dtype=torch.float64)  # dB / 10, s / 100 ns, Hz / 500
    torch.testing.assert_close(got, want, rtol=4 * 2.0 ** -52, atol=0)  # divided in float64: 300e-9 / 100e-9 is 3 to 1 ulp
    scalar = normalise_conditions({"snr_db": 10.0, "delay_spread_s": 100e-9, "doppler_hz": 500.0}, 3, "cpu")
    assert scalar.shape == (3, 3) and torch.equal(scalar, torch.ones(3, 3))  # a scalar is every frame's
    with pytest.raises(ConfigError, match=r"meta.delay_spread_s=\(2,\): must hold one value per frame \(3\)"):
        normalise_conditions({**meta, "snr_db": 1.0, "doppler_hz": 1.0}, 3, "cpu")


@pytest.mark.parametrize("name,override,message", [
    ("adafortitran", {"adaptive_token_length": 4}, r"adaptive_token_length=4: must be a multiple of 3"),
    ("fortitran", {"pos_rows": 100}, r"pos_rows=100: the positional table needs at least one row per patch \(280\)"),
    ("fortitran", {"patch_size": [-3, 2]}, r"patch_size=\[-3, 2\]: both sides must be >= 1"),
    ("fortitran", {"patch_size": [0, 2]}, r"patch_size=\[0, 2\]: both sides must be >= 1"),
    ("fortitran", {"num_layers": True}, r"fortitran.num_layers=True: must be an integer"),
    ("fortitran", {"dropout": True}, r"fortitran.dropout=True: must be a number"),
    ("fortitran", {"patch_size": "3x2"}, r"fortitran.patch_size='3x2': must be a list like \[3, 2\]"),
    ("antenna-attention", {"position_bias": 1}, r"antenna-attention.position_bias=1: must be true or false"),
    ("gated-lmmse", {"prior_snr_db": [30.0, 0.0]}, r"gated-lmmse.prior_snr_db=\[30.0, 0.0\]: must be \[low, high\] with low <= high"),
    ("gated-lmmse", {"snr_step_db": 0.0}, r"gated-lmmse.snr_step_db=0.0: must be > 0"),
    ("antenna-attention", {"initial_share": 1.0}, r"antenna-attention.initial_share=1.0: must lie in \(0, 1\)"),
])
def test_hyper_parameters_out_of_their_kind_or_range_are_refused_naming_them(name, override, message, default_config):
    with pytest.raises(ConfigError, match=message):
        create(name, default_config, **override)


def test_an_integer_where_a_number_is_expected_is_taken(default_config):
    assert create("fortitran", default_config, **{**TINY, "dropout": 0}).hparams["dropout"] == 0


def test_flat_pilots_in_position_order_give_the_grids_estimate(default_config):
    # a Kronecker layout's positions run subcarrier-major, so [B, P] is the row-major flattening of [B, P_f, P_t]
    layout = default_config.ofdm.pilot_layout
    subs, syms = default_config.ofdm.pilot_subcarriers, default_config.ofdm.pilot_symbol_indices
    assert [tuple(p) for p in layout.positions] == [(f, t) for f in subs for t in syms]
    torch.manual_seed(0)
    pilots = torch.randn(2, 12, 2, dtype=torch.complex64)
    for name in ("fortitran", "linear"):
        model = create(name, default_config, **(TINY if name == "fortitran" else {})).eval()
        with torch.no_grad():
            assert torch.equal(model(pilots.reshape(2, 24)), model(pilots)), name


def test_eager_runs_uncompiled_and_gives_the_compiled_forward_back(default_config):
    # a stand-in for torch.compile's wrapper (compiling costs seconds): it answers zeros, the real network does not
    model = create("linear", default_config)
    model.__dict__["_compiled_real"] = lambda x, cond: torch.zeros(x.shape[0], 120, 14)
    pilots = torch.ones(1, 12, 2, dtype=torch.complex64)
    with torch.no_grad():
        assert not model(pilots).any()
        with model.eager():
            assert model(pilots).abs().amax() > 0
        assert not model(pilots).any()  # compiled again after the block


def test_a_second_class_under_a_registered_name_is_refused():
    from wavefront.estimators.registry import EstimatorModel, model_class, register_model

    with pytest.raises(ValueError, match="model name 'linear' is registered twice"):
        register_model("linear")(type("Impostor", (EstimatorModel,), {}))
    assert model_class("linear").__name__ != "Impostor"
    register_model("linear")(model_class("linear"))  # the same class again is harmless
