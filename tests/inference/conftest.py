"""The official segment_anything runs here with plain-torch stand-ins for torchvision."""

import pytest
from official_reference import patch_torchvision


@pytest.fixture(autouse=True, scope="module")
def _official_without_torchvision():
    with pytest.MonkeyPatch.context() as patch:
        patch_torchvision(patch)
        yield
