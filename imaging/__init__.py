"""wavefront.imaging: differentiable sensor layouts, a wave-equation front end, compressed convolutions.

- :mod:`~wavefront.imaging.layouts`: rectangular and curvilinear layouts, :class:`SensorSimulator`.
- :mod:`~wavefront.imaging.wave`: deepwave propagation, receivers at learnable positions,
  Ricker sources, velocity models, CFL and dispersion checks.
- :mod:`~wavefront.imaging.compressed`: rank-R one-way factorised convolutions, the wave surrogate.
- :mod:`~wavefront.imaging.tasks` and :mod:`~wavefront.imaging.codesign`: co-design scenes and training.
- :mod:`~wavefront.imaging.scene` and :mod:`~wavefront.imaging.placement`: the user's own scene
  (files in, record once on a candidate mask) and K-of-N receiver selection under a minimum spacing.
"""
