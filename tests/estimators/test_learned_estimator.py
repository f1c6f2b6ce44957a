"""The estimator wrapper of a trained model: chunked inference gives each frame its own conditions."""
import torch

from wavefront.estimators import create
from wavefront.estimators.estimator import LearnedEstimator

from est_helpers import TINY, meta_for


def test_chunks_of_any_size_give_the_unchunked_estimate_frame_by_frame(default_config):
    torch.manual_seed(0)
    model = create("adafortitran", default_config, **TINY)  # condition-aware: each chunk needs its own frames' meta
    pf, pt = model.pilot_shape
    pilots = torch.randn(7, pf, pt, dtype=torch.complex64)
    meta = meta_for(7, snr_db=torch.linspace(0, 25, 7), doppler_hz=torch.linspace(50, 1000, 7))
    whole = LearnedEstimator(model, max_batch=4096).estimate(pilots, meta)
    assert whole.shape == (7, *default_config.ofdm.grid_shape) and whole.dtype == torch.complex64
    for size in (1, 3, 6):
        torch.testing.assert_close(LearnedEstimator(model, max_batch=size).estimate(pilots, meta), whole,
                                   rtol=1e-5, atol=1e-6)  # float32, other batch shapes: not bit-identical
    # the conditions matter: one frame's estimate moves when only its own SNR does
    other = {**meta, "snr_db": meta["snr_db"].clone()}
    other["snr_db"][4] = 25.0 - other["snr_db"][4]
    moved = LearnedEstimator(model, max_batch=3).estimate(pilots, other)
    assert not torch.allclose(moved[4], whole[4]) and torch.allclose(moved[:4], whole[:4], rtol=1e-5, atol=1e-6)
