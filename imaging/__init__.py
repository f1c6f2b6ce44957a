"""wavefront.imaging: differentiable sensor layouts, a wave-equation front end, compressed convolutions.

- :mod:`~wavefront.imaging.layouts`: rectangular and curvilinear layouts, :class:`SensorSimulator`.
- :mod:`~wavefront.imaging.wave`: deepwave propagation, receivers at learnable positions,
  Ricker sources, velocity models, CFL and dispersion checks.
- :mod:`~wavefront.imaging.compressed`: rank-R one-way factorised convolutions, the wave surrogate.
- :mod:`~wavefront.imaging.tasks` and :mod:`~wavefront.imaging.codesign`: co-design scenes and training.
"""
