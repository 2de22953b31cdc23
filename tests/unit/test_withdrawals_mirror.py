from __future__ import annotations

import threading

from recommender.availability import Withdrawals, WithdrawalsMirror


def test_a_copy_answers_for_its_version_only():
    mirror = WithdrawalsMirror(max_entries=10)
    assert mirror.current("v1") is None and mirror.claim_reload("v1")
    copy = mirror.reloaded("v1", {"tea": 0.0, "cup": 50.0})
    assert copy.withdrawn(["tea", "cup", "jam"], now=49.0) == {"tea"}
    assert copy.withdrawn(["tea", "cup", "jam"], now=50.0) == {"tea", "cup"}  # its time came
    assert mirror.current("v1") is copy
    assert mirror.current("v2") is None and mirror.current(None) is None


def test_the_copy_never_changes_once_handed_out():
    times = {"tea": 0.0}
    mirror = WithdrawalsMirror(max_entries=10)
    copy = mirror.reloaded("v1", times)
    times["cup"] = 0.0
    mirror.reloaded("v2", {})
    assert copy.withdrawn(["tea", "cup"], 1.0) == {"tea"}


def test_reloads_cost_no_more_than_the_reads_they_save():
    """A set of 2,500 entries is reloaded at most once in 1 + 2,500 // 1,000 requests; when
    the version moves on every request (no copy ever serves), the spacing doubles with
    each reload, and a copy that serves again resets it."""
    mirror = WithdrawalsMirror(max_entries=10_000, entries_per_request=1000)
    times = {f"i{k}": 0.0 for k in range(2500)}

    def request(version: str) -> bool:
        """One request; whether it reloaded."""
        if mirror.current(version) is None and mirror.claim_reload(version):
            mirror.reloaded(version, times)
            return True
        return False

    assert [n for n in range(40) if request(f"v{n}")] == [0, 3, 9, 21]  # spaced 3, 6, 12
    assert [n for n in range(40, 47) if request("same")] == [45]  # 24 after the last one
    assert mirror.current("same") is not None  # it serves: the spacing is 3 again
    assert [n for n in range(48, 52) if request(f"w{n}")] == [48, 51]
    small = WithdrawalsMirror(max_entries=10_000)
    for n in range(5):  # a small set: any request may reload while its copies serve
        assert small.current(f"v{n}") is None and small.claim_reload(f"v{n}")
        small.reloaded(f"v{n}", {"tea": 0.0})
        assert small.current(f"v{n}") is not None


def test_too_large_or_unversioned_sets_are_not_copied():
    mirror = WithdrawalsMirror(max_entries=2, entries_per_request=1)
    assert mirror.reloaded("v1", None, size=3) is None  # counted, not read
    assert mirror.current("v1") is None and not mirror.claim_reload("v1")
    # Known too large: the next attempt waits 1 + 2 // 1 requests, not one per request.
    assert mirror.current("v2") is None and not mirror.claim_reload("v2")
    assert mirror.current("v2") is None and mirror.claim_reload("v2")
    # A set stored without a version: only an empty one can be trusted.
    assert mirror.reloaded(None, {"tea": 0.0}) is None and not mirror.claim_reload(None)
    assert mirror.reloaded(None, {}).times == {}
    assert WithdrawalsMirror(max_entries=0).claim_reload("v1") is False  # disabled


def test_one_thread_reloads_at_a_time():
    mirror = WithdrawalsMirror(max_entries=10)
    mirror.current("v1")
    claims = []
    threads = [threading.Thread(target=lambda: claims.append(mirror.claim_reload("v1")))
               for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(claims) == [False] * 7 + [True]


def test_an_empty_set_withdraws_nothing():
    assert Withdrawals({}).withdrawn(["tea"], 1e12) == set()
