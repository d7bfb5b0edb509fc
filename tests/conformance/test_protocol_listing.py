"""Store protocol: `list` (filters, newest first, pages behind an opaque cursor) and `counts`."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tideflow.errors import InvalidArgument
from tideflow.stores.base import Count, InstanceMeta, ListPage, ListQuery

from .facade import SyncFacade
from .protocol import T0, blob, commit, finish, loaded, new

LAYOUT = [  # created in this order, a second apart: (id, workflow, plan hash, final status)
    ("o1", "orders", "p1", "completed"),
    ("b1", "billing", "p9", "running"),
    ("o2", "orders", "p2", "suspended"),
    ("b2", "billing", "p9", "failed"),
    ("o3", "orders", "p2", "running"),
]


def _layout(store: SyncFacade) -> None:
    for n, (iid, workflow, plan, _) in enumerate(LAYOUT):
        new(store, iid, workflow, at=T0 + n, plan_hash=plan)
    for iid, *_, status in LAYOUT[::-1]:  # updated in the reverse order: list ignores it
        if status != "running":
            finish(store, iid, status, T0 + 100)


def q(
    statuses: Sequence[str] = (),
    workflow: str | None = None,
    plan_hash: str | None = None,
    limit: int | None = None,
    cursor: str | None = None,
) -> ListQuery:
    """A list query."""
    return ListQuery(statuses, workflow, plan_hash, limit, cursor)


def test_list_filters_newest_first(store: SyncFacade) -> None:
    _layout(store)

    def ids(query: ListQuery) -> list[str]:
        page = store.list(query)
        assert type(page) is ListPage and all(type(m) is InstanceMeta for m in page.items)
        assert page.items == [loaded(store, m.id).meta for m in page.items]
        return [m.id for m in page.items]

    assert ids(q()) == ["o3", "b2", "o2", "b1", "o1"]
    assert ids(q(["running"])) == ["o3", "b1"]
    assert ids(q(["completed", "failed"])) == ["b2", "o1"]
    assert ids(q(workflow="orders")) == ["o3", "o2", "o1"]
    assert ids(q(["running", "suspended"], "orders")) == ["o3", "o2"]
    assert ids(q(plan_hash="p2")) == ["o3", "o2"]
    assert ids(q(plan_hash="p9", workflow="orders")) == []
    assert ids(q(["failed"], "billing", "p9")) == ["b2"]
    assert ids(q(workflow="nope")) == []
    assert ids(q(["cancelled"])) == []


def test_a_page_cut_short_has_a_cursor_and_the_last_has_none(store: SyncFacade) -> None:
    _layout(store)
    assert store.list(q()).cursor is None  # no limit
    assert store.list(q(limit=5)).cursor is None  # the limit did not cut it
    first = store.list(q(limit=2))
    assert [m.id for m in first.items] == ["o3", "b2"]
    assert isinstance(first.cursor, str)
    second = store.list(q(limit=2, cursor=first.cursor))
    assert [m.id for m in second.items] == ["o2", "b1"]
    third = store.list(q(limit=2, cursor=second.cursor))
    assert ([m.id for m in third.items], third.cursor) == (["o1"], None)
    page = store.list(q(["running", "failed", "suspended"], "billing", limit=1))
    assert [m.id for m in page.items] == ["b2"]
    page = store.list(q(["running", "failed", "suspended"], "billing", limit=1, cursor=page.cursor))
    assert [m.id for m in page.items] == ["b1"]


def test_a_zero_limit_is_an_empty_page(store: SyncFacade) -> None:
    _layout(store)
    assert store.list(q(limit=0)).items == []


def test_instances_created_while_paging_do_not_disturb_the_pages(store: SyncFacade) -> None:
    _layout(store)
    first = store.list(q(limit=3))
    new(store, "late", at=T0 + 50)  # newer than every page: it belongs before page one
    store.delete("o2")  # on the first page already: the rest is unaffected
    rest = store.list(q(cursor=first.cursor))
    assert [m.id for m in rest.items] == ["b1", "o1"]


@pytest.mark.parametrize("cursor", ["", "not a cursor", "-1x", "\x00", "9" * 40])
def test_an_invalid_cursor_is_an_error(store: SyncFacade, cursor: str) -> None:
    _layout(store)
    if cursor == "9" * 40:  # a well-formed number may just mean "before everything"
        try:
            page = store.list(q(cursor=cursor))
        except InvalidArgument:
            return
        assert {m.id for m in page.items} <= {m[0] for m in LAYOUT}
        return
    with pytest.raises(InvalidArgument):
        store.list(q(cursor=cursor))


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    workflows=st.lists(st.sampled_from(["a", "b", "c"]), min_size=0, max_size=14),
    limit=st.integers(min_value=1, max_value=5),
    only=st.sampled_from([None, "a", "b"]),
)
def test_every_instance_appears_exactly_once_over_the_pages(
    store: SyncFacade, workflows: list[str], limit: int, only: str | None
) -> None:
    prefix = f"ex{next(_examples)}:"
    plan = "plan-" + prefix  # each example sees only its own instances
    for n, wf in enumerate(workflows):
        new(store, f"{prefix}{n}", wf, at=T0 + n, plan_hash=plan)
    seen: list[str] = []
    cursor = None
    for _ in range(len(workflows) + 2):
        page = store.list(q(workflow=only, plan_hash=plan, limit=limit, cursor=cursor))
        assert len(page.items) <= limit
        seen += [m.id for m in page.items]
        cursor = page.cursor
        if cursor is None:
            break
    assert cursor is None, "paging did not end"
    want = [f"{prefix}{n}" for n, wf in enumerate(workflows) if only is None or wf == only]
    assert seen == want[::-1]


_examples = itertools.count()  # hypothesis reuses the store: each example gets its own ids


def test_counts_are_per_workflow_and_status_and_only_non_zero(store: SyncFacade) -> None:
    assert store.counts() == []
    _layout(store)
    new(store, "o4", "orders")
    got = store.counts()
    assert all(type(c) is Count for c in got)
    assert sorted(got) == sorted(
        [
            Count("billing", "failed", 1),
            Count("billing", "running", 1),
            Count("orders", "completed", 1),
            Count("orders", "running", 2),
            Count("orders", "suspended", 1),
        ]
    )
    store.delete("b2")
    store.commit(commit("o3", 1, "completed", at=T0 + 200, header=blob()))
    assert sorted(store.counts()) == sorted(
        [
            Count("billing", "running", 1),
            Count("orders", "completed", 2),
            Count("orders", "running", 1),
            Count("orders", "suspended", 1),
        ]
    )
