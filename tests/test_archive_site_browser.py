"""The archive pages at work in a real browser: Debian's Chromium driven by Playwright.

The archive is the demo's (built by the real pipeline) plus a synthetic day of 1,000 calls with
real MP3s made by the project's encoder from the sample PBX's WAVs. Skipped where Chromium or
Playwright is missing, except under CI, where that is a failure. The day page's screenshot is
kept in $POLLER_TEST_ARTIFACTS (else the test's temporary folder) and its path printed.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import support
from support import DAY, HOSTILE, encode_samples, synthetic_day, two_pbx_day

from poller.recordings.formats import mp3_seconds
from poller.targets.archive.pages import PAGE
from poller.targets.archive.site import build_site

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--mute-audio",
        "--autoplay-policy=no-user-gesture-required"]


def _missing() -> str | None:
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is missing (apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install '.[test]')"
    return None


@dataclass(frozen=True)
class Site:
    archive: Path
    big_day: Path  # the 1,000-call day's folder
    records: list[dict[str, Any]]  # the 1,000 calls

    def url(self, folder: Path, fragment: str = "") -> str:
        return (folder / PAGE).as_uri() + fragment


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Site:
    from poller.ops.demo import run_demo

    base = tmp_path_factory.mktemp("pages")
    run_demo(base / "demo")
    archive = base / "demo" / "archive"
    records = synthetic_day(archive, DAY, 1000, encode_samples(base / "mp3"))
    report = build_site(archive, "en", "Europe/Moscow")
    assert not report.failed
    return Site(archive, archive / f"{DAY:%Y/%m/%d}", records)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    missing = _missing()
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"the browser tests must run under CI: {missing}")
        pytest.skip(missing)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    opened = context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda error: errors.append(str(error)))
    opened.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    yield opened
    context.close()
    assert errors == []


def visible_keys(page: Any) -> list[str]:
    return page.eval_on_selector_all(
        "#calls tbody tr:not([hidden])", "rows => rows.map(r => r.id.slice(2))")


def test_the_demo_days_show_the_calls_the_pipeline_delivered(site, page):
    page.goto((site.archive / PAGE).as_uri())
    days = page.eval_on_selector_all("table.days tbody th a", "links => links.map(a => a.href)")
    demo_days = [link for link in days if f"{DAY:%Y/%m/%d}" not in link]
    assert demo_days
    seen_incident: list[str] = []
    for link in demo_days:
        page.goto(link)
        folder = Path(link.removeprefix("file://")).parent
        records = [json.loads(p.read_text()) for p in folder.glob("*.json")
                   if not p.name.endswith(".incident.json")]
        expected = [r["key"] for r in sorted(records, key=lambda r: r["start"])]
        assert visible_keys(page) == expected
        for record in records:
            row = page.locator(f'tr[id="c-{record["key"]}"]')
            assert row.locator("td").nth(1).inner_text().startswith(record["number"])
            # the command line's words for the statuses
            assert row.locator(".s").inner_text() == record["status"]
            assert row.locator("button.play").count() == (1 if record["recording"] else 0)
            cells = row.locator("td").all_inner_texts()
            if record["status"] != "answered":
                assert "recording" not in cells[6], cells  # not "empty recording"
            if record.get("incident"):
                assert record["incident"] not in cells[1], cells  # a sentence, not a key
                assert re.search(r"(opened an incident|in the incident of the \d\d:\d\d "
                                 r"call)$", cells[1]), cells
                seen_incident.append(record["key"])
    assert len(seen_incident) == 2  # the demo's incident: the call that opened it, one joined


def test_the_status_filter_and_the_number_search(site, page):
    page.goto(site.url(site.big_day))
    assert len(visible_keys(page)) == 1000
    assert page.locator("#shown").inner_text() == "1000 of 1000 calls shown"
    page.select_option("#status", "busy")
    busy = [r["key"] for r in site.records if r["status"] == "busy"]
    assert visible_keys(page) == busy and len(busy) == 100
    assert page.evaluate("location.hash") == "#status=busy"
    page.fill("#q", "+7 916 100-00")
    wanted = [r["key"] for r in site.records if r["status"] == "busy"
              and "791610000" in re.sub(r"\D", "", r["number"])]
    assert visible_keys(page) == wanted and wanted
    page.fill("#q", "кузнецов")
    assert visible_keys(page) == [r["key"] for r in site.records
                                  if r["status"] == "busy" and r["name"] == "Кузнецов Пётр"]
    page.fill("#q", "no such caller")
    assert visible_keys(page) == [] and page.locator("#none").is_visible()
    page.select_option("#status", "")
    page.fill("#q", "")
    assert len(visible_keys(page)) == 1000


def test_the_index_links_land_on_a_filtered_day(site, page):
    page.goto((site.archive / PAGE).as_uri())
    page.click(f'a[href="{DAY:%Y/%m/%d}/index.html#status=unanswered"]')
    page.wait_for_load_state("load")
    assert page.input_value("#status") == "unanswered"
    assert visible_keys(page) == [r["key"] for r in site.records if r["status"] == "unanswered"]


def test_columns_sort_both_ways(site, page):
    page.goto(site.url(site.big_day))
    page.click("th:nth-child(4) button")
    durations = [r["duration"] for r in site.records]
    shown = page.eval_on_selector_all("#calls tbody tr td:nth-child(4)",
                                      "cells => cells.map(c => Number(c.dataset.v))")
    assert shown == sorted(durations)
    assert page.get_attribute("th:nth-child(4)", "aria-sort") == "ascending"
    assert page.get_attribute("th:nth-child(1)", "aria-sort") is None
    page.click("th:nth-child(4) button")
    shown = page.eval_on_selector_all("#calls tbody tr td:nth-child(4)",
                                      "cells => cells.map(c => Number(c.dataset.v))")
    assert shown == sorted(durations, reverse=True)


def test_a_recording_plays_and_its_length_is_the_mp3s(site, page):
    page.goto(site.url(site.big_day))
    assert page.locator("audio").count() == 0  # players are made on demand
    with_mp3 = [r for r in site.records if r["recording"]]
    assert len(with_mp3) == 3
    for record in with_mp3:
        page.click(f'tr[id="c-{record["key"]}"] button.play')
        audio = page.locator(f'tr[id="c-{record["key"]}"] audio')
        page.wait_for_function(
            "a => a.readyState >= 1 && !a.paused && a.currentTime > 0.2",
            arg=audio.element_handle(), timeout=15_000)
        duration = audio.evaluate("a => a.duration")
        expected = mp3_seconds(site.big_day / record["recording"])
        assert abs(duration - expected) < 0.15, (record["key"], duration, expected)
    playing = page.eval_on_selector_all("audio", "all => all.filter(a => !a.paused).length")
    assert playing == 1  # starting one player pauses the others


def test_a_hostile_caller_name_is_shown_as_text_and_runs_nothing(site, page):
    page.goto(site.url(site.big_day))
    hostile = next(r for r in site.records if r["name"] == HOSTILE)
    name = page.locator(f'tr[id="c-{hostile["key"]}"] .name')
    assert name.inner_text() == HOSTILE
    assert page.evaluate("typeof window.pwned") == "undefined"
    assert page.locator("#calls script, #calls img").count() == 0
    page.goto((site.archive / PAGE).as_uri())
    assert page.evaluate("typeof window.pwned") == "undefined"


def test_the_controls_work_from_the_keyboard(site, page):
    page.goto(site.url(site.big_day))
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.className") == "skip"
    page.keyboard.press("Slash")
    assert page.evaluate("document.activeElement.id") == "q"
    page.keyboard.type("1000007")
    assert visible_keys(page) == [r["key"] for r in site.records
                                  if "1000007" in re.sub(r"\D", "", r["number"])]
    page.keyboard.press("Shift+Tab")
    assert page.evaluate("document.activeElement.id") == "status"
    page.keyboard.press("ArrowDown")
    assert page.input_value("#status") == "answered"
    page.fill("#q", "")
    page.focus("th:nth-child(5) button")
    page.keyboard.press("Enter")
    assert page.get_attribute("th:nth-child(5)", "aria-sort") == "ascending"
    page.select_option("#status", "")
    first = page.locator("button.play").first
    first.focus()
    page.keyboard.press("Space")
    assert page.evaluate("document.activeElement.tagName") == "AUDIO"
    # the index's "called back" ticks, kept across a reload
    page.goto((site.archive / PAGE).as_uri())
    box = page.locator("#waiting input.done").first
    box.focus()
    page.keyboard.press("Space")
    page.reload()
    assert page.locator("#waiting input.done").first.is_checked()
    assert "done" in (page.locator("#waiting tbody tr").first.get_attribute("class") or "")


def test_a_thousand_call_day_is_usable_and_kept_as_a_screenshot(site, page, tmp_path):
    started = time.perf_counter()
    page.goto(site.url(site.big_day))
    loaded = time.perf_counter() - started
    started = time.perf_counter()
    page.select_option("#status", "unanswered")
    filtered = time.perf_counter() - started
    page.select_option("#status", "")
    folder = Path(os.environ.get("POLLER_TEST_ARTIFACTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    shot = folder / "archive-day-page.png"
    page.screenshot(path=str(shot))
    print(f"\nscreenshot of the 1000-call day page: {shot}\n"
          f"loaded in {loaded * 1000:.0f} ms, filtered in {filtered * 1000:.0f} ms "
          f"({(site.big_day / PAGE).stat().st_size / 1024:.0f} KiB)")
    assert shot.stat().st_size > 10_000
    assert loaded < 10 and filtered < 5


@pytest.fixture(scope="module")
def paged(tmp_path_factory: pytest.TempPathFactory) -> Site:
    """A day of 1,581 calls (one every 36 s from 8:00): its page holds the first thousand, a
    script beside it the rest; the last call, in that part, has a hostile name."""
    archive = tmp_path_factory.mktemp("paged")
    day = DAY + dt.timedelta(days=1)
    records = synthetic_day(archive, day, 1580)
    last = dt.datetime.fromisoformat(str(records[-1]["start"])) + dt.timedelta(minutes=1)
    hostile = support.record("zz.1", last, number="+79165550101", name=HOSTILE, status="unanswered",
                     problem="empty")
    # it joined the incident the day's first call opened (keys begin with the start's epoch)
    first = dt.datetime.fromisoformat(str(records[0]["start"]))
    hostile["incident"] = f"{int(first.timestamp())}.1"
    support.write_record(archive, hostile)
    report = build_site(archive, "en", "Europe/Moscow")
    assert not report.failed and report.calls == 1581
    return Site(archive, archive / f"{day:%Y/%m/%d}", [*records, hostile])


def test_a_day_in_parts_shows_a_screenful_and_finds_every_call(paged, page):
    keys = [str(r["key"]) for r in paged.records]
    started = time.perf_counter()
    page.goto(paged.url(paged.big_day))
    loaded = time.perf_counter() - started
    assert visible_keys(page) == keys[:1000]
    assert page.locator("#window").inner_text() == "calls 1–1000 of 1581"
    assert page.locator("#shown").inner_text() == "1581 of 1581 calls shown"
    assert page.is_disabled("#earlier")
    page.click("#later")
    assert visible_keys(page) == keys[1000:] and page.is_disabled("#later")
    page.click("#earlier")
    assert visible_keys(page) == keys[:1000]
    page.click("#later")
    # a row made from a part reads as one of the page's own
    made = page.locator('tr[id="c-zz.1"]')
    cells = made.locator("td").all_inner_texts()
    assert cells[0] == str(paged.records[-1]["start"])[11:19]
    assert cells[1] == f"+79165550101 {HOSTILE} in the incident of the 08:00 call", cells
    assert cells[2] == "unanswered" and cells[6] == ""  # nobody answered: nothing recorded
    assert page.evaluate("typeof window.pwned") == "undefined"
    assert page.locator("#calls script, #calls img").count() == 0
    # the filter and the search see every part
    page.select_option("#status", "busy")
    busy = [str(r["key"]) for r in paged.records if r["status"] == "busy"]
    assert visible_keys(page) == busy and len(busy) == 158
    assert page.locator("#pager").is_hidden()
    page.select_option("#status", "")
    wanted = paged.records[1345]
    page.fill("#q", re.sub(r"\D", "", str(wanted["number"]))[-7:])
    assert visible_keys(page) == [wanted["key"]]
    page.fill("#q", "")
    # sorting orders all of them, a screenful at a time
    page.click("th:nth-child(4) button")
    shown = page.eval_on_selector_all("#calls tbody tr td:nth-child(4)",
                                      "cells => cells.map(c => Number(c.dataset.v))")
    assert shown == sorted(int(r["duration"]) for r in paged.records)[:1000]
    # a link to a call of a later part (as the index's call-back list makes) shows it
    target = keys[1222]
    page.goto(paged.url(paged.big_day, f"#c-{target}"))
    assert target in visible_keys(page)
    assert page.locator(f'tr[id="c-{target}"]').is_visible()
    assert page.evaluate(f"document.getElementById('c-{target}').getBoundingClientRect().top"
                         " < window.innerHeight")
    size = (paged.big_day / PAGE).stat().st_size
    print(f"\n1581-call day: page {size / 1024:.0f} KiB, opened in {loaded * 1000:.0f} ms")


def test_the_pbx_filter_of_a_day_of_two_pbxs_reaches_its_later_parts(tmp_path, page):
    """Two PBXs' calls in one archive: the PBX column and filter, on the calls of the page's
    HTML and of the parts its script shows."""
    records = two_pbx_day(tmp_path, 1200)
    assert not build_site(tmp_path, "en", "Europe/Moscow").failed
    page.goto((tmp_path / "2026/11/26" / PAGE).as_uri())
    page.select_option("#pbx", "lviv")
    lviv = [r for r in records if r["pbx"] == "lviv"]
    assert page.locator("#shown").inner_text() == f"{len(lviv)} of 1200 calls shown"
    assert page.evaluate("location.hash") == "#pbx=lviv"
    cells = page.eval_on_selector_all("#calls tbody tr", "rows => rows.map(r => "
                                      "r.cells[r.cells.length - 1].textContent)")
    assert cells == ["lviv"] * len(lviv)
    page.select_option("#pbx", "kiev")
    page.fill("#q", "no such caller")
    assert page.locator("#none").is_visible()
