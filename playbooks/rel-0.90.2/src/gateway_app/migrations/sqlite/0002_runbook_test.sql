-- compatibility: breaking
CREATE TABLE runbook_upgrade_marker (id INTEGER PRIMARY KEY, note TEXT NOT NULL);
