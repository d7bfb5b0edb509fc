"""The SQL of the PostgreSQL store: its schema (tables, indexes, PL/pgSQL functions) and the one
statement each operation sends. Everything is built for one schema name, already quoted.

Layout, in the store's schema (``tideflow`` by default):

- ``meta(key, value)``: ``application = tideflow`` (the marker) and ``schema_version = 2``;
- ``instances``: the ``InstanceMeta`` fields, the header (``bytea``), ``seq`` (creation order: the
  listing order and what a cursor names), ``nsig`` (how many signals the inbox holds: the next
  signal's number, and what a commit compares ``signals_seen`` with) and ``token`` (the random
  token of the last create/commit, by which a retried call recognises its own write);
- ``log(id, version, records bytea[])``: one row per commit that appended records;
- ``inbox(id, num, record, token)``: one row per signal.

``log`` and ``inbox`` rows are written only while the instance's row is locked (by the commit's
or the signal's ``UPDATE``), and ``tf_delete``/``tf_purge`` lock the instances before they delete
their rows: so no foreign key is needed (its check would cost every commit a lookup).
No index covers ``updated_at``, ``version`` or ``token``, which every commit changes: a commit
that keeps the status, due time and lease (a step of a chain) is a HOT update, which touches no
index of ``instances``.

News for watchers (``PostgresStore.watch``) is a ``pg_notify(channel, id)`` in the statements
that make it, sent only when the condition holds (so a step of a chain sends none): ``tf_create``
(a new instance), ``tf_signal``, the release statement and the commit statement (a commit that
finishes the instance or leaves it suspended and due at or before its ``updated_at``). The
channel is derived from the schema name (``channel_name``) and written into the functions.

Schema versions: 1 had no notifications; 2 adds them to ``tf_create`` and ``tf_signal``
(``upgrade_ddl`` turns a version 1 schema into a version 2 one: it replaces the functions).
"""

from __future__ import annotations

import hashlib

#: The schema version this tideflow writes (``meta.schema_version``).
SCHEMA_VERSION = 2
#: The oldest schema version this tideflow upgrades in place (``upgrade_ddl``).
OLDEST_UPGRADABLE = 1
#: The value of ``meta.application`` that marks a schema as tideflow's.
MARKER = "tideflow"

FINISHED_SQL = "('completed', 'failed', 'cancelled')"

#: The indexed fields, in ``InstanceMeta`` order.
META_COLS = (
    "id, workflow, plan_hash, status, version, created_at, updated_at, due_at, owner, "
    "lease_until, error"
)


def _now(param: str) -> str:
    """The lease clock: the engine's time when ``param`` is not NULL, else the server's."""
    return f"coalesce({param}::float8, extract(epoch from clock_timestamp())::float8)"


def channel_name(schema: str) -> str:
    """The LISTEN/NOTIFY channel of the store in ``schema`` (unquoted): a hash of the schema
    name, so that any schema name gives a channel within PostgreSQL's 63 bytes."""
    return "tideflow_" + hashlib.sha1(f"tideflow:{schema}".encode()).hexdigest()[:32]


def literal(text: str) -> str:
    """``text`` as an SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def schema_ddl(s: str, channel: str) -> list[str]:
    """The statements that create the schema ``s`` (quoted) with its news on ``channel``
    (unquoted), in order; run in one transaction."""
    return [*_tables(s), *_functions(s, channel)]


def upgrade_ddl(s: str, channel: str, version: int) -> list[str]:
    """The statements that bring the schema ``s`` from ``version`` to ``SCHEMA_VERSION``
    (``meta.schema_version`` is set by the caller); run in one transaction."""
    if not OLDEST_UPGRADABLE <= version < SCHEMA_VERSION:
        raise ValueError(f"no upgrade from schema version {version}")
    # 1 -> 2: the functions that make news notify (same signatures: replaced in place)
    return _functions(s, channel)


def _tables(s: str) -> list[str]:
    return [
        f"CREATE SCHEMA IF NOT EXISTS {s}",
        f"CREATE TABLE {s}.meta (key text PRIMARY KEY, value text NOT NULL)",
        f"""CREATE TABLE {s}.instances (
            id text PRIMARY KEY,
            seq bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
            workflow text NOT NULL,
            plan_hash text NOT NULL,
            status text NOT NULL,
            version bigint NOT NULL,
            created_at double precision NOT NULL,
            updated_at double precision NOT NULL,
            due_at double precision,
            owner text,
            lease_until double precision,
            error text,
            header bytea NOT NULL,
            nsig integer NOT NULL DEFAULT 0,
            token text
        ) WITH (fillfactor = 80)""",
        f"""CREATE TABLE {s}.log (
            id text NOT NULL,
            version bigint NOT NULL,
            records bytea[] NOT NULL,
            PRIMARY KEY (id, version)
        )""",
        f"""CREATE TABLE {s}.inbox (
            id text NOT NULL,
            num integer NOT NULL,
            record bytea NOT NULL,
            token text,
            PRIMARY KEY (id, num)
        )""",
        f"CREATE INDEX instances_status ON {s}.instances (status, seq)",
        f"CREATE INDEX instances_workflow ON {s}.instances (workflow, seq)",
        f"CREATE INDEX instances_plan ON {s}.instances (plan_hash, seq)",
        f"""CREATE INDEX instances_due ON {s}.instances (due_at, seq)
            WHERE status IN ('pending', 'suspended')""",
        f"CREATE INDEX instances_leased ON {s}.instances (lease_until) WHERE owner IS NOT NULL",
    ]


def _functions(s: str, channel: str) -> list[str]:
    fin = FINISHED_SQL
    ch = literal(channel)
    return [
        # -- create-or-return: no row when written (or when the stored one is our own write).
        f"""CREATE OR REPLACE FUNCTION {s}.tf_create(
            p_id text, p_workflow text, p_plan text, p_status text, p_created float8,
            p_updated float8, p_due float8, p_owner text, p_lease float8, p_error text,
            p_header bytea, p_records bytea[], p_token text)
        RETURNS SETOF {s}.instances
        LANGUAGE plpgsql AS $fn$
        BEGIN
            INSERT INTO {s}.instances (id, workflow, plan_hash, status, version, created_at,
                    updated_at, due_at, owner, lease_until, error, header, token)
                VALUES (p_id, p_workflow, p_plan, p_status, 1, p_created, p_updated, p_due,
                    p_owner, p_lease, p_error, p_header, p_token)
                ON CONFLICT (id) DO NOTHING;
            IF FOUND THEN
                IF cardinality(p_records) > 0 THEN
                    INSERT INTO {s}.log (id, version, records) VALUES (p_id, 1, p_records);
                END IF;
                PERFORM pg_notify({ch}, p_id);
                RETURN;
            END IF;
            RETURN QUERY SELECT * FROM {s}.instances i
                WHERE i.id = p_id AND i.token IS DISTINCT FROM p_token;
        END
        $fn$""",
        # -- send_signal: 0 ok (o_num), 1 unknown, 2 finished (o_status).
        f"""CREATE OR REPLACE FUNCTION {s}.tf_signal(
            p_id text, p_record bytea, p_now float8, p_token text, p_retry boolean,
            OUT o_code integer, OUT o_num integer, OUT o_status text)
        LANGUAGE plpgsql AS $fn$
        BEGIN
            SELECT i.status INTO o_status FROM {s}.instances i WHERE i.id = p_id FOR UPDATE;
            IF NOT FOUND THEN o_code := 1; RETURN; END IF;
            IF p_retry THEN
                SELECT b.num INTO o_num FROM {s}.inbox b WHERE b.id = p_id AND b.token = p_token;
                IF FOUND THEN o_code := 0; RETURN; END IF;
            END IF;
            IF o_status IN {fin} THEN o_code := 2; RETURN; END IF;
            UPDATE {s}.instances SET nsig = nsig + 1,
                    due_at = least(coalesce(due_at, p_now), p_now)
                WHERE id = p_id RETURNING nsig INTO o_num;
            INSERT INTO {s}.inbox (id, num, record, token) VALUES (p_id, o_num, p_record, p_token);
            PERFORM pg_notify({ch}, p_id);
            o_code := 0;
        END
        $fn$""",
        # -- delete and purge: lock the instances first, so that no commit or signal adds rows
        # of theirs to the log or inbox meanwhile (they wait, then find no instance)
        f"""CREATE OR REPLACE FUNCTION {s}.tf_delete(p_ids text[]) RETURNS bigint
        LANGUAGE plpgsql AS $fn$
        DECLARE
            ids text[];
        BEGIN
            SELECT coalesce(array_agg(i.id), '{{}}') INTO ids
              FROM (SELECT id FROM {s}.instances WHERE id = ANY(p_ids) ORDER BY id FOR UPDATE) i;
            DELETE FROM {s}.log WHERE id = ANY(ids);
            DELETE FROM {s}.inbox WHERE id = ANY(ids);
            DELETE FROM {s}.instances WHERE id = ANY(ids);
            RETURN cardinality(ids);
        END
        $fn$""",
        f"""CREATE OR REPLACE FUNCTION {s}.tf_purge(p_before float8, p_statuses text[]) RETURNS bigint
        LANGUAGE plpgsql AS $fn$
        BEGIN
            RETURN {s}.tf_delete(ARRAY(
                SELECT id FROM {s}.instances
                 WHERE status IN {fin} AND (p_statuses IS NULL OR status = ANY(p_statuses))
                   AND updated_at < p_before));
        END
        $fn$""",
        # -- extend: 0 ok (o_until), 1 unknown, 2 lease lost (o_holder: the live holder).
        f"""CREATE OR REPLACE FUNCTION {s}.tf_extend(
            p_id text, p_owner text, p_lease float8, p_now float8,
            OUT o_code integer, OUT o_holder text, OUT o_until float8)
        LANGUAGE plpgsql AS $fn$
        DECLARE
            r record;
            t float8;
            live boolean;
        BEGIN
            SELECT i.owner, i.lease_until INTO r FROM {s}.instances i WHERE i.id = p_id FOR UPDATE;
            IF NOT FOUND THEN o_code := 1; RETURN; END IF;
            t := {_now("p_now")};
            live := r.owner IS NOT NULL AND r.lease_until IS NOT NULL AND r.lease_until > t;
            IF NOT (live AND r.owner = p_owner) THEN
                o_code := 2;
                IF live THEN o_holder := r.owner; END IF;
                RETURN;
            END IF;
            o_until := t + p_lease;
            UPDATE {s}.instances SET lease_until = o_until WHERE id = p_id;
            o_code := 0;
        END
        $fn$""",
    ]


class Statements:
    """The statement of every operation, for one (quoted) schema."""

    def __init__(self, s: str, channel: str) -> None:
        fin = FINISHED_SQL
        ch = literal(channel)
        cols = META_COLS
        now = _now("$12")
        # One statement, no PL/pgSQL: the conditional UPDATE (a HOT one when the indexed fields
        # stay), the log row when it applied, the news when it applied and finished the instance
        # or left it suspended and due (``n``: evaluated through the FROM clause, and calling
        # pg_notify only when the condition holds), and the row as it stood (to say why it did
        # not apply, or to recognise a resend of ours by its token).
        self.commit = f"""WITH u AS (
                UPDATE {s}.instances i SET
                    status = $3, version = $2 + 1, updated_at = $4,
                    due_at = CASE WHEN $3 = 'suspended' AND i.nsig > $8
                                  THEN least(coalesce($5::float8, $4), $4) ELSE $5::float8 END,
                    error = $10, header = coalesce($6::bytea, i.header), token = $11,
                    owner = CASE WHEN $9::text IS NULL OR $3 IN {fin} THEN NULL ELSE i.owner END,
                    lease_until = CASE WHEN $9::text IS NULL OR $3 IN {fin}
                                       THEN NULL ELSE i.lease_until END
                WHERE i.id = $1 AND i.version = $2
                  AND CASE WHEN $9::text IS NOT NULL
                           THEN i.owner = $9 AND i.lease_until > {now}
                           ELSE i.owner IS NULL OR i.lease_until IS NULL
                                OR i.lease_until <= {now} END
                RETURNING i.due_at),
            l AS (INSERT INTO {s}.log (id, version, records)
                SELECT $1, $2 + 1, $7::bytea[] FROM u WHERE cardinality($7::bytea[]) > 0),
            n AS (SELECT pg_notify({ch}, $1) FROM u
                WHERE $3 IN {fin} OR ($3 = 'suspended' AND u.due_at <= $4))
            SELECT EXISTS (SELECT 1 FROM u), i.owner, i.lease_until, i.version, i.token, {now}
            FROM (SELECT count(*) FROM n) AS one LEFT JOIN {s}.instances i ON i.id = $1"""
        #: The row as it stands now (a fresh snapshot), when the commit's own read raced a
        #: concurrent commit: to say why it did not apply.
        self.commit_state = (
            f"SELECT true, owner, lease_until, version, token, {_now('$2')} "
            f"FROM {s}.instances WHERE id = $1"
        )
        self.create = (
            f"SELECT {cols}, header FROM {s}.tf_create({', '.join(f'${i}' for i in range(1, 14))})"
        )
        self.signal = f"SELECT o_code, o_num, o_status FROM {s}.tf_signal($1, $2, $3, $4, $5)"
        self.extend = f"SELECT o_code, o_holder, o_until FROM {s}.tf_extend($1, $2, $3, $4)"
        self.get = f"SELECT {cols}, header FROM {s}.instances WHERE id = $1"
        self.load = f"""SELECT {cols}, i.header,
            ARRAY(SELECT u.r FROM {s}.log l, unnest(l.records) WITH ORDINALITY AS u(r, n)
                  WHERE l.id = i.id ORDER BY l.version, u.n) AS records,
            ARRAY(SELECT b.num FROM {s}.inbox b WHERE b.id = i.id ORDER BY b.num) AS nums,
            ARRAY(SELECT b.record FROM {s}.inbox b WHERE b.id = i.id ORDER BY b.num) AS sigs
            FROM {s}.instances i WHERE i.id = $1"""
        self.records = f"""SELECT ARRAY(
            SELECT u.r FROM {s}.log l, unnest(l.records) WITH ORDINALITY AS u(r, n)
            WHERE l.id = $1 AND l.version > $2 ORDER BY l.version, u.n)"""
        self.signals = f"SELECT num, record FROM {s}.inbox WHERE id = $1 AND num > $2 ORDER BY num"
        self.list = f"""SELECT {cols}, seq FROM {s}.instances
            WHERE ($1::bigint IS NULL OR seq < $1)
              AND ($2::text[] IS NULL OR status = ANY($2::text[]))
              AND ($3::text IS NULL OR workflow = $3)
              AND ($4::text IS NULL OR plan_hash = $4)
            ORDER BY seq DESC LIMIT $5"""
        self.counts = f"SELECT workflow, status, count(*) FROM {s}.instances GROUP BY 1, 2"
        self.delete = f"SELECT {s}.tf_delete(ARRAY[$1::text])"
        self.purge = f"SELECT {s}.tf_purge($1, $2::text[])"
        self.due = f"""SELECT {cols} FROM {s}.instances
            WHERE status IN ('pending', 'suspended') AND due_at <= $1
              AND NOT (owner IS NOT NULL AND lease_until IS NOT NULL
                       AND lease_until > {_now("$2")})
            ORDER BY due_at, seq LIMIT $3"""
        # $1 owner, $2 limit, $3 the engine's now (due times), $4 the lease clock's now or NULL
        # (the server's), $5 plan hashes, $6 the lease.
        self.claim = f"""WITH c AS (
                SELECT id FROM {s}.instances
                WHERE plan_hash = ANY($5::text[]) AND status NOT IN {fin}
                  AND CASE WHEN owner IS NOT NULL
                           THEN lease_until IS NULL OR lease_until <= {_now("$4")}
                           ELSE status = 'pending' OR (status = 'suspended' AND due_at <= $3)
                      END
                ORDER BY coalesce(due_at, updated_at), seq
                LIMIT $2 FOR UPDATE SKIP LOCKED)
            UPDATE {s}.instances i SET owner = $1, lease_until = {_now("$4")} + $6::float8
            FROM c WHERE i.id = c.id
            RETURNING {", ".join("i." + c.strip() for c in cols.split(","))}, i.seq"""
        # The news (``n``) is sent only when the lease was released.
        self.release = f"""WITH u AS (UPDATE {s}.instances SET owner = NULL, lease_until = NULL
                WHERE id = $1 AND owner = $2 RETURNING 1),
            n AS (SELECT pg_notify({ch}, $1) FROM u)
            SELECT EXISTS (SELECT 1 FROM u), EXISTS (SELECT 1 FROM {s}.instances WHERE id = $1)
            FROM (SELECT count(*) FROM n) AS one"""
