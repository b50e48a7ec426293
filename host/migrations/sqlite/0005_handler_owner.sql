-- Who owns a handler's configuration: `config` (declared in sluice.toml,
-- which wins at every start) or `api` (created with PUT /v1/handlers/{name}
-- and run at start-up from the registry).
ALTER TABLE handlers ADD COLUMN managed_by TEXT NOT NULL DEFAULT 'config';
