"""Load a repository script (a notebook generator) as a module, for the tests that compare its
output with the files it wrote. Not a test file."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType


def load_script(path: Path) -> ModuleType:
    """The script at ``path``, executed as a module named after its file (its ``__main__`` block
    does not run)."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
