"""Data: one dataset registry, the synthetic domains, dataset builders and the grain pipeline.

`load_dataset("kind:name", split)` gives any dataset (`synthetic:`, `mess:`, `folder:`) as a
random-access source with its `DatasetInfo` (see `mopeft_jax.data.registry`). The
tensorflow-datasets builders load on demand (importing them registers them with tfds):
`from mopeft_jax.data import mess` (the MESS-20 datasets, `mess.build`) and
`from mopeft_jax.data import folder` (a folder of images, label PNGs and a class list,
`folder.build_folder`).

This package imports neither the model nor the evaluation: numpy, PIL, scipy, grain and tfds.
"""

from mopeft_jax.data.registry import (
    IGNORE_LABEL,
    KINDS,
    Dataset,
    DatasetError,
    DatasetInfo,
    load_dataset,
)
from mopeft_jax.data.synthetic import (
    DOMAINS,
    SOURCE_DOMAIN,
    TARGET_DOMAINS,
    SyntheticSegmentation,
    make_example,
)

__all__ = [
    "DOMAINS",
    "Dataset",
    "DatasetError",
    "DatasetInfo",
    "IGNORE_LABEL",
    "KINDS",
    "SOURCE_DOMAIN",
    "SyntheticSegmentation",
    "TARGET_DOMAINS",
    "load_dataset",
    "make_example",
]
