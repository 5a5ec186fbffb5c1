"""Shared test setup.

`segment_anything` imports torchvision at package import; where torchvision is not installed,
`weights_convert.official` registers empty stand-ins so that the official model code imports
(it does not import on the CPU machines this project targets).
"""

import os
import shutil
import tempfile

import pytest

import weights_convert.official  # noqa: F401  (registers the torchvision stand-in)
from mopeft_jax.experiment.cli import enable_compilation_cache

_CACHE_ENV = "MOPEFT_JAX_CACHE_DIR"
_CACHE_KEY = pytest.StashKey[tuple]()


def pytest_configure(config):
    """One persistent compilation cache for the whole run, shared by this process and the
    commands the tests start (they read $MOPEFT_JAX_CACHE_DIR).

    Many tests build the same tiny-SAM programs: each `trainer.setup` jits a new train step,
    which XLA:CPU takes 10-30 s to compile; from the cache it loads in under a second. The
    workers of a parallel run (pytest-xdist) share the controller's cache.
    """
    if hasattr(config, "workerinput"):  # a pytest-xdist worker: the controller's cache
        enable_compilation_cache(os.environ[_CACHE_ENV])
        return
    directory = tempfile.mkdtemp(prefix="mopeft_jax_test_compilation_cache_")
    config.stash[_CACHE_KEY] = (directory, os.environ.get(_CACHE_ENV))
    os.environ[_CACHE_ENV] = directory
    enable_compilation_cache(directory)


def pytest_unconfigure(config):
    directory, previous = config.stash.get(_CACHE_KEY, (None, None))
    if directory is None:
        return
    shutil.rmtree(directory, ignore_errors=True)
    if previous is None:
        os.environ.pop(_CACHE_ENV, None)
    else:
        os.environ[_CACHE_ENV] = previous
