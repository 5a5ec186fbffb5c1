"""Shared test setup.

`segment_anything` imports torchvision at package import; where torchvision is not installed,
`weights_convert.official` registers empty stand-ins so that the official model code imports
(it does not import on the CPU machines this project targets).
"""

import weights_convert.official  # noqa: F401  (registers the torchvision stand-in)
