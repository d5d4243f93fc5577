"""SwanLab, or a stand-in that logs nowhere where it is not installed (a bare GPU server with --swanlab-mode
disabled). Every module logs through `from cats_dogs.tracking import swanlab`."""

from __future__ import annotations

import sys
from types import SimpleNamespace

try:
    import swanlab
except ModuleNotFoundError:  # a bare GPU server: --swanlab-mode disabled trains without SwanLab, logging nowhere
    swanlab = SimpleNamespace(init=lambda mode, **_: mode == "disabled" or sys.exit("SwanLab is not installed: pip install "
                              "swanlab, or pass --swanlab-mode disabled"), log=lambda *_, **__: None, finish=lambda: None,
                              Image=lambda *_, **__: None)
