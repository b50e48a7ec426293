-- Named leases: one holder at a time for work that must not run twice at
-- once across host instances (the outbox relay to an external broker keeps
-- per-key order only if one instance publishes). A lease that is not
-- renewed expires, and another instance takes over.
CREATE TABLE leases (
    name        TEXT PRIMARY KEY NOT NULL,
    holder      TEXT NOT NULL,
    expires_at  BIGINT NOT NULL
);
