-- Sluice embedded store: the event log, the outbox, consumer positions,
-- idempotency records, per-key state and the dead-letter queue, in one
-- SQLite database so that a handler's outcome commits in one transaction.

-- Topics of the embedded log.
CREATE TABLE topics (
    name        TEXT PRIMARY KEY NOT NULL,
    partitions  INTEGER NOT NULL CHECK (partitions > 0),
    created_at  INTEGER NOT NULL
);

-- The log. `seq` is global and increases in commit order (SQLite has one
-- writer), so a consumer can follow a topic with one cursor; `offset`
-- numbers the events of one partition.
CREATE TABLE events (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    topic         TEXT NOT NULL,
    partition     INTEGER NOT NULL,
    "offset"      INTEGER NOT NULL,
    id            TEXT NOT NULL,
    source        TEXT NOT NULL,
    type          TEXT NOT NULL,
    time          TEXT,
    content_type  TEXT,
    data_schema   TEXT,
    data          BLOB NOT NULL,
    headers       TEXT NOT NULL,
    key           TEXT,
    appended_at   INTEGER NOT NULL,
    UNIQUE (topic, partition, "offset")
);
CREATE INDEX events_topic_seq ON events (topic, seq);
CREATE INDEX events_id ON events (id);

-- Next offset of each partition.
CREATE TABLE partition_heads (
    topic       TEXT NOT NULL,
    partition   INTEGER NOT NULL,
    next_offset INTEGER NOT NULL,
    PRIMARY KEY (topic, partition)
) WITHOUT ROWID;

-- Consumer positions: every event of `topic` with seq <= `position` is done
-- for `handler` (processed, skipped or dead-lettered).
CREATE TABLE positions (
    handler   TEXT NOT NULL,
    topic     TEXT NOT NULL,
    position  INTEGER NOT NULL,
    PRIMARY KEY (handler, topic)
) WITHOUT ROWID;

-- Idempotency: one row per (handler, event id) that reached a final outcome.
CREATE TABLE processed (
    handler       TEXT NOT NULL,
    event_id      TEXT NOT NULL,
    topic         TEXT NOT NULL,
    seq           INTEGER NOT NULL,
    outcome       TEXT NOT NULL,
    version       TEXT NOT NULL,
    attempts      INTEGER NOT NULL,
    processed_at  INTEGER NOT NULL,
    PRIMARY KEY (handler, event_id)
) WITHOUT ROWID;

-- Per-key handler state.
CREATE TABLE state (
    handler  TEXT NOT NULL,
    key      TEXT NOT NULL,
    name     TEXT NOT NULL,
    value    BLOB NOT NULL,
    PRIMARY KEY (handler, key, name)
) WITHOUT ROWID;

-- Transactional outbox: events emitted by handlers, published by the relay.
CREATE TABLE outbox (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id      TEXT NOT NULL,
    topic         TEXT NOT NULL,
    key           TEXT,
    event         TEXT NOT NULL,
    handler       TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    delivered_at  INTEGER
);
CREATE INDEX outbox_pending ON outbox (seq) WHERE delivered_at IS NULL;

-- Failed attempts of events that are still being retried or were
-- dead-lettered: the DLQ entry carries all of them.
CREATE TABLE attempts (
    handler    TEXT NOT NULL,
    event_id   TEXT NOT NULL,
    attempt    INTEGER NOT NULL,
    outcome    TEXT NOT NULL,
    error      TEXT NOT NULL,
    version    TEXT NOT NULL,
    at         INTEGER NOT NULL,
    PRIMARY KEY (handler, event_id, attempt)
) WITHOUT ROWID;

-- Dead-letter queue.
CREATE TABLE dlq (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    handler     TEXT NOT NULL,
    version     TEXT NOT NULL,
    topic       TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    event_id    TEXT NOT NULL,
    key         TEXT,
    event       TEXT NOT NULL,
    attempts    TEXT NOT NULL,
    error       TEXT NOT NULL,
    status      TEXT NOT NULL DEFAULT 'pending',
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);
CREATE INDEX dlq_handler_status ON dlq (handler, status, id);

-- Keys held back after a dead-lettered event, for handlers in `park` mode,
-- until the entry is redriven or discarded. Events of a parked key wait in
-- `parked_events` (in log order) instead of in memory.
CREATE TABLE parked_keys (
    handler  TEXT NOT NULL,
    key      TEXT NOT NULL,
    dlq_id   INTEGER NOT NULL,
    PRIMARY KEY (handler, key)
) WITHOUT ROWID;

CREATE TABLE parked_events (
    handler  TEXT NOT NULL,
    key      TEXT NOT NULL,
    seq      INTEGER NOT NULL,
    topic    TEXT NOT NULL,
    PRIMARY KEY (handler, key, seq)
) WITHOUT ROWID;

-- Operator actions on DLQ entries, for the handler's dispatcher to carry
-- out: `redrive` runs the event again (outside the log order), and both
-- `redrive` and `discard` release the key if it is parked.
CREATE TABLE dlq_actions (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    handler     TEXT NOT NULL,
    dlq_id      INTEGER NOT NULL,
    action      TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);
