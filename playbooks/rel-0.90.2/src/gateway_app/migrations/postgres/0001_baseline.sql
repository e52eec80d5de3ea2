-- Baseline schema. Times are epoch milliseconds (UTC); money is integer micro-USD.
CREATE TABLE service_accounts (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    disabled BOOLEAN NOT NULL DEFAULT false,
    budget_window TEXT CHECK (budget_window IN ('daily', 'weekly', 'monthly')),
    budget_limit_micros BIGINT,
    source TEXT NOT NULL DEFAULT 'api',
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE api_keys (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    public_id TEXT NOT NULL UNIQUE,
    secret_hash TEXT NOT NULL,
    name TEXT NOT NULL,
    service_account_id BIGINT NOT NULL REFERENCES service_accounts (id),
    model_grants TEXT NOT NULL DEFAULT '*',
    source TEXT NOT NULL DEFAULT 'api',
    rotated_from_id BIGINT REFERENCES api_keys (id),
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    expires_at BIGINT,
    revoked_at BIGINT
);
CREATE INDEX api_keys_updated_at ON api_keys (updated_at);

CREATE TABLE admin_users (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    email TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    must_change_password BOOLEAN NOT NULL DEFAULT false,
    disabled BOOLEAN NOT NULL DEFAULT false,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    password_changed_at BIGINT
);

CREATE TABLE admin_sessions (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    token_hash TEXT NOT NULL UNIQUE,
    admin_user_id BIGINT NOT NULL REFERENCES admin_users (id),
    client_addr TEXT,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    revoked_at BIGINT
);
CREATE INDEX admin_sessions_user ON admin_sessions (admin_user_id);

CREATE TABLE auth_throttle (
    scope TEXT NOT NULL,
    subject TEXT NOT NULL,
    window_start BIGINT NOT NULL,
    failures BIGINT NOT NULL,
    PRIMARY KEY (scope, subject)
);

CREATE TABLE request_logs (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    request_id TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    api_key_id BIGINT,
    service_account_id BIGINT,
    operation TEXT NOT NULL,
    model TEXT,
    provider TEXT,
    upstream_model TEXT,
    stream BOOLEAN NOT NULL DEFAULT false,
    status_code BIGINT NOT NULL,
    error_code TEXT,
    latency_ms BIGINT NOT NULL,
    ttft_ms BIGINT,
    prompt_tokens BIGINT,
    completion_tokens BIGINT,
    cost_micros BIGINT,
    attempts BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX request_logs_created_at ON request_logs (created_at);
CREATE INDEX request_logs_key_time ON request_logs (api_key_id, created_at);

CREATE TABLE request_log_payloads (
    request_log_id BIGINT PRIMARY KEY,
    request_body TEXT,
    response_body TEXT,
    truncated BOOLEAN NOT NULL DEFAULT false
);

CREATE TABLE request_log_tags (
    request_log_id BIGINT NOT NULL,
    name TEXT NOT NULL,
    value TEXT NOT NULL
);
CREATE INDEX request_log_tags_log ON request_log_tags (request_log_id);

CREATE TABLE request_log_attempts (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    request_log_id BIGINT NOT NULL,
    attempt BIGINT NOT NULL,
    provider TEXT NOT NULL,
    upstream_model TEXT NOT NULL,
    status_code BIGINT,
    error TEXT,
    latency_ms BIGINT NOT NULL
);
CREATE INDEX request_log_attempts_log ON request_log_attempts (request_log_id);

-- The spend ledger: purges never touch it; budgets and reports read it.
CREATE TABLE usage_cost_events (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    request_id TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    api_key_id BIGINT,
    service_account_id BIGINT,
    model TEXT NOT NULL,
    provider TEXT,
    upstream_model TEXT,
    prompt_tokens BIGINT,
    completion_tokens BIGINT,
    cost_micros BIGINT NOT NULL DEFAULT 0,
    pricing_status TEXT NOT NULL CHECK (pricing_status IN ('priced', 'unpriced', 'usage_missing'))
);
CREATE INDEX usage_cost_events_account_time ON usage_cost_events (service_account_id, created_at);

-- Admin overrides every replica polls: disabled providers/routes, circuit resets.
CREATE TABLE provider_overrides (
    provider TEXT PRIMARY KEY,
    enabled BOOLEAN NOT NULL,
    updated_at BIGINT NOT NULL,
    updated_by TEXT
);

CREATE TABLE route_overrides (
    route_key TEXT PRIMARY KEY,
    enabled BOOLEAN,
    circuit_reset_at BIGINT,
    updated_at BIGINT NOT NULL,
    updated_by TEXT
);
CREATE INDEX route_overrides_updated_at ON route_overrides (updated_at);

-- One row per (job, UTC day): the guard that lets one replica run a daily job.
CREATE TABLE maintenance_runs (
    job TEXT NOT NULL,
    utc_day TEXT NOT NULL,
    owner TEXT NOT NULL,
    started_at BIGINT NOT NULL,
    finished_at BIGINT,
    details TEXT,
    PRIMARY KEY (job, utc_day)
);
