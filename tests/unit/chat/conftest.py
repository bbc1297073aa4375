"""The chat unit tests read the line corpus through `tests.fakes`."""

from __future__ import annotations

import sys
from pathlib import Path

# `tests.fakes` is imported as a package from the repository root; pytest only puts the
# conftest directories on sys.path (no `pythonpath` setting in pyproject).
_REPO_ROOT = str(Path(__file__).resolve().parents[3])
if _REPO_ROOT not in sys.path:
    sys.path.insert(0, _REPO_ROOT)
