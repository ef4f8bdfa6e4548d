-- Asterisk's cdr_pgsql table (its contrib schema): calldate is a timestamp with time zone, and
-- there is no did and no recordingfile column. The poller reads it as it is: set
-- source.incoming.did_set = false (incoming calls are told by incoming.channels or
-- incoming.contexts) and a recordings.name without {recordingfile}, e.g. "{uniqueid}.wav" or
-- "{calldate:%Y/%m/%d}/*-{uniqueid}.wav". cdr_pgsql.conf names the table (`table=cdr`).
CREATE TABLE IF NOT EXISTS cdr (
    calldate timestamp with time zone NOT NULL DEFAULT now(),
    clid varchar(80) NOT NULL DEFAULT '',
    src varchar(80) NOT NULL DEFAULT '',
    dst varchar(80) NOT NULL DEFAULT '',
    dcontext varchar(80) NOT NULL DEFAULT '',
    channel varchar(80) NOT NULL DEFAULT '',
    dstchannel varchar(80) NOT NULL DEFAULT '',
    lastapp varchar(80) NOT NULL DEFAULT '',
    lastdata varchar(80) NOT NULL DEFAULT '',
    duration bigint NOT NULL DEFAULT 0,
    billsec bigint NOT NULL DEFAULT 0,
    disposition varchar(45) NOT NULL DEFAULT '',
    amaflags bigint NOT NULL DEFAULT 0,
    accountcode varchar(20) NOT NULL DEFAULT '',
    uniqueid varchar(150) NOT NULL DEFAULT '',
    userfield varchar(255) NOT NULL DEFAULT '',
    peeraccount varchar(80) NOT NULL DEFAULT '',
    linkedid varchar(150) NOT NULL DEFAULT '',
    sequence integer NOT NULL DEFAULT 0
);
-- the poller reads calldate ranges: without this index each read scans the whole table
CREATE INDEX IF NOT EXISTS cdr_calldate ON cdr (calldate);
