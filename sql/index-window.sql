-- Optional. The poller reads by calldate ranges only, which the stock `calldate` index serves;
-- this composite index lets the server read a window in (calldate, uniqueid, sequence) order
-- without sorting it, and speeds `poller status` on very large tables. Build it at a quiet hour:
-- on a table of millions of rows it takes a while (online with InnoDB).
ALTER TABLE `cdr` ADD INDEX `poller_window` (`calldate`, `uniqueid`, `sequence`);
