-- Follow choreographies: find the events emitted because of an event
-- (GET /v1/events/{id} walks the causation chain both ways).
CREATE INDEX events_causation ON events (json_extract(headers, '$.causationid'));
