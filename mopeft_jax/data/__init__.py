"""Data: dataset builders, the synthetic domains and the grain input pipeline."""

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
