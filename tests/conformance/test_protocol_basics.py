"""Store protocol: create-or-return, what a commit writes, bytes that come back unchanged, the
incremental reads (`records` and `signals` after a point), `load`, `delete` and `purge`.

Runs on every store through the `store` fixture (conftest.py), one synchronous face on each.
"""

from __future__ import annotations

from tideflow.stores.base import (
    AsyncStore,
    InstanceMeta,
    ListQuery,
    Loaded,
    Store,
    StoredInstance,
)

from .facade import SyncFacade
from .protocol import (
    AWKWARD,
    FINISHED,
    T0,
    UNFINISHED,
    blob,
    commit,
    finish,
    loaded,
    meta,
    new,
)


def test_the_store_satisfies_its_protocol(store: SyncFacade) -> None:
    assert isinstance(store.inner, AsyncStore if store.is_async else Store)
    name = store.describe()
    assert isinstance(name, str) and name


def test_create_writes_version_1_and_returns_none(store: SyncFacade) -> None:
    header, first = new(store, "a", records=(blob(), blob()))
    stored = store.get("a")
    assert stored == StoredInstance(meta("a"), header)
    assert type(stored) is StoredInstance and type(stored.meta) is InstanceMeta
    assert loaded(store, "a") == Loaded(meta("a"), header, first, [])


def test_create_of_an_existing_id_returns_it_unchanged(store: SyncFacade) -> None:
    new(store, "a")
    store.commit(commit("a", 1, "suspended", due_at=T0 + 9, records=[blob()]))
    store.send_signal("a", blob(), T0 + 2)
    before = loaded(store, "a")
    other = InstanceMeta(
        "a", "other", "plan-z", "pending", 1, T0 + 5, T0 + 5, None, None, None, None
    )
    again = store.create(other, blob(), [blob()])
    assert again == StoredInstance(before.meta, before.header)
    assert type(again) is StoredInstance
    assert loaded(store, "a") == before


def test_create_sets_version_1_whatever_it_is_given(store: SyncFacade) -> None:
    store.create(meta("v")._replace(version=7), b"h", [])
    assert loaded(store, "v").meta.version == 1


def test_an_unknown_id_reads_as_nothing(store: SyncFacade) -> None:
    new(store, "known")
    assert store.get("ghost") is None
    assert store.load("ghost") is None
    assert store.records("ghost", 0) == []
    assert store.signals("ghost", 0) == []
    assert store.delete("ghost") is False


def test_commit_applies_one_step_boundary(store: SyncFacade) -> None:
    header, first = new(store, "c", at=T0)
    r1, r2, r3 = blob(), blob(200), blob(1)
    store.commit(commit("c", 1, "running", at=T0 + 1, records=(r1,)))
    m = meta("c")._replace(version=2, updated_at=T0 + 1)
    assert store.get("c") == StoredInstance(m, header)
    store.commit(commit("c", 2, "suspended", at=T0 + 2.5, due_at=T0 + 60, records=[r2, r3]))
    m = m._replace(status="suspended", version=3, updated_at=T0 + 2.5, due_at=T0 + 60)
    assert store.get("c") == StoredInstance(m, header)
    final = blob(300)
    store.commit(commit("c", 3, "failed", at=T0 + 70, header=final, error="ValueError: no"))
    m = m._replace(
        status="failed", version=4, updated_at=T0 + 70, due_at=None, error="ValueError: no"
    )
    assert loaded(store, "c") == Loaded(m, final, [*first, r1, r2, r3], [])


def test_a_commit_without_error_clears_the_indexed_error(store: SyncFacade) -> None:
    new(store, "e")
    store.commit(commit("e", 1, "suspended", error="retrying: boom"))
    assert loaded(store, "e").meta.error == "retrying: boom"
    store.commit(commit("e", 2, "running"))
    assert loaded(store, "e").meta.error is None


def test_records_and_headers_come_back_byte_identical(store: SyncFacade) -> None:
    header = b"\x00\xff" + bytes(range(255, -1, -1)) + b"\x00"
    new(store, "b", records=AWKWARD[:3])
    store.commit(commit("b", 1, records=AWKWARD[3:]))
    store.commit(commit("b", 2, "completed", header=header))
    got = store.records("b", 0)
    assert got == AWKWARD
    assert all(type(r) is bytes for r in got)
    stored = store.get("b")
    assert stored is not None and stored.header == header and type(stored.header) is bytes
    whole = loaded(store, "b")
    assert whole.records == AWKWARD and all(type(r) is bytes for r in whole.records)


def test_random_bytes_round_trip_through_every_field(store: SyncFacade) -> None:
    for n in range(20):
        header, records, signal = blob(n * 7), [blob(n), blob(n * 3)], blob(n * 5 + 1)
        iid = f"r{n}"
        new(store, iid, records=records)
        store.commit(commit(iid, 1, "suspended", header=header, records=[b"\x00" * n]))
        store.send_signal(iid, signal, T0 + 2)
        got = loaded(store, iid)
        assert (got.header, got.records, got.signals) == (
            header,
            [*records, b"\x00" * n],
            [(1, signal)],
        )


def test_records_after_a_version_are_the_later_commits_in_order(store: SyncFacade) -> None:
    first = [b"v1:a", b"v1:b"]
    new(store, "i", records=first)
    by_version = {1: first}
    for v in range(1, 8):
        batch = [b"v%d:%d" % (v + 1, k) for k in range(v % 3)]  # some commits append nothing
        store.commit(commit("i", v, at=T0 + v, records=batch))
        by_version[v + 1] = batch
    for after in range(10):
        want = [r for v in sorted(by_version) if v > after for r in by_version[v]]
        assert store.records("i", after) == want, f"after={after}"


def test_records_never_mix_instances(store: SyncFacade) -> None:
    new(store, "one", records=[b"one:0"])
    new(store, "two", records=[])
    expected: dict[str, list[bytes]] = {"one": [b"one:0"], "two": []}
    versions = {"one": 1, "two": 1}
    for n in range(1, 31):
        iid = "one" if n % 3 else "two"
        batch = [iid.encode() + b":%d:" % n + blob(n % 4) for _ in range(n % 4)]
        store.commit(commit(iid, versions[iid], at=T0 + n, records=batch))
        versions[iid] += 1
        expected[iid].extend(batch)
    assert store.records("one", 0) == expected["one"]
    assert store.records("two", 0) == expected["two"]


def test_signals_after_a_number_are_the_later_ones(store: SyncFacade) -> None:
    new(store, "s")
    sent = [blob(), b"\x00", AWKWARD[3], b""]
    assert [store.send_signal("s", r, T0 + 1) for r in sent] == [1, 2, 3, 4]
    for after in range(6):
        got = store.signals("s", after)
        assert got == [(n, r) for n, r in enumerate(sent, start=1) if n > after]
        assert all(type(n) is int and type(r) is bytes for n, r in got)


def test_load_reads_header_log_and_inbox_together(store: SyncFacade) -> None:
    header, first = new(store, "l")
    r = blob()
    store.commit(commit("l", 1, "suspended", at=T0 + 1, due_at=T0 + 50, records=[r]))
    s1, s2 = blob(), blob()
    store.send_signal("l", s1, T0 + 2)
    store.send_signal("l", s2, T0 + 3)
    got = loaded(store, "l")
    assert type(got) is Loaded
    stored = store.get("l")
    assert stored is not None
    assert got == Loaded(stored.meta, header, [*first, r], [(1, s1), (2, s2)])
    assert got.records == store.records("l", 0) and got.signals == store.signals("l", 0)


def test_delete_removes_the_instance_its_log_and_its_inbox(store: SyncFacade) -> None:
    new(store, "d")
    store.commit(commit("d", 1, "suspended", records=[blob()]))
    store.send_signal("d", blob(), T0 + 2)
    keep = new(store, "keep")
    assert store.delete("d") is True
    assert (store.load("d"), store.records("d", 0), store.signals("d", 0)) == (None, [], [])
    assert store.delete("d") is False
    assert store.records("keep", 0) == keep[1]
    # the id can be used again, with nothing left over from before
    header, first = new(store, "d", at=T0 + 10)
    assert loaded(store, "d") == Loaded(meta("d", at=T0 + 10), header, first, [])
    assert store.send_signal("d", b"again", T0 + 11) == 1


def test_a_delete_racing_commits_and_signals_leaves_nothing_behind(store: SyncFacade) -> None:
    """A delete that races a commit and a signal on the same instance (a commit may wait for
    the delete's lock, or the delete for the commit's): once the delete said it deleted the
    instance, nothing of it is left, and the id starts afresh (no leftover log row or signal)."""
    for n in range(8):
        iid = f"r{n}"
        new(store, iid)
        store.commit(commit(iid, 1, "suspended", records=[blob()]))
        results = store.race(
            [
                ("commit", (commit(iid, 2, "suspended", records=[blob(), blob()]),)),
                ("send_signal", (iid, blob(), T0 + 3)),
                ("delete", (iid,)),
            ]
        )
        assert results[2] is True, results
        assert (store.load(iid), store.records(iid, 0), store.signals(iid, 0)) == (None, [], [])
        header, first = new(store, iid, at=T0 + 10)
        assert loaded(store, iid) == Loaded(meta(iid, at=T0 + 10), header, first, [])


def test_purge_deletes_only_finished_instances_updated_before_the_time(
    store: SyncFacade,
) -> None:
    before = T0 + 100
    cases = {  # id: (status, last updated)
        "done-old": ("completed", before - 50),
        "failed-old": ("failed", before - 0.25),
        "cancelled-old": ("cancelled", before - 1),
        "done-at-the-time": ("completed", before),
        "done-new": ("completed", before + 1),
        "pending-old": ("pending", before - 50),
        "running-old": ("running", before - 50),
        "suspended-old": ("suspended", before - 50),
    }
    for iid, (status, at) in cases.items():
        new(store, iid, at=T0)
        finish(store, iid, status, at)
    store.send_signal("suspended-old", blob(), before - 40)

    def left() -> set[str]:
        return {m.id for m in store.list(_everything()).items}

    assert store.purge(before, list(UNFINISHED)) == 0  # unfinished: never purged
    assert store.purge(before, ["failed"]) == 1
    assert store.load("failed-old") is None and store.records("failed-old", 0) == []
    assert store.purge(before, []) == 2  # any finished status
    assert left() == {"done-at-the-time", "done-new", "pending-old", "running-old", "suspended-old"}
    assert store.purge(before, []) == 0
    assert store.purge(before + 2, ["completed", "cancelled"]) == 2
    assert left() == {"pending-old", "running-old", "suspended-old"}
    assert len(store.signals("suspended-old", 0)) == 1  # an unfinished instance keeps its inbox
    assert set(FINISHED).isdisjoint(m.status for m in store.list(_everything()).items)


def _everything() -> ListQuery:
    return ListQuery([], None, None, None, None)


def test_plan_hash_and_workflow_are_kept_as_given(store: SyncFacade) -> None:
    new(store, "p", workflow="wf-ü", plan_hash="sha256:" + "ab" * 32)
    m = loaded(store, "p").meta
    assert (m.workflow, m.plan_hash) == ("wf-ü", "sha256:" + "ab" * 32)
