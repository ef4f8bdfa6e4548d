"""The archive's HTML pages, rendered from real archive folders (no browser: see
test_archive_site_browser.py for the pages at work)."""

from __future__ import annotations

import configparser
import datetime as dt
import fnmatch
import json
import os
import shutil
import threading
import time
from html.parser import HTMLParser
from pathlib import Path

import pytest
from support import (
    ATTRIBUTE_BREAKER,
    DAY,
    HOSTILE,
    MSK,
    ROOT,
    record,
    run_cli,
    synthetic_day,
    write_record,
)

from poller.config.load import from_mapping
from poller.config.schema import ARCHIVE_LOCALES, ArchiveConfig
from poller.errors import ConfigError
from poller.model import STATUSES, Call
from poller.targets.archive.pages import (
    PAGE,
    SUMMARY,
    CallRow,
    DaySummary,
    callback_key,
    follow_ups,
    read_day,
)
from poller.targets.archive.site import INDEX_DAYS, ArchiveSite, build_site
from poller.targets.archive.target import ArchiveTarget
from poller.targets.archive.text import STRINGS, clock, long_date


class Rows(HTMLParser):
    """The call rows of a day page: their ids and the text of each cell."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[tuple[str, list[str]]] = []
        self.in_body = False
        self.cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "tbody":
            self.in_body = True
        elif tag == "tr" and self.in_body:
            self.rows.append((dict(attrs).get("id") or "", []))
        elif tag == "td" and self.in_body:
            self.cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "tbody":
            self.in_body = False
        elif tag == "td" and self.cell is not None:
            self.rows[-1][1].append("".join(self.cell).strip())
            self.cell = None

    def handle_data(self, data: str) -> None:
        if self.cell is not None:
            self.cell.append(data)


def rows_of(page: Path) -> list[tuple[str, list[str]]]:
    parser = Rows()
    parser.feed(page.read_text(encoding="utf-8"))
    return parser.rows


def site(root: Path, locale: str = "en") -> ArchiveSite:
    return ArchiveSite(root, locale, "Europe/Moscow",
                       now=dt.datetime.combine(DAY, dt.time(20, 0), MSK))


def test_a_day_page_lists_its_calls_in_time_order(tmp_path):
    later = write_record(tmp_path, record("k2", dt.datetime(2026, 11, 26, 11, 5, 9, tzinfo=MSK),
                                          status="busy"))
    earlier = write_record(tmp_path, record("k1", dt.datetime(2026, 11, 26, 9, 38, 27,
                                                              tzinfo=MSK), name="Sokolov Ivan"))
    report = site(tmp_path).build()
    assert (report.days, report.calls, report.index, report.failed) == (1, 2, True, [])
    rows = rows_of(tmp_path / "2026/11/26" / PAGE)
    assert [row_id for row_id, _ in rows] == ["c-k1", "c-k2"]
    time_, caller, status, duration, talk, by, recording, link = rows[0][1]
    assert (time_, caller, status, duration, talk, by) == (
        "09:38:27", "+79161234567 Sokolov Ivan", "answered", "1:00", "0:50", "201")
    assert rows[1][1][2] == "busy"
    page = (tmp_path / "2026/11/26" / PAGE).read_text()
    assert f'href="{earlier.name}"' in page and f'href="{later.name}"' in page


def test_caller_names_from_the_pbx_are_text_not_markup(tmp_path):
    start = dt.datetime(2026, 11, 26, 9, 0, tzinfo=MSK)
    write_record(tmp_path, record("a", start, name=HOSTILE, status="unanswered"))
    write_record(tmp_path, record("b", start + dt.timedelta(minutes=1), name=ATTRIBUTE_BREAKER,
                                  number='"><script>x()</script>', status="unanswered"))
    site(tmp_path).build()
    for page in (tmp_path / "2026/11/26" / PAGE, tmp_path / PAGE):
        text = page.read_text()
        assert "<script>window.pwned" not in text and "<img" not in text
        assert "<script>x()" not in text
        assert "&lt;script&gt;window.pwned=1&lt;/script&gt;" in text
    assert rows_of(tmp_path / "2026/11/26" / PAGE)[0][1][1] == f"+79161234567 {HOSTILE}"


def test_a_recording_is_offered_only_when_its_mp3_is_there(tmp_path):
    start = dt.datetime(2026, 11, 26, 9, 0, tzinfo=MSK)
    mp3 = tmp_path / "some.mp3"
    mp3.write_bytes(b"\xff\xfb" + bytes(400))
    write_record(tmp_path / "archive", record("with", start), mp3)
    gone = write_record(tmp_path / "archive", record("gone", start), mp3)
    gone.with_suffix(".mp3").unlink()
    write_record(tmp_path / "archive", record("empty", start, status="answered",
                                               problem="empty"))
    # nobody answered: nothing to record, and MixMonitor's header-only file is no news
    write_record(tmp_path / "archive", record("missed", start, status="unanswered",
                                               problem="empty"))
    site(tmp_path / "archive").build()
    page = (tmp_path / "archive/2026/11/26" / PAGE).read_text()
    assert 'data-src="with.mp3"' in page and 'href="with.mp3"' in page
    assert "gone.mp3" not in page
    rows = dict(rows_of(tmp_path / "archive/2026/11/26" / PAGE))
    assert rows["c-empty"][6] == "empty recording"
    assert rows["c-missed"][6] == ""


def test_records_waiting_for_their_mp3_and_broken_files_are_left_out(tmp_path, caplog):
    start = dt.datetime(2026, 11, 26, 9, 0, tzinfo=MSK)
    shown = write_record(tmp_path, record("shown", start))
    folder = shown.parent
    (folder / ".hidden.json.pending").write_text(json.dumps(record("hidden", start)))
    (folder / "broken.json").write_text("{not json")
    (folder / "naive.json").write_text(json.dumps(record("naive", start.replace(tzinfo=None))))
    assert [row.key for row in read_day(folder)] == ["shown"]
    assert "broken.json" in caplog.text and "naive.json" in caplog.text


def test_runs_rewrite_only_the_days_they_changed(tmp_path):
    for day in (25, 26, 27):
        write_record(tmp_path, record(f"k{day}", dt.datetime(2026, 11, day, 10, tzinfo=MSK)))
    site(tmp_path).build()
    before = {day: (tmp_path / f"2026/11/{day}" / PAGE).stat().st_ino for day in (25, 26, 27)}
    write_record(tmp_path, record("new", dt.datetime(2026, 11, 26, 12, tzinfo=MSK)))
    report = site(tmp_path).update({dt.date(2026, 11, 26)})
    after = {day: (tmp_path / f"2026/11/{day}" / PAGE).stat().st_ino for day in (25, 26, 27)}
    assert (report.days, report.calls, report.index) == (1, 2, True)
    assert after[25] == before[25] and after[27] == before[27]
    assert after[26] != before[26]  # replaced by a rename, never rewritten in place
    assert "c-new" in (tmp_path / "2026/11/26" / PAGE).read_text()
    assert not list(tmp_path.rglob("*.part"))


def test_a_run_that_changed_nothing_writes_nothing(tmp_path):
    write_record(tmp_path, record("k", dt.datetime(2026, 11, 26, 10, tzinfo=MSK)))
    site(tmp_path).build()
    index = (tmp_path / PAGE).stat().st_ino
    report = site(tmp_path).update(set())
    assert (report.days, report.index) == (0, False)
    assert (tmp_path / PAGE).stat().st_ino == index


def test_a_day_never_rendered_or_whose_page_failed_is_written_by_the_next_run(tmp_path):
    write_record(tmp_path, record("a", dt.datetime(2026, 11, 25, 10, tzinfo=MSK)))
    site(tmp_path).build()
    # records copied in by hand, and a day whose last rendering failed (no summary left)
    write_record(tmp_path, record("b", dt.datetime(2026, 11, 24, 10, tzinfo=MSK)))
    (tmp_path / "2026/11/25" / SUMMARY).unlink()
    report = site(tmp_path).update(set())
    assert (report.days, report.index) == (2, True)
    assert "2026/11/24/index.html" in (tmp_path / PAGE).read_text()


def test_a_failing_day_does_not_stop_the_others_and_is_retried(tmp_path):
    for day in (25, 26):
        write_record(tmp_path, record(f"k{day}", dt.datetime(2026, 11, day, 10, tzinfo=MSK)))
    blocked = tmp_path / "2026/11/25" / PAGE
    blocked.mkdir()  # a page that cannot be replaced
    report = site(tmp_path).build()
    assert report.days == 1 and len(report.failed) == 1 and "2026-11-25" in report.failed[0]
    assert not (tmp_path / "2026/11/25" / SUMMARY).exists()
    blocked.rmdir()
    assert site(tmp_path).update(set()).days == 1


def test_the_index_forgets_a_pruned_day(tmp_path):
    for day in (25, 26):
        write_record(tmp_path, record(f"k{day}", dt.datetime(2026, 11, day, 10, tzinfo=MSK)))
    site(tmp_path).build()
    shutil.rmtree(tmp_path / "2026/11/25")
    report = site(tmp_path).update(set())
    assert (report.days, report.index) == (0, True)
    index = (tmp_path / PAGE).read_text()
    assert "2026/11/25/" not in index and "2026/11/26/" in index
    assert json.loads((tmp_path / INDEX_DAYS).read_text()) == ["2026-11-26"]


def test_the_index_counts_each_day_by_status(tmp_path):
    synthetic_day(tmp_path, DAY, 40)
    site(tmp_path).build()
    index = (tmp_path / PAGE).read_text()
    assert "November 2026" in index
    summary = DaySummary.from_json(json.loads((tmp_path / "2026/11/26" / SUMMARY).read_text()))
    assert dict(summary.counts) == {"answered": 24, "unanswered": 8, "busy": 4,
                                    "impossible": 4}
    assert '<a href="2026/11/26/index.html#status=busy"' in index


def at(hour: int, minute: int = 0, day: int = 26) -> dt.datetime:
    return dt.datetime(2026, 11, day, hour, minute, tzinfo=MSK)


def test_missed_callers_wait_until_a_later_call_from_them_is_answered(tmp_path):
    calls = [
        record("m1", at(9), number="89161111111", status="unanswered"),
        record("m2", at(9, 5), number="+7 916 111-11-11", status="busy"),
        record("a1", at(10), number="+79161111111", status="answered"),  # clears m1 and m2
        record("m3", at(11), number="+79162222222", status="unanswered", name="Vega"),
        record("a2", at(8), number="+79162222222", status="answered"),  # before: clears nothing
        record("m4", at(12), number="+79162222222", status="impossible"),
        record("m5", at(13), number="anonymous", status="unanswered"),  # nobody to ring back
        record("m6", at(9, day=1), number="+79163333333", status="unanswered"),  # too old
    ]
    for data in calls:
        write_record(tmp_path, data)
    site(tmp_path).build()
    summaries = [DaySummary.of(day, read_day(tmp_path / f"{day:%Y/%m/%d}"))
                 for day in (dt.date(2026, 11, 1), DAY)]
    waiting = follow_ups(summaries, at(20) - dt.timedelta(days=14))
    assert [(item.last.key, item.attempts) for item in waiting] == [("m4", 2)]
    assert waiting[0].href == "2026/11/26/index.html#c-m4"
    index = (tmp_path / PAGE).read_text()
    assert 'href="2026/11/26/index.html#c-m4"' in index and "Vega" in index


@pytest.mark.parametrize(("number", "key"), [
    ("89161234567", "9161234567"), ("+7 (916) 123-45-67", "9161234567"), ("201", "201"),
    ("anonymous", None), ("", None), ("Anonymous", None)])
def test_callers_are_matched_on_their_last_ten_digits(number, key):
    assert callback_key(number) == key
    assert callback_key(number, "+79161234567") == "9161234567"


def test_a_caller_is_listed_once_whether_or_not_the_records_have_number_e164(tmp_path):
    """Calls delivered before callers.country was set have no number_e164; the later ones
    have it: one caller to call back, with both missed calls counted."""
    early = record("m1", at(9), number="89161234567", status="unanswered")
    later = record("m2", at(11), number="89161234567", status="busy")
    later["number_e164"] = "+79161234567"
    for data in (early, later):
        write_record(tmp_path, data)
    site(tmp_path).build()
    summary = DaySummary.of(DAY, read_day(tmp_path / "2026/11/26"))
    waiting = follow_ups([summary], at(0))
    assert [(item.last.key, item.attempts) for item in waiting] == [("m2", 2)]
    index = (tmp_path / PAGE).read_text()
    assert "To call back (1)" in index and index.count('href="2026/11/26/index.html#c-m') == 1


def test_the_incident_badge_says_who_opened_it_not_a_key(tmp_path):
    """Keys begin with the epoch of the call's start (Asterisk's uniqueid): the badge of a
    call that joined an incident gives the time of the call that opened it."""
    first, second = f"{int(at(9).timestamp())}.10", f"{int(at(9, 15).timestamp())}.14"
    opened = record(first, at(9), number="+79161234567", status="unanswered")
    joined = record(second, at(9, 15), number="+79161234567", status="unanswered")
    elsewhere = record("pbx2:1795000000.3", at(10), status="busy")  # opened on another day
    for data in (opened, joined, elsewhere):
        data["incident"] = first if data is not elsewhere else "pbx2:1795000000.3x"
        write_record(tmp_path, data)
    site(tmp_path).build()
    rows = dict(rows_of(tmp_path / "2026/11/26" / PAGE))
    assert rows[f"c-{first}"][1].endswith("opened an incident")
    assert rows[f"c-{second}"][1].endswith("in the incident of the 09:00 call"), rows
    assert rows["c-pbx2:1795000000.3"][1].endswith("in an incident")  # no epoch to read
    assert f">incident {first}<" not in (tmp_path / "2026/11/26" / PAGE).read_text()


def test_the_pages_use_the_command_lines_words_for_statuses():
    """`unanswered` and `impossible`, as `poller run --dry-run` and the records say them."""
    assert STRINGS["en"]["statuses"] == {status: status for status in STATUSES}


def test_russian_pages(tmp_path):
    write_record(tmp_path, record("k", at(9), status="unanswered", name="Кузнецов Пётр"))
    site(tmp_path, "ru").build()
    day = (tmp_path / "2026/11/26" / PAGE).read_text()
    index = (tmp_path / PAGE).read_text()
    assert '<html lang="ru"' in day and '<html lang="ru"' in index
    assert "четверг, 26 ноября 2026" in day and "без ответа" in day and "Кузнецов Пётр" in day
    assert "Ноябрь 2026" in index and "Перезвонить (1)" in index
    assert long_date(DAY, "en") == "Thursday, 26 November 2026"


def test_every_locale_has_every_phrase():
    english = STRINGS["en"]
    assert tuple(STRINGS) == ARCHIVE_LOCALES
    for locale, words in STRINGS.items():
        assert set(words) == set(english), locale
        for name, value in english.items():
            if isinstance(value, dict):
                assert set(words[name]) == set(value), (locale, name)


@pytest.mark.parametrize(("seconds", "text"), [(0, "0:00"), (42, "0:42"), (725, "12:05"),
                                               (3723, "1:02:03")])
def test_durations_read_like_a_phone(seconds, text):
    assert clock(seconds) == text


def test_the_locale_key_is_checked():
    base = {"source": {"url": "sqlite://"}}
    loaded = from_mapping({**base, "target": {"archive": {"locale": "ru"}}}, env={})
    assert loaded.target.archive.locale == "ru"
    assert from_mapping(base, env={}).target.archive.locale == "en"
    with pytest.raises(ConfigError, match="target.archive.locale"):
        from_mapping({**base, "target": {"archive": {"locale": "de"}}}, env={})


def make_call(key: str, start: dt.datetime, status: str = "answered") -> Call:
    naive = start.replace(tzinfo=None)
    return Call(key=key, start=start, end=start + dt.timedelta(seconds=30), number="+79161234567",
                name="", did="74951230001", duration=30, talk_time=20, wait_time=10,
                status=status, answered_by="201", incoming=True,  # type: ignore[arg-type]
                recordings=(), expects_recording=False, first_calldate=naive,
                last_calldate=naive)


def test_the_archive_target_writes_the_pages_of_the_days_it_changed(tmp_path):
    untouched = write_record(tmp_path, record("old", at(9, day=20)))
    site(tmp_path).build()
    old_page = (untouched.parent / PAGE).stat().st_ino
    target = ArchiveTarget(ArchiveConfig(dir=str(tmp_path), locale="ru"), "Europe/Moscow")
    mp3 = tmp_path / "x.mp3"
    mp3.write_bytes(b"\xff\xfb" + bytes(400))
    for call in (make_call("c1", at(9)), make_call("c2", at(10, day=27))):
        object_id = target.create(call, call.record(f"{call.key}.mp3", None))
        assert not (tmp_path / "2026/11" / f"{call.start:%d}" / PAGE).exists()
        target.attach(object_id, call, mp3)
    target.finish()
    for day, key in ((26, "c1"), (27, "c2")):
        page = (tmp_path / f"2026/11/{day}" / PAGE).read_text()
        assert f'id="c-{key}"' in page and f'data-src="{key}.mp3"' in page
        assert '<html lang="ru"' in page
    assert (untouched.parent / PAGE).stat().st_ino == old_page
    index = (tmp_path / PAGE).read_text()
    assert all(f"2026/11/{day}/index.html" in index for day in (20, 26, 27))
    assert target.changed_days == set()
    target.finish()  # a second call with nothing new is harmless


def test_poller_archive_build_writes_the_whole_archive(tmp_path):
    archive = tmp_path / "archive"
    synthetic_day(archive, DAY, 12)
    write_record(archive, record("other", at(9, day=27)))
    config = tmp_path / "poller.toml"
    config.write_text(f'[source]\nurl = "sqlite://"\ntimezone = "Europe/Moscow"\n'
                      f'[target]\nkind = "archive"\n[target.archive]\ndir = "{archive}"\n'
                      f'locale = "ru"\n')
    result = run_cli("--config", str(config), "archive", "build")
    assert result.exit_code == 0, result.output
    assert f"{archive / PAGE}: 2 day page(s) with 13 call(s) written, index written" in (
        result.output)
    assert '<html lang="ru"' in (archive / "2026/11/27" / PAGE).read_text()
    elsewhere = tmp_path / "copy"
    shutil.copytree(archive, elsewhere)
    shutil.rmtree(elsewhere / "2026/11/27")
    result = run_cli("--config", str(config), "archive", "build", "--dir",
                     str(elsewhere))
    assert result.exit_code == 0 and "1 day page(s)" in result.output
    result = run_cli("--config", str(config), "archive", "build", "--dir",
                     str(tmp_path / "none"))
    assert result.exit_code == 2
    help_text = run_cli("archive", "build", "--help").output
    assert "index.html" in help_text and "--dir" in help_text


@pytest.mark.slow  # builds the demo
def test_the_demo_archive_gets_its_pages(tmp_path):
    from poller.ops.demo import run_demo

    run_demo(tmp_path / "demo")
    archive = tmp_path / "demo" / "archive"
    assert not build_site(archive, "en", "Europe/Moscow").failed
    records = [json.loads(p.read_text()) for p in archive.rglob("*.json")
               if not p.name.endswith(".incident.json")]  # an incident is not a call row
    pages = sorted(archive.glob("*/*/*/" + PAGE))
    assert len(records) == 12 and pages
    shown = [row_id for page in pages for row_id, _ in rows_of(page)]
    assert sorted(shown) == sorted(f"c-{r['key']}" for r in records)
    index = (archive / PAGE).read_text()
    assert all(f"{page.parent.relative_to(archive)}/index.html" in index for page in pages)


def test_templates_ship_with_the_package():
    parser = configparser.ConfigParser()
    parser.read(ROOT / "setup.cfg")
    shipped = parser["options.package_data"]["poller.targets.archive"]
    patterns = [p.strip() for p in shipped.split(",")]
    templates = ROOT / "poller" / "targets" / "archive" / "templates"
    names = [f"templates/{p.name}" for p in templates.iterdir() if p.is_file()]
    assert {"templates/day.html.j2", "templates/index.html.j2", "templates/site.js"} <= set(names)
    for name in names:
        assert any(fnmatch.fnmatch(name, pattern) for pattern in patterns), name
    assert "jinja2" in parser["options"]["install_requires"]
    assert "playwright" in parser["options.extras_require"]["test"]


@pytest.mark.slow  # renders a thousand-call day
def test_a_thousand_call_day_renders_well_under_a_second(tmp_path):
    """Measured, printed for the record (pytest -s), and bounded loosely against regressions."""
    synthetic_day(tmp_path, DAY, 1000)
    folder = tmp_path / "2026/11/26"
    renderer = site(tmp_path)
    started = time.perf_counter()
    report = renderer.update({DAY})
    elapsed = time.perf_counter() - started
    page = (folder / PAGE).read_bytes()
    script = page.split(b"<script>\n", 1)[1].split(b"</script>", 1)[0]
    style = page.split(b"<style>", 1)[1].split(b"</style>", 1)[0]
    print(f"\n1000-call day: read, rendered and written with the index in {elapsed * 1000:.0f} ms;"
          f" page {len(page) / 1024:.0f} KiB ({len(script) / 1024:.1f} KiB JS, "
          f"{len(style) / 1024:.1f} KiB CSS inline); {os.cpu_count()} CPUs")
    assert report.calls == 1000 and len(rows_of(folder / PAGE)) == 1000
    assert elapsed < 5  # the target is well under one second: see the printed figure


# ---- a day in parts: the page holds the first, scripts beside it the others


@pytest.fixture
def small_parts(monkeypatch):
    """Parts of three calls, so that a few records make a day of several parts."""
    from poller.targets.archive import site as site_module

    monkeypatch.setattr(site_module, "PART_ROWS", 3)


def day_records(root: Path, minutes: range, status: str = "answered") -> list[Path]:
    return [write_record(root, record(f"k{m:03d}", at(9, m), status=status,
                                      number=f"+7916000{m:04d}")) for m in minutes]


def part_keys(folder: Path) -> list[list[str]]:
    from poller.targets.archive.pages import read_part

    return [[row.key for row in read_part(path)] for path in sorted(folder.glob("calls-*.js"))]


def test_a_big_day_keeps_its_first_part_in_the_page_and_the_rest_beside_it(tmp_path,
                                                                             small_parts):
    day_records(tmp_path, range(7))
    report = site(tmp_path).build()
    folder = tmp_path / "2026/11/26"
    assert (report.days, report.calls) == (1, 7)
    assert [row_id for row_id, _ in rows_of(folder / PAGE)] == ["c-k000", "c-k001", "c-k002"]
    assert part_keys(folder) == [["k000", "k001", "k002"], ["k003", "k004", "k005"], ["k006"]]
    page = (folder / PAGE).read_text()
    assert '<script src="calls-0002.js?n=3">' in page and 'src="calls-0003.js?n=1"' in page
    assert "calls-0001.js" not in page  # its calls are in the page itself
    assert "7 calls" in page and 'id="pager"' in page
    index = (tmp_path / PAGE).read_text()
    assert "2026/11/26/index.html" in index


def test_new_calls_are_appended_to_the_last_part_not_the_day_read_again(tmp_path, small_parts,
                                                                        monkeypatch):
    day_records(tmp_path, range(7))
    site(tmp_path).build()
    folder = tmp_path / "2026/11/26"
    before = {path.name: path.stat().st_ino for path in folder.glob("calls-*.js")}
    added = day_records(tmp_path, range(7, 10), status="unanswered")
    # the day's other records are not read again
    monkeypatch.setattr("poller.targets.archive.site.read_day", None)
    report = site(tmp_path).update({DAY}, {DAY: set(added)})
    assert (report.days, report.calls, report.failed) == (1, 3, [])
    assert part_keys(folder) == [["k000", "k001", "k002"], ["k003", "k004", "k005"],
                                 ["k006", "k007", "k008"], ["k009"]]
    after = {path.name: path.stat().st_ino for path in folder.glob("calls-*.js")}
    assert after["calls-0001.js"] == before["calls-0001.js"]
    assert after["calls-0002.js"] == before["calls-0002.js"]
    assert after["calls-0003.js"] != before["calls-0003.js"]
    summary = DaySummary.from_json(json.loads((folder / SUMMARY).read_text()))
    assert (summary.total, summary.counts["unanswered"], len(summary.missed)) == (10, 3, 3)
    assert summary.parts[-1] == ("calls-0004.js", 1) and summary.last[1] == "k009"
    page = (folder / PAGE).read_text()
    assert "10 calls" in page and 'src="calls-0004.js?n=1"' in page
    assert "+79160000009" in (tmp_path / PAGE).read_text()  # a missed caller to call back


def test_an_archive_on_a_file_system_without_locks_still_gets_its_pages(tmp_path, monkeypatch):
    import errno

    from poller.targets.archive import files

    def no_locks(fd: int, operation: int) -> None:
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(files.fcntl, "flock", no_locks)
    day_records(tmp_path, range(3))
    report = site(tmp_path).build()
    assert (report.days, report.calls, report.failed) == (1, 3, [])
    assert (tmp_path / PAGE).is_file()


def test_calls_a_killed_run_wrote_before_its_pages_are_on_the_day_after_the_next_append(
        tmp_path, small_parts):
    """A run killed between its records and its pages leaves calls the ledger holds as done
    (never written again): the next run's pages must show them, not only its own calls."""
    day_records(tmp_path, range(4))
    site(tmp_path).build()
    day_records(tmp_path, range(5, 7))  # delivered; the run died before its pages
    (late,) = day_records(tmp_path, range(9, 10))
    report = site(tmp_path).update({DAY}, {DAY: {late}})
    assert report.failed == []
    assert sum(part_keys(tmp_path / "2026/11/26"), []) == [
        "k000", "k001", "k002", "k003", "k005", "k006", "k009"]
    summary = DaySummary.from_json(json.loads((tmp_path / "2026/11/26" / SUMMARY).read_text()))
    assert summary.total == 7


def test_two_pollers_sharing_an_archive_never_drop_each_others_calls_from_a_day(
        tmp_path, small_parts, monkeypatch):
    """Two PBXs' pollers (each its own lock) append to one archive: the second's pages wait
    for the first's, or the call appended first vanishes from the day for good."""
    from poller.targets.archive import site as site_module

    day_records(tmp_path, range(4))
    site(tmp_path).build()
    (mine,) = day_records(tmp_path, range(10, 11))
    reading = site_module.read_part
    other: list[threading.Thread] = []

    def read_then_let_the_other_poller_write(path: Path) -> list[CallRow]:
        rows = reading(path)
        if not other:  # the other poller's call and pages, between this one's read and write
            (theirs,) = day_records(tmp_path, range(20, 21))
            other.append(threading.Thread(
                target=lambda: site(tmp_path).update({DAY}, {DAY: {theirs}})))
            other[0].start()
            other[0].join(timeout=1.0)
        return rows

    monkeypatch.setattr(site_module, "read_part", read_then_let_the_other_poller_write)
    report = site(tmp_path).update({DAY}, {DAY: {mine}})
    other[0].join()
    assert report.failed == []
    assert sum(part_keys(tmp_path / "2026/11/26"), []) == [
        "k000", "k001", "k002", "k003", "k010", "k020"]
    monkeypatch.setattr(site_module, "read_part", reading)
    (later,) = day_records(tmp_path, range(30, 31))
    site(tmp_path).update({DAY}, {DAY: {later}})
    assert sum(part_keys(tmp_path / "2026/11/26"), []) == [
        "k000", "k001", "k002", "k003", "k010", "k020", "k030"]


def test_a_call_among_the_others_or_a_part_that_disagrees_makes_the_day_written_whole(
        tmp_path, small_parts):
    day_records(tmp_path, range(0, 14, 2))
    site(tmp_path).build()
    folder = tmp_path / "2026/11/26"
    (inside,) = day_records(tmp_path, range(5, 6))
    report = site(tmp_path).update({DAY}, {DAY: {inside}})
    assert report.calls == 8  # the day read again
    assert part_keys(folder)[1] == ["k005", "k006", "k008"]
    (folder / "calls-0003.js").write_text("damaged")
    (late,) = day_records(tmp_path, range(30, 31))
    report = site(tmp_path).update({DAY}, {DAY: {late}})
    assert (report.calls, report.failed) == (9, [])
    assert part_keys(folder)[-1] == ["k010", "k012", "k030"]
    for path in folder.glob("*.json"):  # fewer calls: the parts past the last are removed
        if path.stem not in ("k000", "k002"):
            path.unlink()
    site(tmp_path).update({DAY})
    assert part_keys(folder) == [["k000", "k002"]]
    assert "calls-0002.js" not in (folder / PAGE).read_text()
