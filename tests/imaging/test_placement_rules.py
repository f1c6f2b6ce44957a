"""Receiver placement's rules and losses on hand-made cells and traces (no wave solver): the spacing rule at its
boundary, the walk along a line, and the localisation loss's closed form."""
from __future__ import annotations

import pytest
import torch

from wavefront.errors import ConfigError
from wavefront.imaging.placement import check_layout, localisation_loss, pack, principal_order, spaced_from


def _line(n=10, col=None):
    """Cells (0, 0) ... (0, n - 1) along a row, or (0, col) ... (n - 1, col) down a column."""
    i = torch.arange(n)
    return torch.stack([torch.zeros_like(i), i], 1) if col is None else torch.stack([i, torch.full_like(i, col)], 1)


def test_receivers_exactly_min_spacing_apart_are_allowed_and_closer_ones_are_not():
    # "no two receivers are closer than min_spacing": a distance equal to it is allowed, everywhere the rule is applied
    cells = _line(10)
    assert pack(cells, torch.arange(10), 3.0) == [0, 3, 6, 9]  # the largest spaced set on the line, in order
    ok = spaced_from(cells, torch.tensor([0]), 3.0)
    assert ok.tolist() == [False, False, False] + [True] * 7
    check_layout(cells, [0, 3, 6, 9], 3.0)
    with pytest.raises(ConfigError, match=r"2 cells apart, closer than min_spacing=3"):
        check_layout(cells, [0, 2, 6], 3.0)
    diagonal = torch.tensor([[0, 0], [3, 4], [6, 8]])  # 5 cells apart (Euclidean)
    check_layout(diagonal, [0, 1, 2], 5.0)
    with pytest.raises(ConfigError, match="closer than min_spacing"):
        check_layout(diagonal, [0, 1, 2], 5.01)


@pytest.mark.parametrize("cells", [_line(7), _line(7, col=4), torch.tensor([[6 - k, k] for k in range(7)])],
                         ids=["row", "column", "anti-diagonal"])
def test_principal_order_walks_a_line_with_its_largest_coordinate_growing(cells):
    # the axis's sign is fixed so that its largest component is positive: a row is walked left to right, a column
    # top to bottom, and the anti-diagonal (equal components, the first one largest by argmax) by growing row
    order = principal_order(cells)
    walked = cells[order]
    steps = walked[1:] - walked[:-1]
    axis = steps[0]
    assert bool((steps == axis).all()), walked.tolist()  # one direction, no jumps
    assert int(axis[axis.abs().argmax()]) > 0


def test_localisation_loss_is_minus_the_worst_separated_pair_over_the_mean_shot_energy():
    # three shots, one receiver, two samples: d0 = (0, 0), d1 = (1, 0), d2 = (3, 0); squared distances 1, 9, 4;
    # mean shot energy (0 + 1 + 9) / 3: the loss is -1 / (10 / 3) = -0.3
    data = torch.tensor([[0.0, 0.0], [1.0, 0.0], [3.0, 0.0]]).reshape(3, 1, 2)
    assert float(localisation_loss(data, {})) == pytest.approx(-0.3, rel=1e-12)
    with pytest.raises(ConfigError, match="at least two source positions"):
        localisation_loss(data[:1], {})
