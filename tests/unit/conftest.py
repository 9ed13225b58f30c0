"""The unit layer: pure logic, no PostgreSQL. `./dev test tests/unit` runs it alone in seconds.

Every test collected here is marked `unit`, and the fixtures that start or reach a server fail
here instead of starting one, so a test that needs a database cannot land in this layer.
"""

from __future__ import annotations

from pathlib import Path
from typing import NoReturn

import pytest

HERE = Path(__file__).parent
NO_SERVER = "tests/unit runs without PostgreSQL; a test that needs a database belongs in tests/"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.unit)


@pytest.fixture(scope="session")
def chat_db_server() -> NoReturn:
    pytest.fail(NO_SERVER)


@pytest.fixture(scope="session")
def chat_db_target() -> NoReturn:
    pytest.fail(NO_SERVER)
