"""The README's settings table names every variable the code reads, and nothing it does not."""

from __future__ import annotations

import re
from pathlib import Path

import imagedepot

PACKAGE = Path(imagedepot.__file__).parent
README = PACKAGE.parent / "README.md"
VARIABLE = re.compile(r"IMAGEDEPOT_[A-Z0-9_]*[A-Z0-9]")
SUFFIX_IN_TUPLE = re.compile(r'\(\s*"[a-z0-9_]+",\s*"([A-Z][A-Z0-9_]+)"')
"""config.from_env names most variables by suffix: ("port", "PORT", int)."""


def variables_read() -> set[str]:
    names: set[str] = set()
    for source in PACKAGE.rglob("*.py"):
        text = source.read_text()
        names.update(VARIABLE.findall(text))
        if source.name == "config.py":
            names.update(f"IMAGEDEPOT_{suffix}" for suffix in SUFFIX_IN_TUPLE.findall(text))
    return names


def variables_documented() -> set[str]:
    text = README.read_text()
    settings = text[text.index("## Settings") : text.index("\n## ", text.index("## Settings"))]
    return set(VARIABLE.findall(settings))


def test_every_variable_the_code_reads_is_in_the_settings_section() -> None:
    read = variables_read()
    assert "IMAGEDEPOT_PORT" in read  # the suffix form is understood
    assert read - variables_documented() == set()


def test_the_settings_section_names_no_variable_the_code_does_not_read() -> None:
    assert variables_documented() - variables_read() == set()
