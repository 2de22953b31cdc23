"""What `streamrec promote` refuses, from a version's status (no services needed)."""

from __future__ import annotations

from streamrec.version_status import VersionStatus
from streamrec.version_status import not_promotable as _not_promotable


def test_a_live_version_within_the_bound_is_promotable():
    assert _not_promotable(VersionStatus("v2", True, 1, 1000), max_lag=1000) is None


def test_a_version_without_a_worker_or_behind_the_bound_is_not():
    assert "no worker consumes for version v2" in _not_promotable(
        VersionStatus("v2", False, 0, 0), max_lag=1000)
    assert _not_promotable(VersionStatus("v2", True, 2, 1001), max_lag=1000) == (
        "version v2 is 1,001 events behind the events topic "
        "(at most STREAMREC_PROMOTE_MAX_LAG=1,000)")
    assert "status is unknown" in _not_promotable(
        VersionStatus("v2", None, 0, None, "Kafka: timeout"), max_lag=1000)


def test_a_status_reads_as_one_phrase():
    assert VersionStatus("v2", True, 2, 0).describe() == "live (2 workers), 0 behind"
    assert VersionStatus("v2", False, 0, 312).describe() == "NOT LIVE, 312 behind"
