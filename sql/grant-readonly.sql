-- A read-only account for the poller on the PBX's CDR database. Run as a MySQL/MariaDB admin
-- (`mariadb < sql/grant-readonly.sql`); replace the password (then keep it in
-- /etc/poller/poller.toml, mode 0640 root:poller, or in POLLER_SOURCE_URL). The poller never
-- writes to the cdr table.
--
-- 'localhost' is a connection over the server's socket, '127.0.0.1' one over TCP: the example
-- source.url (mysql+pymysql://poller:…@127.0.0.1/asteriskcdrdb) connects over TCP, and a server
-- with skip_name_resolve (common) matches it only against '127.0.0.1'. Both are made, with the
-- same password. (Over the socket instead: …@localhost/asteriskcdrdb?unix_socket=/run/mysqld/mysqld.sock.)
CREATE USER IF NOT EXISTS 'poller'@'localhost' IDENTIFIED BY 'change-me';
CREATE USER IF NOT EXISTS 'poller'@'127.0.0.1' IDENTIFIED BY 'change-me';
GRANT SELECT ON `asteriskcdrdb`.`cdr` TO 'poller'@'localhost';
GRANT SELECT ON `asteriskcdrdb`.`cdr` TO 'poller'@'127.0.0.1';
-- for a poller on another host:
-- CREATE USER IF NOT EXISTS 'poller'@'192.0.2.10' IDENTIFIED BY 'change-me';
-- GRANT SELECT ON `asteriskcdrdb`.`cdr` TO 'poller'@'192.0.2.10';
