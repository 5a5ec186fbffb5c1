"""Data: dataset builders, the synthetic domains and the grain input pipeline.

The tensorflow-datasets builders load on demand (importing them registers them with tfds):
`from mopeft_jax.data import mess` (the MESS-20 datasets, `mess.build`, `mess.data_source`)
and `from mopeft_jax.data import folder` (a folder of images, label PNGs and a class list).
"""

from mopeft_jax.data.synthetic import (
    DOMAINS,
    IGNORE_LABEL,
    SOURCE_DOMAIN,
    TARGET_DOMAINS,
    DomainSpec,
    SyntheticSegmentation,
    make_example,
)

__all__ = [
    "DOMAINS",
    "DomainSpec",
    "IGNORE_LABEL",
    "SOURCE_DOMAIN",
    "SyntheticSegmentation",
    "TARGET_DOMAINS",
    "make_example",
]
