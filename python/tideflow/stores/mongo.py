"""The MongoDB store: ``Engine(store="mongodb://host:port/dbname")`` (also ``mongodb+srv://``), on
pymongo (``AsyncMongoClient`` for the async face, ``MongoClient`` for the synchronous twin that
``blocking()`` returns), extra ``tideflow[mongo]``. ``docs/stores.md`` (MongoDB) describes it.

One document per instance holds everything a step boundary touches: the indexed fields, the
header, the recent log (embedded), the inbox (embedded) and the token of the last commit. So a
commit is ONE conditional ``find_one_and_update`` (an aggregation-pipeline update) filtered by id,
version and lease; a miss is followed by one read that decides which error. When the embedded log
grows past a bound, its older (committed) entries are moved out to the ``tideflow_log`` collection
in chunks, idempotently, after the commit that crossed the bound (MongoDB's 16 MB document limit).

The operation logic is written once, as generators that yield the server operations they need
(``_Op``) and receive each result; a synchronous runner (pymongo's ``MongoClient``) and an
asynchronous one (``AsyncMongoClient``) execute them. Nothing here imports pymongo at module
import: the driver is imported when a store is built.

News for watchers (``MongoStore.watch``): every write to an instance document sets its ``nw``
field, to a fresh token when the write is news (a signal, a release, a commit that finishes the
instance or leaves it suspended and due at or before its ``updated_at``) and to null otherwise;
a change stream on the instances collection matches inserts (a create) and the changes that set
``nw`` to a string (``_NEWS_PIPELINE``: an update event names ``nw`` among its updated fields, a
replace event, which a server may report for a pipeline update, carries the whole document), so
only news crosses the wire.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import threading
import time
import uuid
import weakref
from collections.abc import Generator, Sequence
from typing import Any, NamedTuple

from tideflow.errors import InvalidArgument, SignalError, StoreError, UnknownInstance
from tideflow.stores._server import DEFAULT_TIMEOUT, import_driver, redact
from tideflow.stores.base import (
    Claim,
    Commit,
    Count,
    InstanceMeta,
    LeaseLost,
    ListPage,
    ListQuery,
    Loaded,
    StoreConflict,
    StoredInstance,
)

__all__ = ["SCHEMA_VERSION", "MongoStore"]

#: The schema version this tideflow writes (``tideflow_meta`` document ``schema``).
SCHEMA_VERSION = 1
#: The collections of a tideflow database.
INSTANCES = "tideflow_instances"
LOG = "tideflow_log"
META = "tideflow_meta"
_COLLS = {"i": INSTANCES, "l": LOG, "m": META}
#: The marker of the ``schema`` document: the data is tideflow's.
APP = "tideflow"

FINISHED = ("completed", "failed", "cancelled")
STATUS_ORDER = ("pending", "running", "suspended", "completed", "failed", "cancelled")

#: The embedded log is moved out to ``tideflow_log`` past this many entries or bytes.
SPILL_ENTRIES = 128
SPILL_BYTES = 1024 * 1024

#: The server's clock, in seconds since the epoch, inside an aggregation expression.
_NOW = {"$divide": [{"$toLong": "$$NOW"}, 1000]}
#: The fields of ``InstanceMeta`` (projection for reads that need no log/inbox).
_META_FIELDS = {k: 1 for k in ("w", "ph", "st", "v", "ca", "ua", "due", "ow", "lu", "err")}
_NO_BULK = {"log": 0, "ib": 0}
#: The change stream of ``watch``: creates, and the writes that set ``nw`` to a token (news).
_NEWS_PIPELINE: list[dict[str, Any]] = [
    {
        "$match": {
            "$or": [
                {"operationType": "insert"},
                {
                    "operationType": "update",
                    "updateDescription.updatedFields.nw": {"$type": "string"},
                },
                {"operationType": "replace", "fullDocument.nw": {"$type": "string"}},
            ]
        }
    },
    {"$project": {"documentKey": 1}},
]
#: How long one getMore of the change stream waits on the server for news (milliseconds).
_NEWS_AWAIT_MS = 1000
_PURGE_BATCH = 1000


class _Op(NamedTuple):
    """One server operation: a collection (``i``/``l``/``m``, or None for the database), a method
    of pymongo's collection/database, its arguments, and what it does (for messages)."""

    coll: str | None
    method: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    what: str


def _op(coll: str | None, method: str, what: str, *args: Any, **kwargs: Any) -> _Op:
    return _Op(coll, method, args, kwargs, what)


def _lit(value: Any) -> dict[str, Any]:
    return {"$literal": value}


def _unknown(iid: str) -> UnknownInstance:
    return UnknownInstance(f"no workflow instance with id {iid!r}")


def _meta(doc: dict[str, Any]) -> InstanceMeta:
    def opt_float(x: Any) -> float | None:
        return None if x is None else float(x)

    return InstanceMeta(
        id=doc["_id"],
        workflow=doc["w"],
        plan_hash=doc["ph"],
        status=doc["st"],
        version=int(doc["v"]),
        created_at=float(doc["ca"]),
        updated_at=float(doc["ua"]),
        due_at=opt_float(doc.get("due")),
        owner=doc.get("ow"),
        lease_until=opt_float(doc.get("lu")),
        error=doc.get("err"),
    )


def _live(doc: dict[str, Any], now: float) -> bool:
    return doc.get("ow") is not None and doc.get("lu") is not None and doc["lu"] > now


def _lease_error(iid: str, owner: str | None, doc: dict[str, Any], now: float) -> LeaseLost | None:
    """The commit/extend lease check on a stored document at ``now`` (see dict_store)."""
    live = doc.get("lu") is not None and doc["lu"] > now
    holder = doc.get("ow")
    ok = (holder == owner and live) if owner is not None else (holder is None or not live)
    if ok:
        return None
    return LeaseLost(iid, owner, holder if live else None)


class _Logic:
    """The operations, as generators of ``_Op`` (shared by both faces)."""

    _db_name: str
    _server_clock: bool

    # --- lease conditions -----------------------------------------------------------------

    def _held_by(self, owner: str, now: float) -> dict[str, Any]:
        """A filter: ``owner`` holds a live lease."""
        if self._server_clock:
            return {"ow": owner, "$expr": {"$gt": ["$lu", _NOW]}}
        return {"ow": owner, "lu": {"$gt": now}}

    def _not_held(self, now: float) -> dict[str, Any]:
        """A filter: no one holds a live lease."""
        if self._server_clock:
            return {"$expr": {"$or": [{"$eq": ["$ow", None]}, {"$lte": ["$lu", _NOW]}]}}
        return {"$or": [{"ow": None}, {"lu": None}, {"lu": {"$lte": now}}]}

    def _expired(self, now: float) -> dict[str, Any]:
        """A filter: someone held a lease that ran out."""
        if self._server_clock:
            return {"ow": {"$ne": None}, "$expr": {"$lte": ["$lu", _NOW]}}
        return {"ow": {"$ne": None}, "$or": [{"lu": None}, {"lu": {"$lte": now}}]}

    def _until(self, lease: float, now: float) -> Any:
        return {"$add": [_NOW, float(lease)]} if self._server_clock else float(now + lease)

    def _read_lease(self, iid: str, fields: dict[str, Any], what: str) -> Generator[_Op, Any, Any]:
        """Reads the instance's ``fields`` plus the lease clock's now (``now``; the server's with
        the server clock, else None); None for no instance."""
        if self._server_clock:
            docs = yield _op(
                "i",
                "aggregate",
                what,
                [{"$match": {"_id": iid}}, {"$project": {**fields, "now": _NOW}}],
            )
            return docs[0] if docs else None
        doc = yield _op("i", "find_one", what, {"_id": iid}, fields)
        return doc

    # --- create / read ---------------------------------------------------------------------

    def _create(
        self, meta: InstanceMeta, header: bytes, records: Sequence[bytes]
    ) -> Generator[_Op, Any, StoredInstance | None]:
        from bson import ObjectId

        pymongo = self._pymongo  # type: ignore[attr-defined]
        token = uuid.uuid4().hex
        recs = [bytes(r) for r in records]
        due = None if meta.due_at is None else float(meta.due_at)
        doc = {
            "w": meta.workflow,
            "ph": meta.plan_hash,
            "st": meta.status,
            "v": 1,
            "ca": float(meta.created_at),
            "ua": float(meta.updated_at),
            "due": due,
            "o": float(meta.updated_at) if due is None else due,
            "ow": meta.owner,
            "lu": None if meta.lease_until is None else float(meta.lease_until),
            "err": meta.error,
            "seq": ObjectId(),
            "h": bytes(header),
            "log": [{"v": 1, "r": r} for r in recs],
            "lc": len(recs),
            "lb": sum(len(r) for r in recs),
            "cut": 0,
            "ns": 0,
            "ib": [],
            "tok": token,
            "ct": token,
        }
        try:
            before = yield _op(
                "i",
                "find_one_and_update",
                "create",
                {"_id": meta.id},
                {"$setOnInsert": doc},
                projection=_NO_BULK,
                upsert=True,
                return_document=pymongo.ReturnDocument.BEFORE,
            )
        except pymongo.errors.DuplicateKeyError:  # a concurrent create of the same id won
            before = yield _op("i", "find_one", "create", {"_id": meta.id}, _NO_BULK)
            if before is None:  # deleted meanwhile: nothing to return, try once more
                return (yield from self._create(meta, header, records))
        if before is None or before.get("ct") == token:  # ours (also a retried upsert)
            if len(recs) > SPILL_ENTRIES or sum(map(len, recs)) > SPILL_BYTES:
                yield from self._spill(meta.id)
            return None
        return StoredInstance(_meta(before), bytes(before["h"]))

    def _get(self, iid: str) -> Generator[_Op, Any, StoredInstance | None]:
        doc = yield _op("i", "find_one", "get", {"_id": iid}, {**_META_FIELDS, "h": 1})
        return None if doc is None else StoredInstance(_meta(doc), bytes(doc["h"]))

    def _log_of(
        self, doc: dict[str, Any], after: int, what: str
    ) -> Generator[_Op, Any, list[bytes]]:
        """The records after version ``after`` of a document read with ``log``, ``cut``, ``seq``:
        the chunks moved out (those wholly at or below the document's ``cut``) then the
        embedded entries."""
        out: list[bytes] = []
        cut = int(doc.get("cut", 0))
        if after < cut:
            chunks = yield _op(
                "l",
                "find",
                what,
                {"s": doc["seq"], "f": {"$lte": cut}, "t": {"$gt": after}},
                sort=[("f", 1)],
            )
            for ch in chunks:
                out.extend(bytes(r) for v, r in zip(ch["vs"], ch["rs"], strict=True) if v > after)
        out.extend(bytes(e["r"]) for e in doc.get("log", ()) if e["v"] > after)
        return out

    def _load(self, iid: str) -> Generator[_Op, Any, Loaded | None]:
        doc = yield _op("i", "find_one", "load", {"_id": iid})
        if doc is None:
            return None
        records = yield from self._log_of(doc, 0, "load")
        signals = [(int(e["n"]), bytes(e["r"])) for e in doc.get("ib", ())]
        return Loaded(_meta(doc), bytes(doc["h"]), records, signals)

    def _records(self, iid: str, after: int) -> Generator[_Op, Any, list[bytes]]:
        doc = yield _op("i", "find_one", "records", {"_id": iid}, {"log": 1, "cut": 1, "seq": 1})
        if doc is None:
            return []
        return (yield from self._log_of(doc, int(after), "records"))

    def _signals(self, iid: str, after: int) -> Generator[_Op, Any, list[tuple[int, bytes]]]:
        doc = yield _op("i", "find_one", "signals", {"_id": iid}, {"ib": 1})
        if doc is None:
            return []
        return [(int(e["n"]), bytes(e["r"])) for e in doc.get("ib", ()) if e["n"] > after]

    # --- commit ----------------------------------------------------------------------------

    def _commit(self, c: Commit) -> Generator[_Op, Any, None]:
        pymongo = self._pymongo  # type: ignore[attr-defined]
        token = uuid.uuid4().hex
        version = c.expected_version + 1
        ua = float(c.updated_at)
        recs = [bytes(r) for r in c.records]
        seen = int(c.signals_seen)
        plain = None if c.due_at is None else float(c.due_at)
        suspends = c.status == "suspended"
        # A classic update (no pipeline: SecantusDB runs those about twice as slowly). The due
        # time depends on whether the inbox holds a signal above ``signals_seen``: the fast path
        # assumes not and says so in its filter (``ns <= seen``); a miss whose read shows a newer
        # signal is sent again with the signalled due time (and ``ns > seen``).
        signalled = False

        def statement() -> tuple[dict[str, Any], dict[str, Any]]:
            due = (ua if plain is None else min(plain, ua)) if signalled else plain
            fields: dict[str, Any] = {
                "st": c.status,
                "v": version,
                "ua": ua,
                "due": due,
                "o": ua if due is None else due,
                "err": c.error,
                "tok": token,
                # news (see the module docstring): finished, or suspended and due at once
                "nw": token
                if c.status in FINISHED or (suspends and due is not None and due <= ua)
                else None,
            }
            if c.header is not None:
                fields["h"] = bytes(c.header)
            if c.owner is None or c.status in FINISHED:
                fields["ow"] = None
                fields["lu"] = None
            update: dict[str, Any] = {
                "$set": fields,
                "$inc": {"lc": len(recs), "lb": sum(len(r) for r in recs)},
            }
            if recs:
                update["$push"] = {"log": {"$each": [{"v": version, "r": r} for r in recs]}}
            lease = self._held_by(c.owner, ua) if c.owner is not None else self._not_held(ua)
            flt: dict[str, Any] = {"_id": c.id, "v": c.expected_version, **lease}
            if suspends:
                flt["ns"] = {"$gt": seen} if signalled else {"$lte": seen}
            return flt, update

        for attempt in range(4):
            flt, update = statement()
            try:
                after = yield _op(
                    "i",
                    "find_one_and_update",
                    "commit",
                    flt,
                    update,
                    projection={"lc": 1, "lb": 1},
                    return_document=pymongo.ReturnDocument.AFTER,
                )
            except pymongo.errors.PyMongoError as exc:
                if not _uncertain(pymongo, exc) or attempt == 3:
                    raise
                after = None  # decided by reading back below
            if after is not None:
                if after["lc"] > SPILL_ENTRIES or after["lb"] > SPILL_BYTES:
                    yield from self._spill(c.id)
                return None
            doc = yield from self._read_lease(
                c.id, {"v": 1, "ow": 1, "lu": 1, "tok": 1, "ns": 1}, "commit"
            )
            if doc is None:
                raise _unknown(c.id)
            if doc["v"] == version and doc.get("tok") == token:
                return None  # it did apply (a lost acknowledgement, or pymongo's retried write)
            now = doc.get("now", ua)
            err = _lease_error(c.id, c.owner, doc, now)
            if err is not None:
                raise err
            if doc["v"] != c.expected_version:
                raise StoreConflict(c.id, c.expected_version, doc["v"])
            # It did not apply and would now: a signal arrived (the other due time), a lost
            # write, or a lease that changed meanwhile.
            signalled = suspends and int(doc.get("ns", 0)) > seen
        raise StoreError(f"{self.describe()}: commit of {c.id!r} did not apply after 4 attempts")  # type: ignore[attr-defined]

    def _spill(self, iid: str) -> Generator[_Op, Any, None]:
        """Moves the embedded log of ``iid`` (all committed) to one chunk of ``tideflow_log``:
        the chunk first (its ``_id`` names the instance's creation and the first version, so a
        second mover finds the first's chunk), then the entries are pulled, fenced by ``cut``."""
        pymongo = self._pymongo  # type: ignore[attr-defined]
        doc = yield _op("i", "find_one", "log spill", {"_id": iid}, {"log": 1, "cut": 1, "seq": 1})
        if doc is None or not doc.get("log"):
            return
        cut = int(doc.get("cut", 0))
        log = doc["log"]
        key = {"s": doc["seq"], "f": cut + 1}
        chunk = {
            "_id": key,
            **key,
            "t": max(int(e["v"]) for e in log),
            "vs": [int(e["v"]) for e in log],
            "rs": [e["r"] for e in log],
        }
        try:
            yield _op("l", "insert_one", "log spill", chunk)
        except pymongo.errors.DuplicateKeyError:
            chunk = yield _op("l", "find_one", "log spill", {"_id": key})
            if chunk is None:
                return
        upto = int(chunk["t"])
        yield _op(
            "i",
            "update_one",
            "log spill",
            {"_id": iid, "seq": doc["seq"], "cut": cut},
            {
                "$pull": {"log": {"v": {"$lte": upto}}},
                "$set": {"cut": upto, "nw": None},
                "$inc": {"lc": -len(chunk["rs"]), "lb": -sum(len(r) for r in chunk["rs"])},
            },
        )

    # --- listing ---------------------------------------------------------------------------

    def _list(self, q: ListQuery) -> Generator[_Op, Any, ListPage]:
        from bson import ObjectId

        flt: dict[str, Any] = {}
        if q.cursor is not None:
            cur = q.cursor
            if not (isinstance(cur, str) and len(cur) == 25 and cur[0] == "m"):
                raise InvalidArgument(f"invalid list cursor {cur!r}")
            try:
                flt["seq"] = {"$lt": ObjectId(cur[1:])}
            except Exception:
                raise InvalidArgument(f"invalid list cursor {cur!r}") from None
        if q.statuses:
            flt["st"] = {"$in": list(q.statuses)}
        if q.workflow is not None:
            flt["w"] = q.workflow
        if q.plan_hash is not None:
            flt["ph"] = q.plan_hash
        kwargs: dict[str, Any] = {"sort": [("seq", -1)]}
        if q.limit is not None:
            kwargs["limit"] = max(int(q.limit), 0) + 1
        docs = yield _op("i", "find", "list", flt, {**_META_FIELDS, "seq": 1}, **kwargs)
        cursor = None
        if q.limit is not None and len(docs) > q.limit:
            docs = docs[: max(int(q.limit), 0)]
            cursor = f"m{docs[-1]['seq']}" if docs else None
        return ListPage([_meta(d) for d in docs], cursor)

    def _counts(self) -> Generator[_Op, Any, list[Count]]:
        rows = yield _op(
            "i",
            "aggregate",
            "counts",
            [{"$group": {"_id": {"w": "$w", "st": "$st"}, "n": {"$sum": 1}}}],
        )
        out = [Count(r["_id"]["w"], r["_id"]["st"], int(r["n"])) for r in rows if r["n"]]

        def order(c: Count) -> tuple[str, int]:
            st = STATUS_ORDER.index(c.status) if c.status in STATUS_ORDER else len(STATUS_ORDER)
            return (c.workflow, st)

        return sorted(out, key=order)

    # --- delete / purge --------------------------------------------------------------------

    def _delete(self, iid: str) -> Generator[_Op, Any, bool]:
        doc = yield _op("i", "find_one_and_delete", "delete", {"_id": iid}, projection={"seq": 1})
        if doc is None:
            return False
        yield _op("l", "delete_many", "delete", {"s": doc["seq"]})
        return True

    def _purge(self, before: float, statuses: Sequence[str]) -> Generator[_Op, Any, int]:
        sts = [s for s in FINISHED if not statuses or s in statuses]
        if not sts:
            return 0
        cond = {"st": {"$in": sts}, "ua": {"$lt": float(before)}}
        total = 0
        while True:
            docs = yield _op("i", "find", "purge", cond, {"seq": 1}, limit=_PURGE_BATCH)
            if not docs:
                return total
            ids = [d["_id"] for d in docs]
            res = yield _op("i", "delete_many", "purge", {"_id": {"$in": ids}, **cond})
            total += int(res.deleted_count)
            yield _op("l", "delete_many", "purge", {"s": {"$in": [d["seq"] for d in docs]}})
            if len(docs) < _PURGE_BATCH:
                return total

    # --- signals ---------------------------------------------------------------------------

    def _send_signal(self, iid: str, record: bytes, now: float) -> Generator[_Op, Any, int]:
        pymongo = self._pymongo  # type: ignore[attr-defined]
        token = uuid.uuid4().hex
        now = float(now)
        entry = {"n": {"$add": ["$ns", 1]}, "r": _lit(bytes(record)), "t": token}
        update = [
            {
                "$set": {
                    "ns": {"$add": ["$ns", 1]},
                    "ib": {"$concatArrays": ["$ib", [entry]]},
                    "due": {"$min": [{"$ifNull": ["$due", now]}, now]},
                    "nw": _lit(token),
                }
            },
            {"$set": {"o": {"$ifNull": ["$due", "$ua"]}}},
        ]
        flt = {"_id": iid, "st": {"$nin": list(FINISHED)}, "ib.t": {"$ne": token}}
        for attempt in range(2):
            try:
                after = yield _op(
                    "i",
                    "find_one_and_update",
                    "send_signal",
                    flt,
                    update,
                    projection={"ns": 1},
                    return_document=pymongo.ReturnDocument.AFTER,
                )
            except pymongo.errors.PyMongoError as exc:
                if not _uncertain(pymongo, exc) or attempt == 1:
                    raise
                after = None
            if after is not None:
                return int(after["ns"])
            doc = yield _op(
                "i",
                "find_one",
                "send_signal",
                {"_id": iid},
                {"st": 1, "ib": {"$elemMatch": {"t": token}}},
            )
            if doc is None:
                raise _unknown(iid)
            if doc.get("ib"):
                return int(doc["ib"][0]["n"])  # ours, applied (a retried or unacknowledged write)
            if doc["st"] in FINISHED:
                raise SignalError(f"instance {iid!r} is {doc['st']} and takes no more signals")
        raise StoreError(f"{self.describe()}: send_signal to {iid!r} did not apply")  # type: ignore[attr-defined]

    # --- due / leases ----------------------------------------------------------------------

    def _due(self, now: float, limit: int | None) -> Generator[_Op, Any, list[InstanceMeta]]:
        if limit is not None and limit <= 0:
            return []
        flt = {
            "st": {"$in": ["pending", "suspended"]},
            "due": {"$lte": float(now)},
            **self._not_held(now),
        }
        kwargs: dict[str, Any] = {"sort": [("due", 1), ("seq", 1)]}
        if limit is not None:
            kwargs["limit"] = int(limit)
        docs = yield _op("i", "find", "due", flt, _META_FIELDS, **kwargs)
        return [_meta(d) for d in docs]

    def _claimable(self, now: float, plan_hashes: list[str]) -> dict[str, Any]:
        free = {"$or": [{"st": "pending"}, {"st": "suspended", "due": {"$lte": now}}], "ow": None}
        return {
            "st": {"$nin": list(FINISHED)},
            "ph": {"$in": plan_hashes},
            "$or": [self._expired(now), free],
        }

    def _claim(self, c: Claim) -> Generator[_Op, Any, list[InstanceMeta]]:
        pymongo = self._pymongo  # type: ignore[attr-defined]
        hashes = list(c.plan_hashes)
        if not hashes or c.limit <= 0:
            return []
        now = float(c.now)
        token = uuid.uuid4().hex
        cond = self._claimable(now, hashes)
        until = self._until(c.lease, now)
        got: list[InstanceMeta] = []
        for _ in range(5):
            want = c.limit - len(got)
            cands = yield _op(
                "i", "find", "claim", cond, {"_id": 1}, sort=[("o", 1), ("seq", 1)], limit=want
            )
            if not cands:
                break
            lost = False
            for cand in cands:
                doc = yield _op(
                    "i",
                    "find_one_and_update",
                    "claim",
                    # a retried write of ours matches again (the claim token) and sets the same
                    {"_id": cand["_id"], "$or": [cond, {"ct_claim": token}]},
                    [{"$set": {"ow": _lit(c.owner), "lu": until, "ct_claim": token, "nw": None}}],
                    projection=_META_FIELDS,
                    return_document=pymongo.ReturnDocument.AFTER,
                )
                if doc is None:
                    lost = True  # another claimer took it first
                else:
                    got.append(_meta(doc))
            if not lost or len(got) >= c.limit:
                break
        return got

    def _extend(self, iid: str, owner: str, lease: float, now: float) -> Generator[_Op, Any, float]:
        pymongo = self._pymongo  # type: ignore[attr-defined]
        now = float(now)
        doc = yield _op(
            "i",
            "find_one_and_update",
            "extend",
            {"_id": iid, **self._held_by(owner, now)},
            [{"$set": {"lu": self._until(lease, now), "nw": None}}],
            projection={"lu": 1},
            return_document=pymongo.ReturnDocument.AFTER,
        )
        if doc is not None:
            return float(doc["lu"])
        doc = yield from self._read_lease(iid, {"ow": 1, "lu": 1}, "extend")
        if doc is None:
            raise _unknown(iid)
        err = _lease_error(iid, owner, doc, doc.get("now", now))
        raise err if err is not None else LeaseLost(iid, owner, None)

    def _release(self, iid: str, owner: str) -> Generator[_Op, Any, bool]:
        token = uuid.uuid4().hex
        res = yield _op(
            "i",
            "update_one",
            "release",
            {"_id": iid, "$or": [{"ow": owner}, {"rt": token}]},
            {"$set": {"ow": None, "lu": None, "rt": token, "nw": token}},
        )
        if res.matched_count:
            return True
        doc = yield _op("i", "find_one", "release", {"_id": iid}, {"_id": 1})
        if doc is None:
            raise _unknown(iid)
        return False

    # --- schema ----------------------------------------------------------------------------

    def _setup(self) -> Generator[_Op, Any, None]:
        """Checks (or creates) the schema marker, then the indexes: once per client."""
        pymongo = self._pymongo  # type: ignore[attr-defined]
        names = set((yield _op(None, "list_collection_names", "schema check")))
        marker = None
        if META in names:
            marker = yield _op("m", "find_one", "schema check", {"_id": "schema"})
            if marker is None:
                raise self._foreign(META)
        elif names & {INSTANCES, LOG}:
            raise self._foreign(sorted(names & {INSTANCES, LOG})[0])
        if marker is None:
            try:
                yield _op(
                    "m",
                    "insert_one",
                    "schema setup",
                    {"_id": "schema", "app": APP, "version": SCHEMA_VERSION},
                )
                marker = {"app": APP, "version": SCHEMA_VERSION}
            except pymongo.errors.DuplicateKeyError:
                marker = yield _op("m", "find_one", "schema check", {"_id": "schema"})
        if not marker or marker.get("app") != APP:
            raise self._foreign(META)
        found = marker.get("version")
        if not isinstance(found, int) or found > SCHEMA_VERSION:
            raise StoreError(
                f"{self.describe()}: the database was written by a newer tideflow (schema "  # type: ignore[attr-defined]
                f"version {found!r}, this one knows {SCHEMA_VERSION}); it is left unchanged"
            )
        for keys, opts in (
            ([("seq", -1)], {"unique": True, "name": "seq"}),
            ([("st", 1), ("o", 1), ("seq", 1)], {"name": "status_order"}),
            ([("st", 1), ("due", 1)], {"name": "status_due"}),
            ([("w", 1), ("st", 1)], {"name": "workflow_status"}),
            ([("st", 1), ("ua", 1)], {"name": "status_updated"}),
        ):
            yield _op("i", "create_index", "schema setup", keys, **opts)
        yield _op("l", "create_index", "schema setup", [("s", 1), ("f", 1)], name="chunks")

    def _foreign(self, coll: str) -> StoreError:
        return StoreError(
            f"{self.describe()}: the collection {coll!r} is not tideflow's (no tideflow schema "  # type: ignore[attr-defined]
            "marker); refusing to use this database, nothing was changed"
        )


def _uncertain(pymongo: Any, exc: BaseException) -> bool:
    """Whether a write failed without saying whether it applied (a dropped connection, a timeout)."""
    return isinstance(exc, pymongo.errors.ConnectionFailure) or bool(getattr(exc, "timeout", False))


def _split(url: str) -> tuple[str, str, str]:
    """(scheme, hosts, database path) of a mongodb URL, or a StoreError (without the password)."""
    shown = redact(url)
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in ("mongodb", "mongodb+srv"):
        raise StoreError(
            f"MongoStore: a URL starting with mongodb:// or mongodb+srv:// was expected, got {shown!r}"
        )
    end = len(rest)
    for ch in "/?#":
        i = rest.find(ch)
        if i != -1:
            end = min(end, i)
    netloc, tail = rest[:end], rest[end:]
    hosts = netloc.rpartition("@")[2]
    if not hosts:
        raise StoreError(f"MongoStore: the URL {shown!r} names no host")
    path = tail.partition("?")[0].partition("#")[0].lstrip("/")
    from urllib.parse import unquote

    return scheme.lower(), hosts, unquote(path)


class MongoStore(_Logic):
    """The MongoDB store (``AsyncStore``; ``blocking()`` is its synchronous twin).

    ``url``: ``mongodb://[user:password@]host[:port][,host...]/[database][?options]`` (or
    ``mongodb+srv://``); pymongo parses the options. ``client``: an existing ``AsyncMongoClient``
    (used as is, never closed by the store; ``sync_client=`` an existing ``MongoClient`` for the
    twin). ``database`` overrides the URL's path (default ``tideflow``). ``timeout`` bounds
    connecting and every operation (seconds). ``lease_clock``: ``"server"`` (the server's
    ``$$NOW`` judges every lease) or ``"engine"`` (the ``now`` the engine passes)."""

    def __init__(
        self,
        url: str | None = None,
        *,
        client: Any = None,
        sync_client: Any = None,
        database: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        lease_clock: str = "server",
    ) -> None:
        self._pymongo = import_driver("pymongo", "mongo", "MongoStore")
        if lease_clock not in ("server", "engine"):
            raise StoreError(
                f"MongoStore: lease_clock must be 'server' or 'engine', got {lease_clock!r}"
            )
        if not isinstance(timeout, (int, float)) or not timeout > 0:
            raise StoreError(
                f"MongoStore: timeout must be a positive number of seconds, got {timeout!r}"
            )
        self._server_clock = lease_clock == "server"
        self.lease_clock = lease_clock
        self.timeout = float(timeout)
        self._url = url
        self._user_client = client
        self._user_sync = sync_client
        if url is not None:
            scheme, hosts, path = _split(url)
            if scheme == "mongodb":
                try:
                    self._pymongo.uri_parser.parse_uri(url, warn=False)
                except Exception as exc:
                    raise StoreError(
                        f"MongoStore: malformed URL {redact(url)!r}: {redact(str(exc))}"
                    ) from None
        elif client is not None or sync_client is not None:
            some = client if client is not None else sync_client
            scheme, path = "mongodb", ""
            try:
                hosts = ",".join(f"{h}:{p}" for h, p in some._topology_settings.seeds)
            except Exception:
                hosts = "client"
        else:
            raise StoreError("MongoStore needs a URL (mongodb://host:port/db) or a client")
        self._db_name = database if database is not None else (path or "tideflow")
        if not self._db_name or any(ch in self._db_name for ch in '/\\. "$\x00'):
            raise StoreError(f"MongoStore: invalid database name {self._db_name!r}")
        self._describe = f"{scheme}://{hosts}/{self._db_name}"
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = (
            weakref.WeakKeyDictionary()
        )
        #: Whether the schema was checked (and set up): once per store, for both faces.
        self._ready = False
        self._twin: _BlockingMongoStore | None = None
        self._lock = threading.Lock()
        #: Per event loop, its change stream and news (``watch``).
        self._streams: dict[asyncio.AbstractEventLoop, _Stream] = {}

    # --- plumbing --------------------------------------------------------------------------

    def describe(self) -> str:
        """``mongodb://host:port/database`` (no password)."""
        return self._describe

    def __repr__(self) -> str:
        return f"MongoStore({self._describe!r}, lease_clock={self.lease_clock!r})"

    def _client_options(self) -> dict[str, Any]:
        ms = int(self.timeout * 1000)
        given = {k.lower() for k in _query_keys(self._url or "")}
        opts: dict[str, Any] = {}
        for key in ("timeoutMS", "serverSelectionTimeoutMS", "connectTimeoutMS"):
            if key.lower() not in given:
                opts[key] = ms
        return opts

    def _new_client(self, cls: Any) -> Any:
        if self._url is None:
            kind = "sync_client=" if cls is self._pymongo.MongoClient else "client="
            raise StoreError(
                f"{self._describe}: built from a client without a URL, it needs {kind}"
            )
        try:
            return cls(self._url, connect=False, **self._client_options())
        except self._pymongo.errors.PyMongoError as exc:
            raise StoreError(f"{self._describe}: bad client settings: {redact(str(exc))}") from None

    def _async_db(self) -> Any:
        loop = asyncio.get_running_loop()
        client = self._user_client or self._clients.get(loop)
        if client is None:
            client = self._new_client(self._pymongo.AsyncMongoClient)
            self._clients[loop] = client
            _close_with_loop(loop, client)
        return client[self._db_name], loop

    def _fail(self, what: str, exc: BaseException) -> StoreError:
        if bool(getattr(exc, "timeout", False)) or isinstance(
            exc, self._pymongo.errors.ServerSelectionTimeoutError
        ):
            msg = f"{self._describe}: {what} timed out after {self.timeout:g} s: {redact(str(exc))}"
        elif isinstance(exc, self._pymongo.errors.OperationFailure):
            details = exc.details or {}
            why = details.get("errmsg") or str(exc).partition(", full error:")[0]
            code = details.get("codeName") or exc.code
            if exc.code == 18:
                why = f"{why} (check the user, password and authSource)"
            msg = f"{self._describe}: {what} failed: {code}: {redact(str(why))}"
        else:
            msg = f"{self._describe}: {what} failed: {type(exc).__name__}: {redact(str(exc))}"
        return StoreError(msg)

    async def _exec(self, db: Any, op: _Op) -> Any:
        target = db if op.coll is None else db[_COLLS[op.coll]]
        if op.method == "find":
            return await target.find(*op.args, **op.kwargs).to_list(None)
        if op.method == "aggregate":
            cursor = await target.aggregate(*op.args, **op.kwargs)
            return await cursor.to_list(None)
        return await getattr(target, op.method)(*op.args, **op.kwargs)

    async def _drive(self, gen: Generator[_Op, Any, Any], db: Any) -> Any:
        errors = self._pymongo.errors
        what = "operation"
        try:
            op = next(gen)
            while True:
                what = op.what
                try:
                    result = await self._exec(db, op)
                except errors.PyMongoError as exc:
                    op = gen.throw(exc)
                    continue
                op = gen.send(result)
        except StopIteration as stop:
            return stop.value
        except errors.PyMongoError as exc:
            raise self._fail(what, exc) from exc

    async def _run(self, gen: Generator[_Op, Any, Any]) -> Any:
        db, _ = self._async_db()
        if not self._ready:
            await self._drive(self._setup(), db)
            self._ready = True
        return await self._drive(gen, db)

    def blocking(self) -> _BlockingMongoStore:
        """The synchronous twin over the same data and settings (one object, made once)."""
        with self._lock:
            if self._twin is None:
                self._twin = _BlockingMongoStore(self)
            return self._twin

    def close(self) -> None:
        """Closes the clients the store made (not a user-supplied one), as far as a synchronous
        call can: the twin's, and the async ones of event loops that are not running; and every
        change stream of ``watch`` (a waiting ``watch`` returns [])."""
        with self._lock:
            streams = list(self._streams.values())
            self._streams.clear()
        for sub in streams:
            sub.shut()
        if self._twin is not None:
            self._twin.close()
        for loop, client in list(self._clients.items()):
            if not loop.is_closed() and not loop.is_running():
                with contextlib.suppress(Exception):
                    loop.run_until_complete(client.close())
        self._clients.clear()

    async def aclose(self) -> None:
        """Closes the clients the store made, this event loop's included."""
        loop = asyncio.get_running_loop()
        with self._lock:
            sub = self._streams.pop(loop, None)
        if sub is not None:
            await sub.aclose()
        client = self._clients.pop(loop, None)
        if client is not None:
            await client.close()
        self.close()

    # --- news (Watchable) ------------------------------------------------------------------

    async def watch(self, timeout: float) -> builtins.list[str]:
        """See ``Watchable.watch``: a change stream per event loop on the instances collection,
        matching only news (``_NEWS_PIPELINE``), read by a task of that loop; the ids that came
        in between calls are returned (each once) by the next call."""
        wait = _check_wait(timeout)
        loop = asyncio.get_running_loop()
        sub = self._streams.get(loop)
        if sub is None or sub.closed:
            with self._lock:
                sub = _Stream(loop)
                self._streams[loop] = sub
            await self._open_stream(sub)  # the first call subscribes, then waits as any other
        elif sub.lost:
            await self._open_stream(sub)
            return []
        if not sub.news and wait > 0:
            sub.wake.clear()
            with contextlib.suppress(asyncio.TimeoutError, TimeoutError):
                await asyncio.wait_for(sub.wake.wait(), wait)
        if sub.closed:
            return []
        if sub.lost:
            await self._open_stream(sub)
            return []
        news = list(sub.news)
        sub.news.clear()
        return news

    async def _open_stream(self, sub: _Stream) -> None:
        """(Re)opens ``sub``'s change stream and starts the task that reads it, retrying until
        the store's timeout; then a ``StoreError`` (no password in it)."""
        errors = self._pymongo.errors
        await sub.stop()
        deadline = time.monotonic() + self.timeout
        delay = 0.02
        while True:
            try:
                db, loop = self._async_db()
                stream = await db[INSTANCES].watch(_NEWS_PIPELINE, max_await_time_ms=_NEWS_AWAIT_MS)
            except errors.PyMongoError as exc:
                if time.monotonic() + delay >= deadline or isinstance(exc, errors.OperationFailure):
                    sub.lost = True  # the next call tries again
                    raise self._fail("watch (change stream)", exc) from exc
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.25)
                continue
            if sub.closed:
                with contextlib.suppress(Exception):
                    await stream.close()
                return
            sub.news.clear()
            sub.lost = False
            sub.task = loop.create_task(sub.pump(stream), name="tideflow-mongo-watch")
            return

    def drop(self) -> None:
        """DESTRUCTIVE: drops tideflow's collections of this database (every instance, log and
        inbox, and the schema marker). Works when nothing was created yet."""
        self.blocking().drop()

    # --- the AsyncStore operations ---------------------------------------------------------

    async def create(
        self, meta: InstanceMeta, header: bytes, records: Sequence[bytes]
    ) -> StoredInstance | None:
        """See ``Store.create``: one upsert (``$setOnInsert``)."""
        return await self._run(self._create(meta, header, records))  # type: ignore[no-any-return]

    async def commit(self, commit: Commit) -> None:
        """See ``Store.commit``: one conditional update."""
        await self._run(self._commit(commit))

    async def get(self, id: str) -> StoredInstance | None:
        """See ``Store.get``."""
        return await self._run(self._get(id))  # type: ignore[no-any-return]

    async def load(self, id: str) -> Loaded | None:
        """See ``Store.load``."""
        return await self._run(self._load(id))  # type: ignore[no-any-return]

    async def records(self, id: str, after: int) -> builtins.list[bytes]:
        """See ``Store.records``."""
        return await self._run(self._records(id, after))  # type: ignore[no-any-return]

    async def signals(self, id: str, after: int) -> builtins.list[tuple[int, bytes]]:
        """See ``Store.signals``."""
        return await self._run(self._signals(id, after))  # type: ignore[no-any-return]

    async def list(self, query: ListQuery) -> ListPage:
        """See ``Store.list``."""
        return await self._run(self._list(query))  # type: ignore[no-any-return]

    async def counts(self) -> builtins.list[Count]:
        """See ``Store.counts``."""
        return await self._run(self._counts())  # type: ignore[no-any-return]

    async def delete(self, id: str) -> bool:
        """See ``Store.delete``."""
        return await self._run(self._delete(id))  # type: ignore[no-any-return]

    async def purge(self, before: float, statuses: Sequence[str]) -> int:
        """See ``Store.purge``."""
        return await self._run(self._purge(before, statuses))  # type: ignore[no-any-return]

    async def send_signal(self, id: str, record: bytes, now: float) -> int:
        """See ``Store.send_signal``: one conditional update of the instance (the inbox is in it)."""
        return await self._run(self._send_signal(id, record, now))  # type: ignore[no-any-return]

    async def due(self, now: float, limit: int | None) -> builtins.list[InstanceMeta]:
        """See ``Store.due``."""
        return await self._run(self._due(now, limit))  # type: ignore[no-any-return]

    async def claim(self, claim: Claim) -> builtins.list[InstanceMeta]:
        """See ``Store.claim``."""
        return await self._run(self._claim(claim))  # type: ignore[no-any-return]

    async def extend(self, id: str, owner: str, lease: float, now: float) -> float:
        """See ``Store.extend``."""
        return await self._run(self._extend(id, owner, lease, now))  # type: ignore[no-any-return]

    async def release(self, id: str, owner: str) -> bool:
        """See ``Store.release``."""
        return await self._run(self._release(id, owner))  # type: ignore[no-any-return]


def _check_wait(timeout: object) -> float:
    """``watch``'s ``timeout``, checked: a number of seconds, at least 0."""
    try:
        t = float(timeout)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise InvalidArgument(
            f"watch: timeout must be a number of seconds, got {timeout!r}"
        ) from None
    if not t >= 0 or t == float("inf"):
        raise InvalidArgument(f"watch: timeout must be a finite number >= 0, got {timeout!r}")
    return t


class _Stream:
    """One event loop's change stream (``watch``): the task reading it and the ids it heard."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        #: The task that reads the stream (None while there is none).
        self.task: asyncio.Task[None] | None = None
        #: The ids heard and not yet returned (a set: news coalesces).
        self.news: set[str] = set()
        #: Set on news, on a lost stream and on closing: wakes a waiting ``watch``.
        self.wake = asyncio.Event()
        #: The stream failed (or was never opened): the next ``watch`` reopens it.
        self.lost = True
        #: Closed by ``close``/``aclose``: a waiting ``watch`` returns [] at once.
        self.closed = False

    async def pump(self, stream: Any) -> None:
        """Reads the stream until cancelled or failed (pymongo resumes it by itself after a
        resumable error; one it cannot resume marks the stream lost)."""
        try:
            while True:
                change = await stream.try_next()
                if change is not None:
                    self.news.add(str(change["documentKey"]["_id"]))
                    self.wake.set()
        except asyncio.CancelledError:
            raise
        except Exception:
            if self.task is asyncio.current_task():
                self.lost = True
                self.wake.set()
        finally:
            with contextlib.suppress(Exception):
                await stream.close()

    async def stop(self) -> None:
        """Cancels the reading task (on its own loop) and waits for it to close the stream."""
        task, self.task = self.task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task

    async def aclose(self) -> None:
        """Closes the stream on its own running loop; a waiting ``watch`` returns []."""
        self.closed = True
        self.wake.set()
        await self.stop()

    def shut(self) -> None:
        """Closes the stream from anywhere: on its loop when that one is running, else at once
        (a loop that is closed took its tasks with it)."""
        self.closed = True
        loop = self.loop
        if loop.is_closed():
            return
        if loop.is_running():
            try:
                here = asyncio.get_running_loop() is loop
            except RuntimeError:
                here = False

            def cancel() -> None:
                self.wake.set()
                if self.task is not None:
                    self.task.cancel()

            if here:
                cancel()
            else:
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(cancel)
            return
        with contextlib.suppress(Exception):
            loop.run_until_complete(self.stop())


def _close_with_loop(loop: asyncio.AbstractEventLoop, client: Any) -> None:
    """Closes ``client`` (an ``AsyncMongoClient`` bound to ``loop``) when the loop is closed:
    ``asyncio.run`` and other owners close their loop when done with it, and a client whose loop
    is gone can no longer be closed (its sockets would leak). The loop's ``close`` is wrapped,
    once per client, to run ``client.close()`` on it first."""
    original = loop.close
    ref = weakref.ref(client)

    def close() -> None:
        c = ref()
        if c is not None and not loop.is_closed() and not loop.is_running():
            with contextlib.suppress(Exception):
                loop.run_until_complete(c.close())
        original()

    with contextlib.suppress(AttributeError, TypeError):  # a loop that takes no attributes
        loop.close = close  # type: ignore[method-assign]


def _query_keys(url: str) -> builtins.list[str]:
    from urllib.parse import parse_qsl

    query = url.partition("?")[2].partition("#")[0]
    return [k for k, _ in parse_qsl(query, keep_blank_values=True)]


class _BlockingMongoStore(_Logic):
    """``MongoStore``'s synchronous twin (``Store``), on pymongo's ``MongoClient``."""

    def __init__(self, parent: MongoStore) -> None:
        self._parent = parent
        self._pymongo = parent._pymongo
        self._server_clock = parent._server_clock
        self._db_name = parent._db_name
        self._client: Any = parent._user_sync
        self._lock = threading.Lock()

    def describe(self) -> str:
        """Same as the async store's."""
        return self._parent.describe()

    def __repr__(self) -> str:
        return f"MongoStore({self._parent.describe()!r}, lease_clock={self._parent.lease_clock!r}).blocking()"

    def _db(self) -> Any:
        with self._lock:
            if self._client is None:
                self._client = self._parent._new_client(self._pymongo.MongoClient)
            return self._client[self._db_name]

    def _exec(self, db: Any, op: _Op) -> Any:
        target = db if op.coll is None else db[_COLLS[op.coll]]
        if op.method in ("find", "aggregate"):
            return builtins.list(getattr(target, op.method)(*op.args, **op.kwargs))
        return getattr(target, op.method)(*op.args, **op.kwargs)

    def _drive(self, gen: Generator[_Op, Any, Any], db: Any) -> Any:
        errors = self._pymongo.errors
        what = "operation"
        try:
            op = next(gen)
            while True:
                what = op.what
                try:
                    result = self._exec(db, op)
                except errors.PyMongoError as exc:
                    op = gen.throw(exc)
                    continue
                op = gen.send(result)
        except StopIteration as stop:
            return stop.value
        except errors.PyMongoError as exc:
            raise self._parent._fail(what, exc) from exc

    def _run(self, gen: Generator[_Op, Any, Any]) -> Any:
        db = self._db()
        if not self._parent._ready:
            self._drive(self._setup(), db)
            self._parent._ready = True
        return self._drive(gen, db)

    def close(self) -> None:
        """Closes the client the twin made (not a user-supplied one)."""
        with self._lock:
            client, self._client = self._client, self._parent._user_sync
        if client is not None and client is not self._parent._user_sync:
            client.close()

    def drop(self) -> None:
        """See ``MongoStore.drop``."""
        db = self._db()

        def gen() -> Generator[_Op, Any, None]:
            for name in (INSTANCES, LOG, META):
                yield _op(None, "drop_collection", "drop", name)

        self._drive(gen(), db)
        self._parent._ready = False

    def create(
        self, meta: InstanceMeta, header: bytes, records: Sequence[bytes]
    ) -> StoredInstance | None:
        """See ``Store.create``."""
        return self._run(self._create(meta, header, records))  # type: ignore[no-any-return]

    def commit(self, commit: Commit) -> None:
        """See ``Store.commit``."""
        self._run(self._commit(commit))

    def get(self, id: str) -> StoredInstance | None:
        """See ``Store.get``."""
        return self._run(self._get(id))  # type: ignore[no-any-return]

    def load(self, id: str) -> Loaded | None:
        """See ``Store.load``."""
        return self._run(self._load(id))  # type: ignore[no-any-return]

    def records(self, id: str, after: int) -> builtins.list[bytes]:
        """See ``Store.records``."""
        return self._run(self._records(id, after))  # type: ignore[no-any-return]

    def signals(self, id: str, after: int) -> builtins.list[tuple[int, bytes]]:
        """See ``Store.signals``."""
        return self._run(self._signals(id, after))  # type: ignore[no-any-return]

    def list(self, query: ListQuery) -> ListPage:
        """See ``Store.list``."""
        return self._run(self._list(query))  # type: ignore[no-any-return]

    def counts(self) -> builtins.list[Count]:
        """See ``Store.counts``."""
        return self._run(self._counts())  # type: ignore[no-any-return]

    def delete(self, id: str) -> bool:
        """See ``Store.delete``."""
        return self._run(self._delete(id))  # type: ignore[no-any-return]

    def purge(self, before: float, statuses: Sequence[str]) -> int:
        """See ``Store.purge``."""
        return self._run(self._purge(before, statuses))  # type: ignore[no-any-return]

    def send_signal(self, id: str, record: bytes, now: float) -> int:
        """See ``Store.send_signal``."""
        return self._run(self._send_signal(id, record, now))  # type: ignore[no-any-return]

    def due(self, now: float, limit: int | None) -> builtins.list[InstanceMeta]:
        """See ``Store.due``."""
        return self._run(self._due(now, limit))  # type: ignore[no-any-return]

    def claim(self, claim: Claim) -> builtins.list[InstanceMeta]:
        """See ``Store.claim``."""
        return self._run(self._claim(claim))  # type: ignore[no-any-return]

    def extend(self, id: str, owner: str, lease: float, now: float) -> float:
        """See ``Store.extend``."""
        return self._run(self._extend(id, owner, lease, now))  # type: ignore[no-any-return]

    def release(self, id: str, owner: str) -> bool:
        """See ``Store.release``."""
        return self._run(self._release(id, owner))  # type: ignore[no-any-return]
