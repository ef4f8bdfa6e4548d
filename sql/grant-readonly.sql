-- A read-only account for the poller on the PBX's CDR database. Run as a MySQL/MariaDB admin;
-- replace the host and the password (then keep it in /etc/poller/poller.toml, mode 0600, or in
-- POLLER_SOURCE_URL). The poller never writes to the cdr table.
CREATE USER IF NOT EXISTS 'poller'@'localhost' IDENTIFIED BY 'change-me';
GRANT SELECT ON `asteriskcdrdb`.`cdr` TO 'poller'@'localhost';
-- for a poller on another host:
-- CREATE USER IF NOT EXISTS 'poller'@'192.0.2.10' IDENTIFIED BY 'change-me';
-- GRANT SELECT ON `asteriskcdrdb`.`cdr` TO 'poller'@'192.0.2.10';
