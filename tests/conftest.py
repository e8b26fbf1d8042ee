"""Shared pytest options and fixtures: `--update-gold` rewrites the golden files under tests/gold/."""
from __future__ import annotations

from pathlib import Path

import pytest

GOLD = Path(__file__).parent / "gold"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--update-gold", action="store_true", help="rewrite tests/gold/* from the current output")


@pytest.fixture
def gold(request: pytest.FixtureRequest):
    """Compare text with tests/gold/<name>; with --update-gold, write it instead."""
    update = request.config.getoption("--update-gold")

    def check(name: str, text: str) -> None:
        path = GOLD / name
        if update:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8", newline="\n")
            return
        assert path.is_file(), f"no golden file {path}; run pytest --update-gold and review it"
        assert text == path.read_text(encoding="utf-8"), f"{name} differs from its golden file; review, then pytest --update-gold"

    return check
