"""Wave front-end geometry at its edges: a disc inclusion's boundary cells, and a recording region that leaves the
model on one side only (the padding shifts rows and columns by different amounts)."""
import torch

from wavefront.imaging.wave import LearnableReceivers, Region, WaveFrontEnd, add_inclusion, layered_velocity, propagate, ricker


def test_an_inclusion_holds_every_cell_within_its_radius_the_rim_included():
    v = add_inclusion(torch.full((11, 13), 2000.0), (5.0, 6.0), 2.0, 3000.0)
    # lattice points with dy^2 + dx^2 <= 4: the centre, 4 at distance 1, 4 at sqrt(2), 4 at distance 2
    assert int((v == 3000.0).sum()) == 13
    assert float(v[5, 8]) == 3000.0 and float(v[3, 6]) == 3000.0 and float(v[4, 8]) == 2000.0  # (0, 2) in, (1, 2) out
    assert int((add_inclusion(torch.full((11, 13), 2000.0), (5.0, 6.0), 1.0, 3000.0) == 3000.0).sum()) == 5


def test_a_region_past_the_top_edge_only_records_the_unpadded_models_traces():
    """The sinc support of receivers on row 0 reaches 3 rows above the model but no column outside it: the model is
    padded by 3 rows only and the source moves 3 rows down with it. Bounds as the corner test's (4x measured)."""
    v = layered_velocity((30, 40), [12, 22], [2000.0, 3000.0, 3500.0])
    rx = LearnableReceivers(3, Region(0, 5, 10, 20), (30, 40),
                            initial_positions=torch.tensor([[0.0, 10.0], [2.0, 15.0], [4.0, 19.0]]))
    assert rx.recording == Region(-3, 8, 7, 23)
    src, amp = torch.tensor([[[1, 30]]]), ricker(15.0, 400, 0.001).view(1, 1, -1)
    with torch.no_grad():
        data = WaveFrontEnd(rx, 10.0, 0.001, 15.0)(v, amp, src)
    ref = propagate(v, 10.0, 0.001, amp, src, torch.tensor([[[0, 10], [2, 15], [4, 19]]]), freq_hz=15.0)
    err = [float((data[0, k] - ref[0, k]).norm() / ref[0, k].norm()) for k in range(3)]
    assert err[0] < 2e-3 and err[1] < 2e-3 and err[2] < 2e-3, err


def test_an_empty_recording_region_is_refused_before_any_propagation():
    import pytest

    from wavefront.errors import ConfigError
    from wavefront.imaging.wave import record_region

    v = torch.full((10, 10), 2000.0)
    amp, src = ricker(15.0, 20, 0.001).view(1, 1, -1), torch.tensor([[[5, 5]]])
    for region in (Region(3, 3, 2, 6), Region(2, 6, 4, 4)):
        with pytest.raises(ConfigError, match="region"):
            record_region(v, 10.0, 0.001, amp, src, region)
