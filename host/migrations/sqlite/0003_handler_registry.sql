-- The handler registry: handlers managed through the admin API, and every
-- uploaded version of their components. A version is numbered per handler
-- from 1; identical bytes (same digest) are one version.
CREATE TABLE handlers (
    name            TEXT PRIMARY KEY NOT NULL,
    config          TEXT NOT NULL,
    active_version  INTEGER,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
);

CREATE TABLE handler_versions (
    handler      TEXT NOT NULL,
    version      INTEGER NOT NULL,
    digest       TEXT NOT NULL,
    component    BLOB NOT NULL,
    size         INTEGER NOT NULL,
    uploaded_at  INTEGER NOT NULL,
    PRIMARY KEY (handler, version),
    UNIQUE (handler, digest)
);
