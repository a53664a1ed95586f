"""The site under test: every conformance test runs against the cloud and the edge node;
modules that set `ON_POSTGRES = True` also against the cloud on PostgreSQL."""

import pytest

from tests.support.nightscout import cloud_site, edge_site


def pytest_generate_tests(metafunc):
    if "ns" in metafunc.fixturenames:
        kinds = ["cloud", "edge"]
        if getattr(metafunc.module, "ON_POSTGRES", False):
            kinds.append("cloud-pg")
        metafunc.parametrize("ns", kinds, indirect=True)


@pytest.fixture
def ns(request, tmp_path):
    """A served Nightscout site (see tests/support/nightscout.py)."""
    if request.param == "edge":
        with edge_site(tmp_path) as site:
            yield site
        return
    url = request.getfixturevalue("postgres_url") if request.param == "cloud-pg" else None
    with cloud_site(tmp_path, url) as site:
        yield site


@pytest.fixture
def cloud_ns(tmp_path):
    """The cloud only, for what only a multi-tenant site has (tenants, member tokens)."""
    with cloud_site(tmp_path) as site:
        yield site
