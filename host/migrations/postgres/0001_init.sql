-- Sluice store on PostgreSQL: the event log, the outbox, consumer positions,
-- idempotency records, per-key state, the dead-letter queue and the handler
-- registry, in one database so that a handler's outcome commits in one
-- transaction. The same schema as the SQLite migrations 0001-0005, in one
-- step. Integers are BIGINT (times are ms since the epoch) so that every
-- column decodes as i64, as on SQLite.
--
-- JSON (headers, configurations, DLQ payloads) is stored as text, encoded as
-- on SQLite: JSONB cannot hold "\u0000" in a string, which event headers may.

-- Topics of the embedded log.
CREATE TABLE topics (
    name        TEXT PRIMARY KEY,
    partitions  BIGINT NOT NULL CHECK (partitions > 0),
    created_at  BIGINT NOT NULL
);

-- The log. `seq` is global and must increase in commit order, so that a
-- consumer can follow a topic with one cursor (`seq > position`). A sequence
-- alone does not give that (values are taken before commit, so a lower one
-- can become visible later): every transaction that inserts here first takes
-- the log's advisory lock and allocates `seq` under it. `offset` numbers the
-- events of one partition.
CREATE TABLE events (
    seq           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    topic         TEXT NOT NULL,
    partition     BIGINT NOT NULL,
    "offset"      BIGINT NOT NULL,
    id            TEXT NOT NULL,
    source        TEXT NOT NULL,
    type          TEXT NOT NULL,
    time          TEXT,
    content_type  TEXT,
    data_schema   TEXT,
    data          BYTEA NOT NULL,
    headers       TEXT NOT NULL,
    key           TEXT,
    appended_at   BIGINT NOT NULL,
    -- The `causationid` header, copied out of `headers` on insert: follows
    -- choreographies (GET /v1/events/{id} walks the causation chain).
    causation_id  TEXT,
    UNIQUE (topic, partition, "offset")
);
CREATE INDEX events_topic_seq ON events (topic, seq);
CREATE INDEX events_id ON events (id);
CREATE INDEX events_causation ON events (causation_id) WHERE causation_id IS NOT NULL;

-- Next offset of each partition (written under the log's lock).
CREATE TABLE partition_heads (
    topic       TEXT NOT NULL,
    partition   BIGINT NOT NULL,
    next_offset BIGINT NOT NULL,
    PRIMARY KEY (topic, partition)
);

-- Consumer positions: every event of `topic` with seq <= `position` is done
-- for `handler` (processed, skipped or dead-lettered).
CREATE TABLE positions (
    handler   TEXT NOT NULL,
    topic     TEXT NOT NULL,
    position  BIGINT NOT NULL,
    PRIMARY KEY (handler, topic)
);

-- Idempotency: one row per (handler, event id) that reached a final outcome.
CREATE TABLE processed (
    handler       TEXT NOT NULL,
    event_id      TEXT NOT NULL,
    topic         TEXT NOT NULL,
    seq           BIGINT NOT NULL,
    outcome       TEXT NOT NULL,
    version       TEXT NOT NULL,
    attempts      BIGINT NOT NULL,
    processed_at  BIGINT NOT NULL,
    PRIMARY KEY (handler, event_id)
);
-- Event detail (GET /v1/events/{id}) looks records up by event id alone.
CREATE INDEX processed_event_id ON processed (event_id);

-- Per-key handler state.
CREATE TABLE state (
    handler  TEXT NOT NULL,
    key      TEXT NOT NULL,
    name     TEXT NOT NULL,
    value    BYTEA NOT NULL,
    PRIMARY KEY (handler, key, name)
);

-- Transactional outbox: events emitted by handlers, published by the relay.
CREATE TABLE outbox (
    seq           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id      TEXT NOT NULL,
    topic         TEXT NOT NULL,
    key           TEXT,
    event         TEXT NOT NULL,
    handler       TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    delivered_at  BIGINT
);
CREATE INDEX outbox_pending ON outbox (seq) WHERE delivered_at IS NULL;

-- Failed attempts of events that are still being retried or were
-- dead-lettered: the DLQ entry carries all of them.
CREATE TABLE attempts (
    handler    TEXT NOT NULL,
    event_id   TEXT NOT NULL,
    attempt    BIGINT NOT NULL,
    outcome    TEXT NOT NULL,
    error      TEXT NOT NULL,
    version    TEXT NOT NULL,
    at         BIGINT NOT NULL,
    PRIMARY KEY (handler, event_id, attempt)
);

-- Dead-letter queue.
CREATE TABLE dlq (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    handler     TEXT NOT NULL,
    version     TEXT NOT NULL,
    topic       TEXT NOT NULL,
    seq         BIGINT NOT NULL,
    event_id    TEXT NOT NULL,
    key         TEXT,
    event       TEXT NOT NULL,
    attempts    TEXT NOT NULL,
    error       TEXT NOT NULL,
    status      TEXT NOT NULL DEFAULT 'pending',
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);
CREATE INDEX dlq_handler_status ON dlq (handler, status, id);

-- Keys held back after a dead-lettered event, for handlers in `park` mode,
-- until the entry is redriven or discarded. Events of a parked key wait in
-- `parked_events` (in log order) instead of in memory.
CREATE TABLE parked_keys (
    handler  TEXT NOT NULL,
    key      TEXT NOT NULL,
    dlq_id   BIGINT NOT NULL,
    PRIMARY KEY (handler, key)
);

CREATE TABLE parked_events (
    handler  TEXT NOT NULL,
    key      TEXT NOT NULL,
    seq      BIGINT NOT NULL,
    topic    TEXT NOT NULL,
    PRIMARY KEY (handler, key, seq)
);

-- Operator actions on DLQ entries, for the handler's dispatcher to carry
-- out: `redrive` runs the event again (outside the log order, on `version`
-- if one was chosen), and both `redrive` and `discard` release the key if it
-- is parked.
CREATE TABLE dlq_actions (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    handler     TEXT NOT NULL,
    dlq_id      BIGINT NOT NULL,
    action      TEXT NOT NULL,
    version     BIGINT,
    created_at  BIGINT NOT NULL
);

-- The handler registry: handlers and every uploaded version of their
-- components. A version is numbered per handler from 1; identical bytes
-- (same digest) are one version. `managed_by` says who owns the
-- configuration: `config` (sluice.toml, which wins at every start) or `api`.
CREATE TABLE handlers (
    name            TEXT PRIMARY KEY,
    config          TEXT NOT NULL,
    active_version  BIGINT,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    managed_by      TEXT NOT NULL DEFAULT 'config'
);

CREATE TABLE handler_versions (
    handler      TEXT NOT NULL,
    version      BIGINT NOT NULL,
    digest       TEXT NOT NULL,
    component    BYTEA NOT NULL,
    size         BIGINT NOT NULL,
    uploaded_at  BIGINT NOT NULL,
    PRIMARY KEY (handler, version),
    UNIQUE (handler, digest)
);
