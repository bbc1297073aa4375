"""Every environment variable the code reads is documented in docs/CONFIG.md."""

from __future__ import annotations

import importlib
from pathlib import Path

from pydantic import AliasChoices

import reelhouse
from reelhouse.config import SettingsSection

CONFIG_DOC = Path(__file__).resolve().parents[3] / "docs" / "CONFIG.md"


def _all_sections() -> set[type]:
    # Files, not pkgutil: namespace packages (no __init__.py) would be skipped by a walk.
    root = Path(reelhouse.__file__).parent
    for path in root.rglob("*.py"):
        if path.stem in ("settings", "config"):
            relative = path.relative_to(root.parent).with_suffix("")
            importlib.import_module(".".join(relative.parts))
    found, stack = set(), [SettingsSection]
    while stack:
        for sub in stack.pop().__subclasses__():
            found.add(sub)
            stack.append(sub)
    return found


def test_every_variable_is_documented():
    doc = CONFIG_DOC.read_text()
    names = set()
    for section in _all_sections():
        for field in section.model_fields.values():
            alias = field.validation_alias
            if isinstance(alias, AliasChoices):
                names.update(str(choice) for choice in alias.choices)
            elif alias:
                names.add(str(alias))
    assert len(names) > 30
    missing = sorted(name for name in names if f"`{name}`" not in doc)
    assert missing == [], f"undocumented variables: {missing}"
