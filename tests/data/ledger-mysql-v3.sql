-- The ledger as schema version 3 made it (sql/ledger-mysql.sql of that version), for the
-- upgrade test. The poller's ledger (state database) for sites that keep state in MySQL/MariaDB
-- (state.url = "mysql+pymysql://poller_state:...@host/poller"). The poller creates these
-- tables itself when its user may; a DBA who prefers to create them by hand runs this file
-- and grants SELECT, INSERT, UPDATE, DELETE on the schema to the poller's state user.
-- Schema version 3.
CREATE TABLE poller_calls (
	call_key VARCHAR(96) NOT NULL,
	first_calldate DATETIME NOT NULL,
	stage VARCHAR(16) NOT NULL,
	status VARCHAR(16) NOT NULL,
	payload TEXT NOT NULL,
	object_id VARCHAR(255),
	recording VARCHAR(255),
	recording_problem VARCHAR(32),
	attempts INTEGER NOT NULL,
	last_error TEXT,
	note VARCHAR(255),
	next_attempt_at DATETIME,
	updated_at DATETIME NOT NULL,
	legs INTEGER NOT NULL DEFAULT '0',
	PRIMARY KEY (call_key)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
CREATE INDEX ix_poller_calls_stage ON poller_calls (stage);
CREATE INDEX ix_poller_calls_first_calldate ON poller_calls (first_calldate);
CREATE TABLE poller_meta (
	name VARCHAR(64) NOT NULL,
	value TEXT NOT NULL,
	PRIMARY KEY (name)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
CREATE TABLE poller_incidents (
	incident_key VARCHAR(96) NOT NULL,
	number VARCHAR(32) NOT NULL,
	first_start DATETIME NOT NULL,
	last_start DATETIME NOT NULL,
	first_calldate DATETIME NOT NULL,
	joined TEXT NOT NULL,
	stage VARCHAR(16) NOT NULL,
	object_id VARCHAR(255),
	attempts INTEGER NOT NULL,
	last_error TEXT,
	next_attempt_at DATETIME,
	updated_at DATETIME NOT NULL,
	PRIMARY KEY (incident_key)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
CREATE INDEX ix_poller_incidents_last_start ON poller_incidents (last_start);
CREATE INDEX ix_poller_incidents_number ON poller_incidents (number);
CREATE INDEX ix_poller_incidents_stage ON poller_incidents (stage);
INSERT INTO poller_meta (name, value) VALUES ('schema_version', '3');
