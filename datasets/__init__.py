"""wavefront.datasets: sharded HDF5 datasets of OFDM frames, torch datasets, ``.mat`` interop.

- :func:`generate_dataset` / ``wavefront generate``: deterministic, atomic, resumable shards.
- :class:`H5FrameDataset`: map-style dataset over shards; :class:`OnTheFlyDataset`: frames drawn on demand.
- ``wavefront generate-suite``: the AdaFortiTran paper's test sweeps.
- ``wavefront export-mat`` / ``import-mat``: the AdaFortiTran reference ``.mat`` layout.
"""
from wavefront.datasets.generate import DatasetSpec, generate_dataset
from wavefront.datasets.shards import ShardError
from wavefront.datasets.torch_datasets import H5FrameDataset, OnTheFlyDataset

__all__ = ["DatasetSpec", "generate_dataset", "H5FrameDataset", "OnTheFlyDataset", "ShardError"]
