import pytest

from tests.support.proxy import Proxy
from tests.support.upstream import Upstream

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def upstream(pki):
    with Upstream(pki) as up:
        yield up


@pytest.fixture(scope="module")
def plain_upstream():
    with Upstream(None) as up:
        yield up


@pytest.fixture
def make_proxy(tmp_path):
    started: list[Proxy] = []

    def make(rules: str, **kw) -> Proxy:
        p = Proxy(tmp_path / f"proxy{len(started)}", rules, **kw).start()
        started.append(p)
        return p

    yield make
    for p in started:
        p.stop()
