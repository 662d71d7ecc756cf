import os
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # `tests.support` importable however pytest is started


@pytest.fixture(scope="session")
def pki(tmp_path_factory):
    from tests.support.certs import make_pki

    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="session")
def curl():
    path = shutil.which("curl")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("curl is required in CI (.ci/run installs it)")
        pytest.skip("curl is not installed")
    return path
