"""What several test files share: a small Shakespeare-like text to train on."""

from __future__ import annotations

from pathlib import Path

import pytest

TEXT = ("First Citizen:\nBefore we proceed any further, hear me speak.\n\n"
        "All:\nSpeak, speak.\n\nFirst Citizen:\nYou are all resolved rather to die than "
        "to famish?\n\n")


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    """``TEXT`` 60 times in ``tmp_path / "tiny.txt"``: enough for a few tiny training steps."""
    p = tmp_path / "tiny.txt"
    p.write_text(TEXT * 60, encoding="utf-8")
    return p
