"""RedisCrlPublications against a real Redis: the last publish, and the refresh debounce."""

from __future__ import annotations

import time

import pytest

from orchestrator.adapters.redis_crl import RedisCrlPublications
from orchestrator.bootstrap import Container

pytestmark = pytest.mark.integration


def test_the_last_publish_is_read_back(container: Container) -> None:
    """None before the first publish; then the digest and time last recorded."""
    publications = RedisCrlPublications(container.redis)
    assert publications.last_published() is None
    publications.record_published("ab" * 32, 1_700_000_000.5)
    publications.record_published("cd" * 32, 1_700_000_100.25)
    assert publications.last_published() == ("cd" * 32, 1_700_000_100.25)


def test_one_refresh_is_claimed_per_window(container: Container) -> None:
    """The first caller claims the window; others within it do not; after it, one may again."""
    publications = RedisCrlPublications(container.redis)
    assert publications.claim_refresh(300)
    assert not publications.claim_refresh(300)
    time.sleep(0.4)
    assert publications.claim_refresh(300)
