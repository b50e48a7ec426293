-- Wake-ups for other host instances, sent as the writing transaction
-- commits: `sluice_outbox` when outbox rows are inserted (by a handler's
-- outcome or by an application through sluice-outbox), so relays do not
-- wait for their poll; `sluice_registry` with a handler's name when its
-- registry row changes (created, reconfigured, activated, deleted) or it
-- gets a new version (which the others compile ahead of its activation),
-- so every instance runs what the registry says within a second.

CREATE FUNCTION sluice_notify_outbox() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('sluice_outbox', '');
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER outbox_notify AFTER INSERT ON outbox
    FOR EACH STATEMENT EXECUTE FUNCTION sluice_notify_outbox();

CREATE FUNCTION sluice_notify_registry() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('sluice_registry', OLD.name);
    ELSE
        PERFORM pg_notify('sluice_registry', NEW.name);
    END IF;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER handlers_notify AFTER INSERT OR UPDATE OR DELETE ON handlers
    FOR EACH ROW EXECUTE FUNCTION sluice_notify_registry();

CREATE FUNCTION sluice_notify_version() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('sluice_registry', NEW.handler);
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER handler_versions_notify AFTER INSERT ON handler_versions
    FOR EACH ROW EXECUTE FUNCTION sluice_notify_version();
