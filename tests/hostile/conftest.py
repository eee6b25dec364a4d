"""The hostile-input suite's assets folder, built once per session (hostile_helpers.py)."""

import pytest
from hostile_helpers import build_assets


@pytest.fixture(scope="session")
def assets(tmp_path_factory):
    return build_assets(tmp_path_factory.mktemp("hostile-assets"))
