"""Recording names from the template, and keeping resolved paths inside recordings.dir."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Any

import pytest
from support import call_of, leg

from poller.model import Leg
from poller.recordings.files import RefusedPath, resolve_inside, siblings
from poller.templates import recording_fields, render_recording_name

DEFAULT = "{calldate:%Y/%m/%d}/{recordingfile}"
FILE = "in-74951230001-+79161002301-20261126-093827-1795675107.1.wav"


@pytest.fixture
def monitor(tmp_path: Path) -> Path:
    """A recordings directory with one FreePBX date folder and a file outside it."""
    base = tmp_path / "monitor"
    (base / "2026" / "11" / "26").mkdir(parents=True)
    (base / "2026" / "11" / "26" / FILE).write_bytes(b"RIFF")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "shadow").write_text("root:x:0:0")
    return base


# --- resolve_inside --------------------------------------------------------------------------


def test_relative_name_inside_is_accepted(monitor):
    """The usual FreePBX name `2026/11/26/<file>` resolves under the directory."""
    path = resolve_inside(monitor, f"2026/11/26/{FILE}")
    assert path == monitor.resolve() / "2026" / "11" / "26" / FILE
    assert path.is_file()


def test_absolute_name_inside_is_accepted(monitor):
    """Older FreePBX stores an absolute path: accepted when it lies inside the directory."""
    absolute = str(monitor / "2026" / "11" / "26" / FILE)
    assert resolve_inside(monitor, absolute) == monitor.resolve() / "2026" / "11" / "26" / FILE


def test_missing_file_inside_is_accepted(monitor):
    """A file MixMonitor has not written yet still resolves (then it is waited for)."""
    assert resolve_inside(monitor, "2026/11/26/not-yet.wav").parent == (
        monitor.resolve() / "2026" / "11" / "26")


def test_dot_dot_escape_is_refused(monitor):
    """A recordingfile column of `../../etc/shadow` is refused, never read."""
    with pytest.raises(RefusedPath):
        resolve_inside(monitor, "../../etc/shadow")
    with pytest.raises(RefusedPath):
        resolve_inside(monitor, "../outside/shadow")


def test_absolute_name_outside_is_refused(monitor, tmp_path):
    """An absolute path outside the directory (`/etc/shadow`) is refused."""
    with pytest.raises(RefusedPath):
        resolve_inside(monitor, "/etc/shadow")
    with pytest.raises(RefusedPath):
        resolve_inside(monitor, str(tmp_path / "outside" / "shadow"))


def test_absolute_name_sharing_the_prefix_is_refused(monitor, tmp_path):
    """`/…/monitor-old/x.wav` is not inside `/…/monitor` although the string starts alike."""
    (tmp_path / "monitor-old").mkdir()
    with pytest.raises(RefusedPath):
        resolve_inside(monitor, str(tmp_path / "monitor-old" / "x.wav"))


def test_symlink_inside_pointing_outside_is_refused(monitor, tmp_path):
    """A symlink in the directory that points outside it is refused."""
    link = monitor / "2026" / "11" / "26" / "evil.wav"
    os.symlink(tmp_path / "outside" / "shadow", link)
    with pytest.raises(RefusedPath):
        resolve_inside(monitor, "2026/11/26/evil.wav")


def test_symlinked_folder_pointing_outside_is_refused(monitor, tmp_path):
    """A date folder that is a symlink to somewhere else is refused too."""
    os.symlink(tmp_path / "outside", monitor / "2026" / "12")
    with pytest.raises(RefusedPath):
        resolve_inside(monitor, "2026/12/shadow")


def test_symlink_loop_is_refused(monitor):
    """A symlink pointing at itself is refused, not a crash (Python 3.11 raises RuntimeError)."""
    loop = monitor / "2026" / "11" / "26" / "loop.wav"
    os.symlink(loop, loop)
    with pytest.raises(RefusedPath):
        resolve_inside(monitor, "2026/11/26/loop.wav")


def test_fifo_is_refused_and_never_opened(monitor):
    """A named pipe under the recording's name would block the run on open: refused."""
    fifo = monitor / "2026" / "11" / "26" / "pipe.wav"
    os.mkfifo(fifo)
    with pytest.raises(RefusedPath, match="not a regular file"):
        resolve_inside(monitor, "2026/11/26/pipe.wav")


def test_siblings_of_another_system_are_not_joined(monitor):
    """Two PBXs (systemname pbx1, pbx2) sharing a folder can write the same uniqueid counter:
    only the time stamp may differ between a paused call's files, never the system's name."""
    folder = monitor / "2026" / "11" / "26"
    ours = folder / "in-74951230001-+79161002301-20261126-093827-pbx1-1795675107.1.wav"
    paused = folder / "in-74951230001-+79161002301-20261126-093815-pbx1-1795675107.1.wav"
    theirs = folder / "in-74951230001-+79161002301-20261126-093820-pbx2-1795675107.1.wav"
    other = folder / "in-74951230009-+79160000000-20261126-093821-1795675107.1.wav"
    for path in (ours, paused, theirs, other):
        path.write_bytes(b"RIFF")
    assert siblings(monitor, ours.resolve()) == [paused.resolve(), ours.resolve()]


def test_recordings_dir_itself_a_symlink_is_fine(monitor, tmp_path):
    """/var/spool/asterisk/monitor is often a symlink to a bigger disk: its files are inside."""
    alias = tmp_path / "spool-monitor"
    os.symlink(monitor, alias)
    assert resolve_inside(alias, f"2026/11/26/{FILE}") == (
        monitor.resolve() / "2026" / "11" / "26" / FILE)
    assert resolve_inside(alias, str(alias / "2026" / "11" / "26" / FILE)).is_file()


# --- render_name and template_fields ---------------------------------------------------------


def test_default_template_gives_freepbx_date_folder():
    """FreePBX's layout: the call's local date as YYYY/MM/DD, then the recordingfile column."""
    assert render_recording_name(DEFAULT, leg()) == f"2026/11/26/{FILE}"


def test_default_template_passes_absolute_recordingfile_through():
    """An absolute recordingfile (older FreePBX) is used as it is, without the date folder."""
    absolute = f"/var/spool/asterisk/monitor/2026/11/26/{FILE}"
    assert render_recording_name(DEFAULT, leg(recordingfile=absolute)) == absolute


@pytest.mark.parametrize("empty", ["", "   "])
def test_empty_recordingfile_names_nothing(empty):
    """A route that does not record leaves recordingfile empty: no name at all."""
    assert render_recording_name(DEFAULT, leg(recordingfile=empty)) is None


def test_uniqueid_template():
    """A plain MixMonitor folder named by uniqueid."""
    name = render_recording_name("{uniqueid}.wav", leg(recordingfile=""))
    assert name == "1795675107.1.wav"


def test_dot_dot_recordingfile_with_default_template_is_refused(monitor):
    """The column value `../../etc/shadow` under the FreePBX template is refused."""
    name = render_recording_name(DEFAULT, leg(recordingfile="../../etc/shadow"))
    assert name is not None
    with pytest.raises(RefusedPath):
        resolve_inside(monitor, name)


def test_template_fields_lists_the_columns():
    """The columns a template uses decide whether an unanswered call expects a file."""
    assert recording_fields(DEFAULT) == {"calldate", "recordingfile"}
    assert recording_fields("{uniqueid}.wav") == {"uniqueid"}


@pytest.mark.parametrize("template", [
    "{calldate:%Y/%m/%d/{recordingfile}",  # a brace not closed
    "{calldate:%Y/%m/%d}/{recordingfile",
    "{}.wav",  # no column name
    "{0}.wav",  # a position, not a column
    "{recordingfile.name}",  # attribute access
    "{leg[0]}.wav",
    "monitor.wav",  # names no column: every call would get the same file
])
def test_template_fields_rejects_malformed_templates(template):
    """A malformed recordings.name is reported at start-up rather than at the first call."""
    with pytest.raises(ValueError):
        recording_fields(template)


def test_siblings_found_when_a_field_looks_like_a_time_stamp(monitor):
    """A did of 8 digits and a number of 6 look like `-YYYYMMDD-HHMMSS-`: the stamp that
    differs between a paused call's files is the last one."""
    folder = monitor / "2026" / "11" / "26"
    ours = folder / "in-12345678-654321-20261126-093827-1795675107.1.wav"
    paused = folder / "in-12345678-654321-20261126-093815-1795675107.1.wav"
    for path in (ours, paused):
        path.write_bytes(b"RIFF")
    assert siblings(monitor, ours.resolve()) == [paused.resolve(), ours.resolve()]


# --- a template without {recordingfile}: places to look, and patterns ------------------------

PATTERN = "{calldate:%Y/%m/%d}/*-{uniqueid}.wav"
SAMPLE_DAY = Path(__file__).resolve().parent / "data" / "samples" / "recordings" / "2026/11/26"


def _plan(monitor: Path, legs: list[Leg], template: str) -> Any:
    from poller.config.schema import RecordingsConfig
    from poller.recordings.files import plan_recording

    call = call_of(*legs, template=template)
    config = RecordingsConfig(dir=str(monitor), name=template)
    return plan_recording(call, config, dt.datetime(2026, 11, 26, 12, 0, tzinfo=dt.UTC))


def _settled(path: Path, source: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(source.read_bytes())
    os.utime(path, (0, 0))
    return path


def test_the_file_named_after_the_linkedid_is_found(monitor):
    """MixMonitor started on the trunk channel, whose own row Asterisk did not write: the
    file is named after the call's linkedid, the last place looked at."""
    wav = _settled(monitor / "1795675107.0.wav", SAMPLE_DAY / FILE)
    plan = _plan(monitor, [leg(recordingfile="")], "{uniqueid}.wav")
    assert plan.files == (wav.resolve(),) and plan.problem is None


def test_no_file_anywhere_once_settled_is_no_recording_without_waiting(monitor):
    """An answered call whose channels left no file: no recording, no problem, no wait."""
    plan = _plan(monitor, [leg(recordingfile="")], "{uniqueid}.wav")
    assert plan.files == () and plan.problem is None


def test_a_pattern_finds_both_halves_of_a_paused_recording(monitor):
    """P1-12 paused and resumed: two files end in `-1795675215.55.wav`; the pattern finds
    both, oldest first, and a header-only file found is `empty`, not missing."""
    paused = sorted(SAMPLE_DAY.glob("*-1795675215.55.wav"))
    for wav in paused:
        _settled(monitor / "2026/11/26" / wav.name, wav)
    paused_leg = leg(uniqueid="1795675215.55", linkedid="1795675215.54", recordingfile="")
    plan = _plan(monitor, [paused_leg], PATTERN)
    assert [p.name for p in plan.files] == [p.name for p in paused]
    header = next(SAMPLE_DAY.glob("*-1795675119.5.wav"))
    _settled(monitor / "2026/11/26" / header.name, header)
    empty = _plan(monitor, [leg(uniqueid="1795675119.5", recordingfile="")], PATTERN)
    assert empty.files == () and empty.problem == "empty"


def test_a_pattern_match_outside_the_folder_is_no_match(monitor, tmp_path):
    """A symbolic link matching the pattern but pointing out of recordings.dir is not read."""
    (monitor / "2026/11/26" / "x-1795675999.1.wav").symlink_to(tmp_path / "outside" / "shadow")
    plan = _plan(monitor, [leg(uniqueid="1795675999.1", linkedid="", recordingfile="")], PATTERN)
    assert plan.files == () and plan.problem is None


@pytest.mark.parametrize("template", ["*/*-{uniqueid}.wav", "*/{uniqueid}.wav",
                                      "{calldate:%Y}/*/{uniqueid}.wav"])
def test_a_pattern_outside_the_file_name_or_twice_is_refused(template):
    from poller.config.load import from_mapping
    from poller.errors import ConfigError

    with pytest.raises(ConfigError, match=r"recordings.name: one `\*` at most"):
        from_mapping({"source": {"url": "sqlite:///x"}, "recordings": {"name": template}},
                     env={})
