"""The site under test: every conformance test runs against the cloud and the edge node."""

import pytest

from tests.support.nightscout import cloud_site, edge_site


@pytest.fixture(params=["cloud", "edge"])
def ns(request, tmp_path):
    """A served Nightscout site (see tests/support/nightscout.py)."""
    make = cloud_site if request.param == "cloud" else edge_site
    with make(tmp_path) as site:
        yield site


@pytest.fixture
def cloud_ns(tmp_path):
    """The cloud only, for what only a multi-tenant site has (tenants, member tokens)."""
    with cloud_site(tmp_path) as site:
        yield site


@pytest.fixture
def cloud_pg(tmp_path, postgres_url):
    """The cloud on PostgreSQL."""
    with cloud_site(tmp_path, postgres_url) as site:
        yield site
