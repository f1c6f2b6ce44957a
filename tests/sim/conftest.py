import pytest


@pytest.fixture
def sweep_titles(monkeypatch):
    """Records each sweep plot's first axes title and its extent: returns ``(spans, titles)``, filled as plots are
    saved, ``spans`` holding ``(x0, x1, figure width)`` in pixels after ``tight_layout``."""
    import wavefront.sim.sweep as sweep_module
    from wavefront.utils import finish_figure

    spans, titles = [], []

    def measured(fig, path, dpi=120):
        fig.tight_layout()
        box = fig.axes[0].title.get_window_extent(fig.canvas.get_renderer())
        spans.append((box.x0, box.x1, fig.bbox.width))
        titles.append(fig.axes[0].get_title())
        return finish_figure(fig, path, dpi)

    monkeypatch.setattr(sweep_module, "finish_figure", measured)
    return spans, titles
