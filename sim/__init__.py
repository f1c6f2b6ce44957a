"""wavefront.sim: OFDM over 3GPP TDL fading, classical estimators, the MMSE bound, sweeps.

- :mod:`~wavefront.sim.config`: ``SystemConfig`` (``OFDMConfig`` grid + ``ChannelConfig``), presets.
- :mod:`~wavefront.sim.profiles`: TDL/CDL profiles (Sionna tables) and the grid's axes.
- :mod:`~wavefront.sim.statistics`: closed-form correlations, covariance terms, ICI power.
- :mod:`~wavefront.sim.fading`: per-frame fading realizations (sum of sinusoids) and the time-domain (ICI) path.
- :mod:`~wavefront.sim.pilots`: ``PilotLayout`` (any set of pilot positions), presets (NR DM-RS, lattices), ``--pilots`` files.
- :mod:`~wavefront.sim.pilot_design`: the bound of any layout, fast; the local search behind ``wavefront pilots optimise``.
- :mod:`~wavefront.sim.frames`: ``FrameGenerator`` -> ``Frames`` (true channel, pilots, data, metadata).
- :mod:`~wavefront.sim.estimators`: the ``estimate(pilots, meta)`` interface, LS interpolators.
- :mod:`~wavefront.sim.lmmse`: joint 2-D LMMSE (genie, robust) and ``genie_mse``, the MMSE bound.
- :mod:`~wavefront.sim.conditions`: conditions estimated from the pilots, ``lmmse-estimated``, ``mmse-bayes``.
- :mod:`~wavefront.sim.link`: equalisation, QAM demapping (Sionna), BER closed forms.
- :mod:`~wavefront.sim.sweep`: the Monte-Carlo sweep engine behind ``wavefront sweep``.
"""
from wavefront.sim.config import ChannelConfig, OFDMConfig, SystemConfig, preset
from wavefront.sim.estimators import get_classical
from wavefront.sim.frames import FrameGenerator, Frames
from wavefront.sim.lmmse import genie_mse
from wavefront.sim.pilots import PilotLayout, apply_pilots

__all__ = ["ChannelConfig", "OFDMConfig", "SystemConfig", "preset", "FrameGenerator", "Frames",
           "get_classical", "genie_mse", "PilotLayout", "apply_pilots"]
