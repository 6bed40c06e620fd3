"""Rules about text that every part shares: a string stored or echoed must be valid Unicode
(JSON lets a lone surrogate through as `\\udfff`, which no encoder or database accepts)."""

from __future__ import annotations


def is_unicode(text: str) -> bool:
    """False for a string holding a lone surrogate, which UTF-8 cannot encode."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
