-- Baseline schema. Times are epoch milliseconds (UTC); money is integer micro-USD.
CREATE TABLE service_accounts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    disabled INTEGER NOT NULL DEFAULT 0,
    budget_window TEXT CHECK (budget_window IN ('daily', 'weekly', 'monthly')),
    budget_limit_micros INTEGER,
    source TEXT NOT NULL DEFAULT 'api',
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);

CREATE TABLE api_keys (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    public_id TEXT NOT NULL UNIQUE,
    secret_hash TEXT NOT NULL,
    name TEXT NOT NULL,
    service_account_id INTEGER NOT NULL REFERENCES service_accounts (id),
    model_grants TEXT NOT NULL DEFAULT '*',
    source TEXT NOT NULL DEFAULT 'api',
    rotated_from_id INTEGER REFERENCES api_keys (id),
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    expires_at INTEGER,
    revoked_at INTEGER
);
CREATE INDEX api_keys_updated_at ON api_keys (updated_at);

CREATE TABLE admin_users (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    email TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    must_change_password INTEGER NOT NULL DEFAULT 0,
    disabled INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    password_changed_at INTEGER
);

CREATE TABLE admin_sessions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    token_hash TEXT NOT NULL UNIQUE,
    admin_user_id INTEGER NOT NULL REFERENCES admin_users (id),
    client_addr TEXT,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    revoked_at INTEGER
);
CREATE INDEX admin_sessions_user ON admin_sessions (admin_user_id);

CREATE TABLE auth_throttle (
    scope TEXT NOT NULL,
    subject TEXT NOT NULL,
    window_start INTEGER NOT NULL,
    failures INTEGER NOT NULL,
    PRIMARY KEY (scope, subject)
);

CREATE TABLE request_logs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    api_key_id INTEGER,
    service_account_id INTEGER,
    operation TEXT NOT NULL,
    model TEXT,
    provider TEXT,
    upstream_model TEXT,
    stream INTEGER NOT NULL DEFAULT 0,
    status_code INTEGER NOT NULL,
    error_code TEXT,
    latency_ms INTEGER NOT NULL,
    ttft_ms INTEGER,
    prompt_tokens INTEGER,
    completion_tokens INTEGER,
    cost_micros INTEGER,
    attempts INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX request_logs_created_at ON request_logs (created_at);
CREATE INDEX request_logs_key_time ON request_logs (api_key_id, created_at);

CREATE TABLE request_log_payloads (
    request_log_id INTEGER PRIMARY KEY,
    request_body TEXT,
    response_body TEXT,
    truncated INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE request_log_tags (
    request_log_id INTEGER NOT NULL,
    name TEXT NOT NULL,
    value TEXT NOT NULL
);
CREATE INDEX request_log_tags_log ON request_log_tags (request_log_id);

CREATE TABLE request_log_attempts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    request_log_id INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    provider TEXT NOT NULL,
    upstream_model TEXT NOT NULL,
    status_code INTEGER,
    error TEXT,
    latency_ms INTEGER NOT NULL
);
CREATE INDEX request_log_attempts_log ON request_log_attempts (request_log_id);

-- The spend ledger: purges never touch it; budgets and reports read it.
CREATE TABLE usage_cost_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    api_key_id INTEGER,
    service_account_id INTEGER,
    model TEXT NOT NULL,
    provider TEXT,
    upstream_model TEXT,
    prompt_tokens INTEGER,
    completion_tokens INTEGER,
    cost_micros INTEGER NOT NULL DEFAULT 0,
    pricing_status TEXT NOT NULL CHECK (pricing_status IN ('priced', 'unpriced', 'usage_missing'))
);
CREATE INDEX usage_cost_events_account_time ON usage_cost_events (service_account_id, created_at);

-- Admin overrides every replica polls: disabled providers/routes, circuit resets.
CREATE TABLE provider_overrides (
    provider TEXT PRIMARY KEY,
    enabled INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    updated_by TEXT
);

CREATE TABLE route_overrides (
    route_key TEXT PRIMARY KEY,
    enabled INTEGER,
    circuit_reset_at INTEGER,
    updated_at INTEGER NOT NULL,
    updated_by TEXT
);
CREATE INDEX route_overrides_updated_at ON route_overrides (updated_at);

-- One row per (job, UTC day): the guard that lets one replica run a daily job.
CREATE TABLE maintenance_runs (
    job TEXT NOT NULL,
    utc_day TEXT NOT NULL,
    owner TEXT NOT NULL,
    started_at INTEGER NOT NULL,
    finished_at INTEGER,
    details TEXT,
    PRIMARY KEY (job, utc_day)
);
