"""A store written in Python, on dicts: the reference implementation of the Python store
protocol (`tideflow.stores.base.Store`), run through the conformance suite like every store."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from tideflow import SignalError, UnknownInstance
from tideflow.stores.base import Commit, InstanceMeta, StoreConflict, StoredInstance

FINISHED = ("completed", "failed", "cancelled")


class DictStore:
    """Keeps instances in a dict; every method is atomic because nothing else touches it."""

    def __init__(self) -> None:
        self.meta: dict[str, InstanceMeta] = {}
        self.header: dict[str, bytes] = {}
        self.log: dict[str, list[bytes]] = {}
        self.order: dict[str, int] = {}
        self.inbox: dict[str, list[bytes]] = {}
        self.counter = itertools.count()

    def create(
        self, meta: InstanceMeta, header: bytes, records: Sequence[bytes]
    ) -> StoredInstance | None:
        iid = meta[0]
        if iid in self.meta:
            return self.meta[iid], self.header[iid]
        self.meta[iid], self.header[iid], self.log[iid] = meta, header, list(records)
        self.inbox[iid] = []
        self.order[iid] = next(self.counter)
        return None

    def _check(self, c: Commit, version: int | None = None) -> None:
        iid, expected = c[0], c[1]
        if iid not in self.meta:
            raise UnknownInstance(f'no workflow instance with id "{iid}"')
        found = self.meta[iid][3] if version is None else version
        if found != expected:
            raise StoreConflict(iid, expected, found)

    def commit(self, commit: Commit) -> None:
        self._check(commit)
        iid, expected, status, updated_at, due_at, header, records, seen = commit
        if status == "suspended" and len(self.inbox[iid]) > seen:
            due_at = updated_at if due_at is None else min(due_at, updated_at)
        m = self.meta[iid]
        self.meta[iid] = (iid, m[1], status, expected + 1, m[4], updated_at, due_at)
        if header is not None:
            self.header[iid] = header
        self.log[iid].extend(records)

    def commit_many(self, commits: Sequence[Commit]) -> None:
        versions: dict[str, int] = {}
        for c in commits:
            self._check(c, versions.get(c[0]))
            versions[c[0]] = c[1] + 1
        for c in commits:
            self.commit(c)

    def get(self, id: str) -> StoredInstance | None:
        return (self.meta[id], self.header[id]) if id in self.meta else None

    def records(self, id: str) -> list[bytes]:
        return list(self.log.get(id, []))

    def list(
        self, statuses: Sequence[str], workflow: str | None, limit: int | None
    ) -> list[InstanceMeta]:
        hits = [
            m
            for m in self.meta.values()
            if (not statuses or m[2] in statuses) and (workflow is None or m[1] == workflow)
        ]
        hits.sort(key=lambda m: -self.order[m[0]])
        return hits if limit is None else hits[:limit]

    def delete(self, id: str) -> bool:
        if id not in self.meta:
            return False
        for d in (self.meta, self.header, self.log, self.order, self.inbox):
            del d[id]  # type: ignore[attr-defined]
        return True

    def purge(self, before: float, statuses: Sequence[str]) -> int:
        doomed = [
            iid
            for iid, m in self.meta.items()
            if m[2] in FINISHED and (not statuses or m[2] in statuses) and m[5] < before
        ]
        for iid in doomed:
            self.delete(iid)
        return len(doomed)

    def send_signal(self, id: str, record: bytes, now: float) -> int:
        if id not in self.meta:
            raise UnknownInstance(f'no workflow instance with id "{id}"')
        m = self.meta[id]
        if m[2] in FINISHED:
            raise SignalError(f'instance "{id}" is {m[2]} and takes no more signals')
        self.inbox[id].append(record)
        due = now if m[6] is None else min(m[6], now)
        self.meta[id] = (*m[:6], due)
        return len(self.inbox[id])

    def signals(self, id: str) -> list[tuple[int, bytes]]:
        return list(enumerate(self.inbox.get(id, []), start=1))

    def due(self, now: float, limit: int | None) -> list[InstanceMeta]:
        hits = [
            m
            for m in self.meta.values()
            if m[2] == "suspended" and m[6] is not None and m[6] <= now
        ]
        hits.sort(key=lambda m: m[6] or 0.0)
        return hits if limit is None else hits[:limit]

    def describe(self) -> str:
        return "dict"
