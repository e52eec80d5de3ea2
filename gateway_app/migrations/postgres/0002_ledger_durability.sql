-- compatibility: additive
-- Ledger durability (issue 10). Each ledger row carries the key its writer gave it, so a
-- batch replayed from the local spool after a database outage is never counted twice.
-- The request id cannot be that key: clients may send the same X-Request-Id twice.
-- Rows written before this migration have no key (NULLs never conflict).
ALTER TABLE usage_cost_events ADD COLUMN event_key TEXT;
CREATE UNIQUE INDEX usage_cost_events_event_key ON usage_cost_events (event_key);
-- The upstream reported no usage (cut stream, SIGTERM at the grace period, provider without
-- usage): cost_micros was estimated from the bytes relayed.
ALTER TABLE usage_cost_events ADD COLUMN estimated BOOLEAN NOT NULL DEFAULT false;
