"""End-to-end runs on a cdr table (a SQLite file, and the same test again on MariaDB): the CDR
pitfalls and the ledger's "nothing lost, nothing twice" of §4. What only a MariaDB server
shows (column charsets, the index plan, Asterisk's minimal schema) runs there alone. The edge
cases paste their cdr rows beside the assertions, as `mysql -t` prints them; the others copy
the real sample rows.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from cdrtable import parse_table
from support import (
    BERLIN,
    DIRECT_ANSWERED,
    INTERNAL,
    IVR_NOBODY,
    OUTGOING,
    QUEUE_ABANDON,
    RING_GROUP_ANSWERED,
    ROOT,
    SAMPLES,
    archive_files,
    archived,
    clone_call,
    direct_calls,
    entry_of,
    explain,
    insert_rows,
    is_mp3,
    key_of,
    legs_of,
    local,
    make_config,
    msk,
    open_ledger,
    place_wav,
    run_cli,
    snapshot,
    watermark_of,
    write_config,
)

from poller.run.options import RunOptions
from poller.run.pipeline import run_once
from poller.source.table import CdrSource
from poller.targets.archive.target import ArchiveTarget

# P1-01's real recording, a few seconds of speech
P1_01_RECORDING = (SAMPLES / "recordings/2026/11/26"
                   / "in-74951230001-+79161002301-20261126-093827-1795675107.1.wav")

THREE = [local(f"2026-11-26 09:{minute}:00") for minute in (30, 35, 40)]
MINIMAL_COLUMNS = ("calldate", "clid", "src", "dst", "dcontext", "channel", "dstchannel",
                   "lastapp", "lastdata", "duration", "billsec", "disposition", "amaflags",
                   "accountcode", "uniqueid", "userfield")


def test_long_call_inserted_after_the_watermark_passed_its_start(tmp_path, cdr_url):
    """A 40-minute call starts at 09:20; its row is inserted only when it ends at 10:00, after
    a run at 10:00 already took the short calls of 09:30 and 09:40 and moved the watermark
    past 09:20. The lookback re-read finds it: delivered once, never twice."""
    short = parse_table("""
    +---------------------+---------------------------------+--------------+-----+-----------------+----------------------------------------+--------------------------------+---------+---------------------------+----------+---------+-------------+----------+----------------+-------------+---------------+--------------+----------------+----------------+----------+
    | calldate            | clid                            | src          | dst | dcontext        | channel                                | dstchannel                     | lastapp | lastdata                  | duration | billsec | disposition | amaflags | uniqueid       | did         | recordingfile | cnum         | cnam           | linkedid       | sequence |
    +---------------------+---------------------------------+--------------+-----+-----------------+----------------------------------------+--------------------------------+---------+---------------------------+----------+---------+-------------+----------+----------------+-------------+---------------+--------------+----------------+----------------+----------+
    | 2026-11-26 09:30:00 | "Morozova Elena" <+79161002304> | +79161002304 | 201 | from-did-direct | Local/74951230001@from-pstn-0000003e;2 | Local/201@sim-phone-0000003f;1 | Dial    | Local/201@sim-phone,15,tT |        9 |       6 | ANSWERED    |        3 | 1795674600.125 | 74951230001 |               | +79161002304 | Morozova Elena | 1795674600.124 |      125 |
    | 2026-11-26 09:40:00 | "" <89161002309>                | 89161002309  | 201 | from-did-direct | Local/74951230001@from-pstn-00000040;2 | Local/201@sim-phone-00000041;1 | Dial    | Local/201@sim-phone,15,tT |        9 |       6 | ANSWERED    |        3 | 1795675200.129 | 74951230001 |               | 89161002309  |                | 1795675200.128 |      129 |
    +---------------------+---------------------------------+--------------+-----+-----------------+----------------------------------------+--------------------------------+---------+---------------------------+----------+---------+-------------+----------+----------------+-------------+---------------+--------------+----------------+----------------+----------+
    """)  # noqa: E501
    insert_rows(cdr_url, short)
    config = make_config(tmp_path, cdr_url)

    first = run_once(config, RunOptions(now=msk("2026-11-26 10:00")))
    assert first.exit_code == 0, first.summary()
    assert set(archived(tmp_path)) == {"1795674600.124", "1795675200.128"}
    mark = watermark_of(config)
    assert mark is not None and mark > local("2026-11-26 09:20:00")

    long_call = parse_table("""
    +---------------------+-------------------------------+--------------+-----+-----------------+----------------------------------------+--------------------------------+---------+---------------------------+----------+---------+-------------+----------+----------------+-------------+----------------------------------------------------------------+--------------+--------------+----------------+----------+
    | calldate            | clid                          | src          | dst | dcontext        | channel                                | dstchannel                     | lastapp | lastdata                  | duration | billsec | disposition | amaflags | uniqueid       | did         | recordingfile                                                  | cnum         | cnam         | linkedid       | sequence |
    +---------------------+-------------------------------+--------------+-----+-----------------+----------------------------------------+--------------------------------+---------+---------------------------+----------+---------+-------------+----------+----------------+-------------+----------------------------------------------------------------+--------------+--------------+----------------+----------+
    | 2026-11-26 09:20:00 | "Sokolov Ivan" <+79161002301> | +79161002301 | 201 | from-did-direct | Local/74951230001@from-pstn-0000003c;2 | Local/201@sim-phone-0000003d;1 | Dial    | Local/201@sim-phone,15,tT |     2400 |    2391 | ANSWERED    |        3 | 1795674000.121 | 74951230001 | in-74951230001-+79161002301-20261126-092000-1795674000.121.wav | +79161002301 | Sokolov Ivan | 1795674000.120 |      121 |
    +---------------------+-------------------------------+--------------+-----+-----------------+----------------------------------------+--------------------------------+---------+---------------------------+----------+---------+-------------+----------+----------------+-------------+----------------------------------------------------------------+--------------+--------------+----------------+----------+
    """)  # noqa: E501
    place_wav(P1_01_RECORDING, tmp_path / "monitor/2026/11/26" / long_call[0]["recordingfile"])
    insert_rows(cdr_url, long_call)  # Asterisk writes the row when the call hangs up
    second = run_once(config, RunOptions(now=msk("2026-11-26 10:45")))
    assert second.exit_code == 0, second.summary()
    assert sum(second.delivered.values()) == 1

    records = archived(tmp_path)
    assert len(records) == 3
    record = records["1795674000.120"]
    assert record["start"] == "2026-11-26T09:20:00+03:00"
    assert record["duration"] == 2400 and record["status"] == "answered"
    assert record["recording"] == "1795674000.120.mp3"
    assert len(archive_files(tmp_path, ".mp3")) == 1
    assert entry_of(config, "1795674000.120").stage == "done"

    third = run_once(config, RunOptions(now=msk("2026-11-26 11:00")))
    assert sum(third.delivered.values()) == 0
    assert len(archived(tmp_path)) == 3
    with open_ledger(config) as ledger:
        assert ledger.counts() == {"done": 3}


def test_daylight_saving_fall_back_hour_keeps_both_calls(tmp_path, cdr_url):
    """Berlin, 25 Oct 2026: clocks go back from 03:00 CEST to 02:00 CET, so local 02:30 happens
    twice. One call at each 02:30: the calldate is the same, the epoch that starts the
    uniqueid tells the instants apart (1792888200 is 00:30 UTC, 1792891800 is 01:30 UTC);
    both are delivered with their own offset."""
    rows = parse_table("""
    +---------------------+---------------------------------+----------------+-----+-----------------+------------------------+--------------------+---------+-----------------+----------+---------+-------------+----------+---------------+--------------+---------------+----------------+--------------+---------------+----------+
    | calldate            | clid                            | src            | dst | dcontext        | channel                | dstchannel         | lastapp | lastdata        | duration | billsec | disposition | amaflags | uniqueid      | did          | recordingfile | cnum           | cnam         | linkedid      | sequence |
    +---------------------+---------------------------------+----------------+-----+-----------------+------------------------+--------------------+---------+-----------------+----------+---------+-------------+----------+---------------+--------------+---------------+----------------+--------------+---------------+----------+
    | 2026-10-25 02:30:00 | "Schmidt Anna" <+4915112345601> | +4915112345601 | 201 | from-did-direct | PJSIP/sipgate-0000002a | PJSIP/201-0000002b | Dial    | PJSIP/201,20,tT |        9 |       6 | ANSWERED    |        3 | 1792888200.43 | 493012345670 |               | +4915112345601 | Schmidt Anna | 1792888200.42 |       43 |
    | 2026-10-25 02:30:00 | "" <+4930987654321>             | +4930987654321 | 201 | from-did-direct | PJSIP/sipgate-0000002e | PJSIP/201-0000002f | Dial    | PJSIP/201,20,tT |        9 |       6 | ANSWERED    |        3 | 1792891800.47 | 493012345670 |               | +4930987654321 |              | 1792891800.46 |       47 |
    +---------------------+---------------------------------+----------------+-----+-----------------+------------------------+--------------------+---------+-----------------+----------+---------+-------------+----------+---------------+--------------+---------------+----------------+--------------+---------------+----------+
    """)  # noqa: E501
    insert_rows(cdr_url, rows)
    config = make_config(tmp_path, cdr_url,
                         source={"timezone": "Europe/Berlin", "start": "2026-10-25 00:00"})

    report = run_once(config, RunOptions(now=dt.datetime(2026, 10, 25, 3, 0, tzinfo=dt.UTC)))
    assert report.exit_code == 0, report.summary()
    records = archived(tmp_path)
    summer, winter = "1792888200.42", "1792891800.46"
    assert set(records) == {summer, winter}
    assert records[summer]["start"] == "2026-10-25T02:30:00+02:00"
    assert records[winter]["start"] == "2026-10-25T02:30:00+01:00"
    assert records[summer]["duration"] == records[winter]["duration"] == 9
    assert all(p.parent.relative_to(tmp_path / "archive") == Path("2026/10/25")
               for p in archive_files(tmp_path, ".json"))


def test_call_running_across_the_fall_back_keeps_its_duration(tmp_path, cdr_url, sample_rows):
    """A 20-second call starting at 02:59:50 CEST, 10 s before the clocks go back, ends at
    02:00:10 CET (03:00:10 by calldate + duration). It keeps its summer start offset and
    lasts 20 s, not 20 s plus or minus the repeated hour."""
    direct = legs_of(sample_rows, DIRECT_ANSWERED)
    epoch = int(dt.datetime(2026, 10, 25, 0, 59, 50, tzinfo=dt.UTC).timestamp())
    rows = clone_call(direct, local("2026-10-25 02:59:50"), zone=BERLIN, epoch=epoch,
                      duration=20, billsec=17)
    insert_rows(cdr_url, rows)
    config = make_config(tmp_path, cdr_url,
                         source={"timezone": "Europe/Berlin", "start": "2026-10-25 00:00"})

    report = run_once(config, RunOptions(now=dt.datetime(2026, 10, 25, 3, 0, tzinfo=dt.UTC)))
    assert report.exit_code == 0, report.summary()
    record = archived(tmp_path)[key_of(rows)]
    assert record["start"] == "2026-10-25T02:59:50+02:00"
    assert record["duration"] == 20


def test_fall_back_hour_with_a_short_lookback_loses_nothing(tmp_path, cdr_url, sample_rows):
    """A site with short calls sets lookback = "30m". A run at 02:58 CEST takes a call of
    02:50 CEST (watermark 02:50). The clocks go back; a call at 02:05 CET (an hour later in
    real time) must still be delivered by the runs that follow."""
    direct = legs_of(sample_rows, DIRECT_ANSWERED)
    summer = clone_call(direct, local("2026-10-25 02:50:00"), zone=BERLIN,
                        epoch=int(dt.datetime(2026, 10, 25, 0, 50, tzinfo=dt.UTC).timestamp()))
    insert_rows(cdr_url, summer)
    config = make_config(tmp_path, cdr_url, source={
        "timezone": "Europe/Berlin", "start": "2026-10-25 00:00", "lookback": "30m"})
    run_once(config, RunOptions(now=dt.datetime(2026, 10, 25, 0, 58, tzinfo=dt.UTC)))
    assert set(archived(tmp_path)) == {key_of(summer)}

    winter = clone_call(direct, local("2026-10-25 02:05:00"), zone=BERLIN,
                        epoch=int(dt.datetime(2026, 10, 25, 1, 5, tzinfo=dt.UTC).timestamp()))
    insert_rows(cdr_url, winter)
    for hour, minute in ((1, 20), (1, 40), (2, 30), (4, 0)):  # 02:20 CET … 05:00 CET
        run_once(config, RunOptions(now=dt.datetime(2026, 10, 25, hour, minute, tzinfo=dt.UTC)))
    records = archived(tmp_path)
    assert key_of(winter) in records, "the call of 02:05 CET was never delivered"
    assert records[key_of(winter)]["start"] == "2026-10-25T02:05:00+01:00"


def test_cp1251_caller_name_in_a_latin1_column(tmp_path, cdr_db):
    """An old PBX writes caller names in cp1251 into latin1 columns (the bytes as they came).
    A utf8mb4 connection would turn them into garbled UTF-8; the poller reads the raw bytes
    and decodes them with source.legacy_encoding: "Иванов Пётр" from cnam, "Петрова Ольга"
    from clid alone. The table shows the names as a cp1251 terminal displays them."""
    cdr_db.execute("ALTER TABLE cdr MODIFY cnam varchar(80) CHARACTER SET latin1 "
                   "NOT NULL DEFAULT ''")
    cdr_db.execute("ALTER TABLE cdr MODIFY clid varchar(80) CHARACTER SET latin1 "
                   "NOT NULL DEFAULT ''")
    rows = parse_table("""
    +---------------------+--------------------------------+--------------+-----+-----------------+----------------------------------------+--------------------------------+---------+---------------------------+----------+---------+-------------+----------+----------------+-------------+---------------+--------------+-------------+----------------+----------+
    | calldate            | clid                           | src          | dst | dcontext        | channel                                | dstchannel                     | lastapp | lastdata                  | duration | billsec | disposition | amaflags | uniqueid       | did         | recordingfile | cnum         | cnam        | linkedid       | sequence |
    +---------------------+--------------------------------+--------------+-----+-----------------+----------------------------------------+--------------------------------+---------+---------------------------+----------+---------+-------------+----------+----------------+-------------+---------------+--------------+-------------+----------------+----------+
    | 2026-11-26 09:30:00 | "Иванов Пётр" <+79161002301>   | +79161002301 | 201 | from-did-direct | Local/74951230001@from-pstn-00000044;2 | Local/201@sim-phone-00000045;1 | Dial    | Local/201@sim-phone,15,tT |        9 |       6 | ANSWERED    |        3 | 1795674600.137 | 74951230001 |               | +79161002301 | Иванов Пётр | 1795674600.136 |      137 |
    | 2026-11-26 09:31:00 | "Петрова Ольга" <+79161002302> | +79161002302 | 201 | from-did-direct | Local/74951230001@from-pstn-00000046;2 | Local/201@sim-phone-00000047;1 | Dial    | Local/201@sim-phone,15,tT |        9 |       6 | ANSWERED    |        3 | 1795674660.141 | 74951230001 |               | +79161002302 |             | 1795674660.140 |      141 |
    +---------------------+--------------------------------+--------------+-----+-----------------+----------------------------------------+--------------------------------+---------+---------------------------+----------+---------+-------------+----------+----------------+-------------+---------------+--------------+-------------+----------------+----------+
    """)  # noqa: E501
    cdr_db.insert([dict(row, clid="", cnam="") for row in rows])
    for row in rows:
        clid, cnam = row["clid"].encode("cp1251"), row["cnam"].encode("cp1251")
        # hex literals are binary strings: the bytes land in the latin1 column unconverted
        cdr_db.execute(f"UPDATE cdr SET clid = X'{clid.hex()}', cnam = X'{cnam.hex()}' "
                       "WHERE uniqueid = :u", u=row["uniqueid"])
    stored = cdr_db.execute("SELECT HEX(cnam) FROM cdr WHERE uniqueid = :u",
                            u="1795674600.137").scalar()
    assert bytes.fromhex(stored) == "Иванов Пётр".encode("cp1251")  # no conversion on the way in

    config = make_config(tmp_path, cdr_db.url)
    report = run_once(config, RunOptions(now=msk("2026-11-26 10:00")))
    assert report.exit_code == 0, report.summary()
    records = archived(tmp_path)
    assert records["1795674600.136"]["name"] == "Иванов Пётр"
    assert records["1795674600.136"]["number"] == "+79161002301"
    assert records["1795674660.140"]["name"] == "Петрова Ольга"
    assert records["1795674660.140"]["number"] == "+79161002302"


def test_utf8mb4_caller_name(tmp_path, cdr_url, sample_rows):
    """A current FreePBX stores caller names as utf8mb4: "Сидорова Анна" arrives unchanged."""
    direct = legs_of(sample_rows, DIRECT_ANSWERED)
    number = direct[0]["src"]
    rows = clone_call(direct, local("2026-11-26 09:30:00"), cnam="Сидорова Анна",
                      clid=f'"Сидорова Анна" <{number}>')
    insert_rows(cdr_url, rows)
    config = make_config(tmp_path, cdr_url)

    report = run_once(config, RunOptions(now=msk("2026-11-26 10:00")))
    assert report.exit_code == 0, report.summary()
    record = archived(tmp_path)[key_of(rows)]
    assert record["name"] == "Сидорова Анна"
    assert record["number"] == number


def test_ring_group_ivr_queue_outgoing_and_internal(tmp_path, cdr_url, sample_rows):
    """A morning's mix: a three-leg ring group where 212 answers (211 rang, 213 was busy), an
    IVR that answered itself but no agent picked up, a caller who gave up in the queue, an
    outgoing and an internal call. Incoming calls are delivered with the right outcome; the
    other two are only recorded in the ledger as skipped."""
    monitor = tmp_path / "monitor"
    ring = clone_call(legs_of(sample_rows, RING_GROUP_ANSWERED), local("2026-11-26 09:30:00"),
                      monitor=monitor)
    ivr = clone_call(legs_of(sample_rows, IVR_NOBODY), local("2026-11-26 09:31:00"))
    abandon = clone_call(legs_of(sample_rows, QUEUE_ABANDON), local("2026-11-26 09:32:00"))
    outgoing = clone_call(legs_of(sample_rows, OUTGOING), local("2026-11-26 09:33:00"),
                          monitor=monitor)
    internal = clone_call(legs_of(sample_rows, INTERNAL), local("2026-11-26 09:34:00"))
    assert len(ring) == 3 and len(ivr) == 3 and len(abandon) == 2
    insert_rows(cdr_url, ring + ivr + abandon + outgoing + internal)
    config = make_config(tmp_path, cdr_url)

    report = run_once(config, RunOptions(now=msk("2026-11-26 10:00")))
    assert report.exit_code == 0, report.summary()
    assert dict(report.delivered) == {"answered": 1, "unanswered": 2}
    assert report.skipped == 2

    records = archived(tmp_path)
    assert set(records) == {key_of(ring), key_of(ivr), key_of(abandon)}
    group = records[key_of(ring)]
    assert (group["status"], group["answered_by"]) == ("answered", "212")
    assert (group["duration"], group["talk_time"], group["wait_time"]) == (11, 7, 4)
    assert group["recording"] == f"{key_of(ring)}.mp3" and group["recording_problem"] is None
    mp3s = archive_files(tmp_path, ".mp3")
    assert [p.name for p in mp3s] == [f"{key_of(ring)}.mp3"]  # one file for three legs
    assert is_mp3(mp3s[0])

    for rows in (ivr, abandon):
        record = records[key_of(rows)]
        assert (record["status"], record["answered_by"], record["talk_time"]) == (
            "unanswered", "", 0)
        assert record["wait_time"] == record["duration"] > 0
    assert records[key_of(ivr)]["duration"] == 13  # 09:31:00 until the Hangup row at +13 s

    for rows in (outgoing, internal):
        entry = entry_of(config, key_of(rows))
        assert entry.stage == "skipped" and entry.note == "not incoming"
        assert entry.object_id is None
    with open_ledger(config) as ledger:
        assert ledger.counts() == {"done": 3, "skipped": 2}


def test_call_whose_legs_straddle_a_read_window(tmp_path, cdr_url, sample_rows, monkeypatch):
    """A busy PBX makes the windows narrow (batch_size 2 here, an outgoing call every 10 s
    around it). A queue call whose first round rang 222 for 25 s and whose second round,
    30 s later, 221 answered has legs in two windows; it still comes out as one call with
    both legs: 70 s long, answered by 221."""
    windows: list[tuple[dt.datetime, dt.datetime, int]] = []
    read_window = CdrSource.read_window

    def spy(self, lo, hi, column="calldate"):
        legs = read_window(self, lo, hi, column)
        windows.append((lo, hi, len(legs)))
        return legs

    monkeypatch.setattr(CdrSource, "read_window", spy)

    outgoing = legs_of(sample_rows, OUTGOING)
    filler = [clone_call(outgoing, local("2026-11-26 09:20:00") + dt.timedelta(seconds=10 * i))
              for i in range(72)]  # an outgoing call every 10 s, 09:20:00 … 09:31:50
    split = parse_table("""
    +---------------------+------------------+-------------+-----+------------+----------------------------------------+--------------------------------+---------+-------------+----------+---------+-------------+----------+---------------+-------------+---------------+-------------+------+---------------+----------+
    | calldate            | clid             | src         | dst | dcontext   | channel                                | dstchannel                     | lastapp | lastdata    | duration | billsec | disposition | amaflags | uniqueid      | did         | recordingfile | cnum        | cnam | linkedid      | sequence |
    +---------------------+------------------+-------------+-----+------------+----------------------------------------+--------------------------------+---------+-------------+----------+---------+-------------+----------+---------------+-------------+---------------+-------------+------+---------------+----------+
    | 2026-11-26 09:29:03 | "" <89161002306> | 89161002306 | 270 | ext-queues | Local/74951230004@from-pstn-0000000c;2 | Local/222@sim-phone-0000000e;1 | Queue   | 270,tr,,,60 |       25 |      25 | NO ANSWER   |        3 | 1795674543.25 | 74951230004 |               | 89161002306 |      | 1795674543.24 |       29 |
    | 2026-11-26 09:29:33 | "" <89161002306> | 89161002306 | 270 | ext-queues | Local/74951230004@from-pstn-0000000c;2 | Local/221@sim-phone-00000012;1 | Queue   | 270,tr,,,60 |       40 |      40 | ANSWERED    |        3 | 1795674543.25 | 74951230004 |               | 89161002306 |      | 1795674543.24 |       36 |
    +---------------------+------------------+-------------+-----+------------+----------------------------------------+--------------------------------+---------+-------------+----------+---------+-------------+----------+---------------+-------------+---------------+-------------+------+---------------+----------+
    """)  # noqa: E501
    t0 = split[0]["calldate"]
    insert_rows(cdr_url, [row for rows in filler for row in rows])
    insert_rows(cdr_url, split)
    config = make_config(tmp_path, cdr_url,
                         source={"batch_size": 2, "lookback": "2m"})

    report = run_once(config, RunOptions(now=msk("2026-11-26 10:00")))
    assert report.exit_code == 0, report.summary()
    assert report.rows == 72 + 2  # every row read once: windows neither overlap nor leave gaps
    assert any(lo <= t0 < hi <= t0 + dt.timedelta(seconds=30) for lo, hi, _ in windows), (
        "the two legs were read in one window; the test did not split the call")

    records = archived(tmp_path)
    assert list(records) == ["1795674543.24"]
    record = records["1795674543.24"]
    assert record["duration"] == 70
    assert (record["status"], record["answered_by"]) == ("answered", "221")
    assert (record["talk_time"], record["wait_time"]) == (40, 30)
    assert record["start"] == "2026-11-26T09:29:03+03:00"
    with open_ledger(config) as ledger:
        assert ledger.counts() == {"done": 1, "skipped": 72}


def test_tied_legs_written_twice_by_two_backends_make_one_call(tmp_path, cdr_url, monkeypatch):
    """A ring group's three legs share their calldate second, and a second CDR back-end
    (cdr_mysql beside cdr_adaptive_odbc) wrote every row again. With windows of 2 rows, six
    rows tied on one second are all read, once; the copies are dropped, and one call of three
    legs comes out: answered by 212 after 4 s, with one MP3 for all its legs."""
    rows = parse_table("""
    +---------------------+---------------------------+--------------+-----+-----------+----------------------------------------+--------------------------------+---------+-------------------------------------------------------------------+----------+---------+-------------+----------+---------------+-------------+---------------------------------------------------------------+--------------+----------+---------------+----------+
    | calldate            | clid                      | src          | dst | dcontext  | channel                                | dstchannel                     | lastapp | lastdata                                                          | duration | billsec | disposition | amaflags | uniqueid      | did         | recordingfile                                                 | cnum         | cnam     | linkedid      | sequence |
    +---------------------+---------------------------+--------------+-----+-----------+----------------------------------------+--------------------------------+---------+-------------------------------------------------------------------+----------+---------+-------------+----------+---------------+-------------+---------------------------------------------------------------+--------------+----------+---------------+----------+
    | 2026-11-26 09:39:02 | "OOO Vega" <+79161002305> | +79161002305 | 260 | ext-group | Local/74951230003@from-pstn-00000008;2 | Local/211@sim-phone-00000009;1 | Dial    | Local/211@sim-phone&Local/212@sim-phone&Local/213@sim-phone,20,tT |        4 |       0 | NO ANSWER   |        3 | 1795675142.17 | 74951230003 | in-74951230003-+79161002305-20261126-093902-1795675142.17.wav | +79161002305 | OOO Vega | 1795675142.16 |       19 |
    | 2026-11-26 09:39:02 | "OOO Vega" <+79161002305> | +79161002305 | 260 | ext-group | Local/74951230003@from-pstn-00000008;2 | Local/212@sim-phone-0000000a;1 | Dial    | Local/211@sim-phone&Local/212@sim-phone&Local/213@sim-phone,20,tT |       11 |       7 | ANSWERED    |        3 | 1795675142.17 | 74951230003 | in-74951230003-+79161002305-20261126-093902-1795675142.17.wav | +79161002305 | OOO Vega | 1795675142.16 |       26 |
    | 2026-11-26 09:39:02 | "OOO Vega" <+79161002305> | +79161002305 | 260 | ext-group | Local/74951230003@from-pstn-00000008;2 | Local/213@sim-phone-0000000b;1 | Dial    | Local/211@sim-phone&Local/212@sim-phone&Local/213@sim-phone,20,tT |        0 |       0 | BUSY        |        3 | 1795675142.17 | 74951230003 | in-74951230003-+79161002305-20261126-093902-1795675142.17.wav | +79161002305 | OOO Vega | 1795675142.16 |       27 |
    | 2026-11-26 09:39:02 | "OOO Vega" <+79161002305> | +79161002305 | 260 | ext-group | Local/74951230003@from-pstn-00000008;2 | Local/211@sim-phone-00000009;1 | Dial    | Local/211@sim-phone&Local/212@sim-phone&Local/213@sim-phone,20,tT |        4 |       0 | NO ANSWER   |        3 | 1795675142.17 | 74951230003 | in-74951230003-+79161002305-20261126-093902-1795675142.17.wav | +79161002305 | OOO Vega | 1795675142.16 |       19 |
    | 2026-11-26 09:39:02 | "OOO Vega" <+79161002305> | +79161002305 | 260 | ext-group | Local/74951230003@from-pstn-00000008;2 | Local/212@sim-phone-0000000a;1 | Dial    | Local/211@sim-phone&Local/212@sim-phone&Local/213@sim-phone,20,tT |       11 |       7 | ANSWERED    |        3 | 1795675142.17 | 74951230003 | in-74951230003-+79161002305-20261126-093902-1795675142.17.wav | +79161002305 | OOO Vega | 1795675142.16 |       26 |
    | 2026-11-26 09:39:02 | "OOO Vega" <+79161002305> | +79161002305 | 260 | ext-group | Local/74951230003@from-pstn-00000008;2 | Local/213@sim-phone-0000000b;1 | Dial    | Local/211@sim-phone&Local/212@sim-phone&Local/213@sim-phone,20,tT |        0 |       0 | BUSY        |        3 | 1795675142.17 | 74951230003 | in-74951230003-+79161002305-20261126-093902-1795675142.17.wav | +79161002305 | OOO Vega | 1795675142.16 |       27 |
    +---------------------+---------------------------+--------------+-----+-----------+----------------------------------------+--------------------------------+---------+-------------------------------------------------------------------+----------+---------+-------------+----------+---------------+-------------+---------------------------------------------------------------+--------------+----------+---------------+----------+
    """)  # noqa: E501
    insert_rows(cdr_url, rows)
    delivered: list[Any] = []
    create = ArchiveTarget.create

    def spy(self, call, record, mp3=None):
        delivered.append(call)
        return create(self, call, record, mp3)

    monkeypatch.setattr(ArchiveTarget, "create", spy)
    name = rows[0]["recordingfile"]
    place_wav(SAMPLES / "recordings/2026/11/26" / name, tmp_path / "monitor/2026/11/26" / name)
    config = make_config(tmp_path, cdr_url, source={"batch_size": 2})

    report = run_once(config, RunOptions(now=msk("2026-11-26 10:00")))
    assert report.exit_code == 0, report.summary()
    assert report.rows == 6
    assert [call.legs for call in delivered] == [3]  # six rows, three distinct legs
    assert dict(report.delivered) == {"answered": 1}
    records = archived(tmp_path)
    assert list(records) == ["1795675142.16"]
    record = records["1795675142.16"]
    assert (record["status"], record["answered_by"]) == ("answered", "212")
    assert (record["duration"], record["talk_time"], record["wait_time"]) == (11, 7, 4)
    assert record["recording"] == "1795675142.16.mp3" and record["recording_problem"] is None
    assert [p.name for p in archive_files(tmp_path, ".mp3")] == ["1795675142.16.mp3"]
    with open_ledger(config) as ledger:
        assert ledger.counts() == {"done": 1}


def test_rerun_delivers_nothing_twice(tmp_path, cdr_url, sample_rows):
    """Cron starts the poller every minute; the same rows are re-read through the lookback
    each time, and none of them is delivered again."""
    calls = direct_calls(cdr_url, sample_rows, *THREE)
    config = make_config(tmp_path, cdr_url)
    first = run_once(config, RunOptions(now=msk("2026-11-26 10:00")))
    assert sum(first.delivered.values()) == 3
    before = snapshot(tmp_path)
    assert len(before) == 3

    for minute in ("10:01", "10:02", "12:00"):
        again = run_once(config, RunOptions(now=msk(f"2026-11-26 {minute}")))
        assert again.exit_code == 0 and sum(again.delivered.values()) == 0, again.summary()
        assert again.rows == 3 and again.new_calls == 0  # re-read, recognised, not delivered
    assert snapshot(tmp_path) == before
    assert set(archived(tmp_path)) == {key_of(rows) for rows in calls}


def test_overlapping_backfill_delivers_nothing_twice(tmp_path, cdr_url, sample_rows):
    """An administrator runs `poller run --since 09:00 --until 10:00` over a range the minutely
    runs already delivered: nothing is delivered again and the watermark stays where it is."""
    direct_calls(cdr_url, sample_rows, *THREE)
    config = make_config(tmp_path, cdr_url)
    run_once(config, RunOptions(now=msk("2026-11-26 10:00")))
    before, mark = snapshot(tmp_path), watermark_of(config)
    assert len(before) == 3 and mark == local("2026-11-26 09:40:00")

    report = run_once(config, RunOptions(since=local("2026-11-26 09:00"),
                                         until=local("2026-11-26 10:00"),
                                         now=msk("2026-11-26 10:10")))
    assert report.exit_code == 0, report.summary()
    assert report.rows == 3 and sum(report.delivered.values()) == 0
    assert snapshot(tmp_path) == before
    assert watermark_of(config) == mark


def test_backfill_of_history_before_source_start(tmp_path, cdr_url, sample_rows):
    """A new install starts at source.start (09:00); the calls of 08:00–08:59 are history,
    fetched on purpose with `run --since 08:00 --until 09:00`: delivered once, watermark
    untouched, and a repeated backfill delivers nothing."""
    direct = legs_of(sample_rows, DIRECT_ANSWERED)
    old = [clone_call(direct, local(f"2026-11-26 08:{minute}:00")) for minute in (10, 50)]
    insert_rows(cdr_url, [row for rows in old for row in rows])
    recent = direct_calls(cdr_url, sample_rows, *THREE)
    config = make_config(tmp_path, cdr_url)

    run_once(config, RunOptions(now=msk("2026-11-26 10:00")))
    assert set(archived(tmp_path)) == {key_of(rows) for rows in recent}
    mark = watermark_of(config)

    options = RunOptions(since=local("2026-11-26 08:00"), until=local("2026-11-26 09:00"),
                         now=msk("2026-11-26 10:05"))
    report = run_once(config, options)
    assert report.exit_code == 0, report.summary()
    assert sum(report.delivered.values()) == 2
    records = archived(tmp_path)
    assert set(records) == {key_of(rows) for rows in old + recent}
    assert records[key_of(old[0])]["start"] == "2026-11-26T08:10:00+03:00"
    assert watermark_of(config) == mark

    before = snapshot(tmp_path)
    repeat = run_once(config, options)
    assert sum(repeat.delivered.values()) == 0
    assert snapshot(tmp_path) == before
    assert watermark_of(config) == mark


def _minimal_table(db: Any) -> None:
    with db.engine.begin() as conn:
        conn.exec_driver_sql((ROOT / "sql" / "cdr-asterisk-minimal.sql").read_text())


def _minimal_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**{name: row[name] for name in MINIMAL_COLUMNS}, "dcontext": "from-pstn"}
            for row in rows]


def test_asterisk_minimal_schema(tmp_path, empty_db, sample_rows, caplog):
    """A plain Asterisk with the contrib cdr schema: no linkedid, did, recordingfile or
    sequence; MixMonitor writes `<uniqueid>.wav`. With recordings.name "{uniqueid}.wav" and
    incoming recognised by dcontext from-pstn, calls are grouped by uniqueid and delivered.
    The did rule (on by default) cannot apply without a did column: the run says so."""
    _minimal_table(empty_db)
    monitor = tmp_path / "monitor"
    ring = clone_call(legs_of(sample_rows, RING_GROUP_ANSWERED), local("2026-11-26 09:30:00"))
    abandon = clone_call(legs_of(sample_rows, QUEUE_ABANDON), local("2026-11-26 09:31:00"))
    uniqueid = ring[0]["uniqueid"]
    sample = legs_of(sample_rows, RING_GROUP_ANSWERED)[0]
    place_wav(SAMPLES / "recordings" / "2026/11/26" / sample["recordingfile"],
              monitor / f"{uniqueid}.wav")
    empty_db.insert(_minimal_rows(ring + abandon))
    config = make_config(tmp_path, empty_db.url, recordings={"name": "{uniqueid}.wav"},
                         source={"incoming": {"contexts": ["from-pstn"]}})

    report = run_once(config, RunOptions(now=msk("2026-11-26 10:00")))
    assert report.exit_code == 0, report.summary()
    assert any("did_set is on but" in r.getMessage() and r.levelname == "WARNING"
               for r in caplog.records)
    caplog.clear()  # said by the first run of a day, not by every run under cron
    run_once(config, RunOptions(now=msk("2026-11-26 10:01")))
    assert not any("did_set is on but" in r.getMessage() and r.levelname == "WARNING"
                   for r in caplog.records)
    records = archived(tmp_path)
    assert set(records) == {uniqueid, abandon[0]["uniqueid"]}  # the key is the uniqueid
    group = records[uniqueid]
    assert (group["status"], group["answered_by"], group["did"]) == ("answered", "212", "")
    assert group["recording"] == f"{uniqueid}.mp3" and group["recording_problem"] is None
    assert is_mp3(archive_files(tmp_path, ".mp3")[0])
    gave_up = records[abandon[0]["uniqueid"]]
    assert gave_up["status"] == "unanswered"
    assert gave_up["recording"] is None and gave_up["recording_problem"] is None


def test_asterisk_minimal_schema_with_freepbx_template_fails_naming_column(tmp_path, empty_db,
                                                                          sample_rows):
    """The same minimal table with the default (FreePBX) recordings template, which needs a
    recordingfile column: the run stops with exit 2 and names the missing column."""
    _minimal_table(empty_db)
    rows = clone_call(legs_of(sample_rows, DIRECT_ANSWERED), local("2026-11-26 09:30:00"))
    empty_db.insert(_minimal_rows(rows))
    path = write_config(tmp_path, empty_db.url,
                        source={"incoming": {"contexts": ["from-pstn"]}})

    result = run_cli("--config", str(path), "run")
    assert result.exit_code == 2, result.output
    assert "no column 'recordingfile'" in result.output
    assert not archive_files(tmp_path, ".json")


def test_window_read_uses_the_calldate_index(tmp_path, cdr_db, sample_rows):
    """On a table with a month of history the read of one window is a range scan of the
    calldate key, never a full table scan, whatever the window width the walk picks."""
    direct = legs_of(sample_rows, DIRECT_ANSWERED)
    first = local("2026-11-01 00:00:00")
    rows = [row for i in range(3000)
            for row in clone_call(direct, first + dt.timedelta(minutes=15 * i))]
    cdr_db.insert(rows)
    cdr_db.execute("ANALYZE TABLE cdr")
    config = make_config(tmp_path, cdr_db.url)

    source = CdrSource(config.source)
    try:
        for lo, width in ((local("2026-11-15 10:00:00"), dt.timedelta(seconds=20)),
                          (local("2026-11-15 10:00:00"), dt.timedelta(hours=1)),
                          (local("2026-11-15 00:00:00"), dt.timedelta(days=1))):
            plan = explain(source, lo, lo + width)
            assert plan, "no plan"
            assert all(step["type"] != "ALL" for step in plan), plan
            cdr = [step for step in plan if step["table"] == "cdr"]
            assert len(cdr) == 1 and cdr[0]["type"] == "range", plan
            assert cdr[0]["key"] == "calldate", plan
    finally:
        source.close()
