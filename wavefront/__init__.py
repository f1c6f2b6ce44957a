"""wavefront: simulate waves, sense them and learn to estimate from them.

Subpackages
-----------
- :mod:`wavefront.sim`: OFDM physical layer over 3GPP fading, classical estimators, the MMSE bound, sweeps.
- :mod:`wavefront.datasets`: sharded HDF5 generation, torch datasets, ``.mat`` interop.
- :mod:`wavefront.estimators`: learned estimators behind one registry, and the training loop.
- :mod:`wavefront.imaging`: differentiable sensor layouts, wave-equation front end, compressed convolutions.
"""
from wavefront.errors import ConfigError

__version__ = "0.1.0"
__all__ = ["ConfigError", "__version__"]
