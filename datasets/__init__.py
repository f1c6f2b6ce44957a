"""wavefront.datasets: sharded HDF5 datasets of OFDM frames, torch datasets, ``.mat`` interop.

- :func:`generate_dataset` / ``wavefront generate``: deterministic, atomic, resumable shards.
- :class:`H5FrameDataset`: map-style dataset over shards; :class:`OnTheFlyDataset`: frames drawn on demand;
  both carry the antenna and user axes for MIMO, and :func:`pairs` views those as per-(antenna, user) SISO samples.
- ``wavefront generate-suite``: the AdaFortiTran paper's test sweeps.
- ``wavefront export-mat`` / ``import-mat``: the AdaFortiTran reference ``.mat`` layout.
"""
from wavefront.datasets.generate import DatasetSpec, generate_dataset
from wavefront.datasets.shards import ShardError
from wavefront.datasets.torch_datasets import H5FrameDataset, OnTheFlyDataset, pairs

__all__ = ["DatasetSpec", "generate_dataset", "H5FrameDataset", "OnTheFlyDataset", "ShardError", "pairs"]
