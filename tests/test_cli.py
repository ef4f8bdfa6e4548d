"""The command line: help, the demo, exit codes, what an idle run imports, docs that match."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from support import ROOT, config_keys, run_cli

from poller.cli.main import main
from poller.config.schema import Config
from poller.errors import ExitCode

README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_exit_codes_are_the_documented_ones():
    """Scripts and systemd rely on 0 done, 1 some calls failed, 2 bad usage or config."""
    assert [int(c) for c in ExitCode] == [0, 1, 2]
    assert (ExitCode.OK, ExitCode.PARTIAL, ExitCode.CONFIG) == (0, 1, 2)


@pytest.mark.parametrize("command", [[], ["run"], ["status"], ["demo"]])
def test_every_command_explains_itself(command):
    """`--help` on each command describes it; an administrator should not need the source."""
    result = run_cli(*command, "--help")
    assert result.exit_code == 0
    assert "Usage:" in result.output
    assert len(result.output.splitlines()) > 4


def test_every_command_and_option_is_in_the_readme():
    """The README's command table cannot drift from the CLI."""
    for name, command in main.commands.items():
        assert f"`{name}" in README, f"command {name} missing from README"
        for param in command.params:
            for opt in getattr(param, "opts", []):
                if opt.startswith("--") and opt != "--help":
                    assert opt in README, f"{name} {opt} missing from README"


def test_readme_documents_every_configuration_key():
    """Every key the config accepts (bar the easla target's own) appears in the README."""
    keys = [k for k in config_keys(Config) if not k.startswith("target.easla")]
    assert "source.lookback" in keys and "target.archive.dir" in keys
    for key in keys:
        leaf = key.rsplit(".", 1)[-1]
        assert re.search(rf"(^|\s){re.escape(leaf)}\s*=", README, re.M) or f"`{key}`" in README, key


def test_demo_delivers_the_sample_pbx(demo):
    """`poller demo` builds a sample PBX and delivers its incoming calls into the archive."""
    archive = demo.folder / "archive"
    records = [json.loads(p.read_text()) for p in archive.rglob("*.json")
               if not p.name.endswith(".incident.json")]
    statuses = sorted(r["status"] for r in records)
    assert len(records) == 12  # 14 calls, of which one outgoing and one internal are skipped
    assert set(statuses) == {"answered", "unanswered", "busy", "impossible"}
    recorded = [r for r in records if r["recording"]]
    assert len(recorded) == 7
    for record in recorded:
        mp3 = next(archive.rglob(record["recording"]))
        head = mp3.read_bytes()[:3]
        # an ID3 tag, or an MPEG audio frame sync (11 bits set)
        assert head == b"ID3" or (head[0] == 0xFF and head[1] & 0xE0 == 0xE0), head
    assert {r["recording_problem"] for r in records if not r["recording"]} == {"empty", None}
    names = {r["name"] for r in records}
    assert "Кузнецов Пётр" in names
    # the directory knows some callers; Morozova's missed call and her call back five minutes
    # later are one incident
    known = {r["caller_name"] for r in records if r["caller_name"]}
    assert known == {"Sokolov Ivan", "Morozova Elena", "OOO Vega"}
    (incident_file,) = archive.rglob("*.incident.json")
    incident = json.loads(incident_file.read_text())
    morozova = sorted((r for r in records if r["caller_name"] == "Morozova Elena"),
                      key=lambda r: r["start"])
    assert [r["incident"] for r in morozova] == [morozova[0]["key"]] * 2
    assert incident["incident"] == morozova[0]["key"]
    assert incident["joined"] == [morozova[1]["key"]]
    assert "Missed call from Morozova Elena +79161002304" in incident["attributes"]["title"]
    assert "calls folded into it" in demo.output
    assert "answered" in demo.output and "delivered" in demo.output
    # the calls are Moscow's, the log's stamps this host's: both say their zone, so the quick
    # start does not seem to show the future
    assert "its calls in Europe/Moscow, +03:00" in demo.output
    # a call nobody answered has nothing to record: not an "empty" recording
    for line in demo.output.splitlines():
        if re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d  \S+ +(unanswered|busy|impossible) ", line):
            assert "(empty)" not in line, line
    assert re.search(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d\d:\d\d INFO ", demo.output, re.M)
    index = archive / "index.html"
    assert f"pages: {index}" in demo.output and index.is_file()


def test_demo_runs_again_in_its_own_folder_but_not_in_a_foreign_one(demo_copy, tmp_path):
    """Re-running the demo rebuilds its folder; it never wipes a folder it did not make."""
    again = run_cli("demo", str(demo_copy.folder))
    assert again.exit_code == 0
    assert len(list((demo_copy.folder / "archive").rglob("*.json"))) == 13  # 12 + 1 incident
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    result = run_cli("demo", str(foreign))
    assert result.exit_code == ExitCode.CONFIG
    assert (foreign / "notes.txt").read_text() == "keep me"


def test_status_after_the_demo(demo):
    """`poller status` shows the watermark, the calls by stage and the last run."""
    result = run_cli("--config", str(demo.config), "status")
    assert result.exit_code == 0, result.output
    assert "watermark:" in result.output and "none yet" not in result.output
    assert "done 12" in result.output and "skipped 2" in result.output
    assert "callers:     4 matched, 8 unmatched" in result.output
    assert "incidents:   done 1" in result.output
    assert "last run:" in result.output and "never" not in result.output


def _idle_run_loads(config: Path, packages: set[str]) -> str:
    """`poller -q run` in a fresh interpreter: its exit code and which of `packages` it loaded."""
    probe = (
        "import sys\n"
        "from poller.cli.main import main\n"
        "try:\n"
        f"    main(['-q', '--config', {str(config)!r}, 'run'])\n"
        "except SystemExit as exc:\n"
        "    code = exc.code\n"
        f"print(code, sorted({{m.split('.')[0] for m in sys.modules}} & {set(packages)!r}))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True, cwd=ROOT)
    return out.stdout.strip() + out.stderr


def test_idle_run_imports_no_encoder_or_soap_library(demo_copy):
    """The minutely idle run loads neither suds, pydub nor lameenc, nor the page templates
    (import only what work needs)."""
    assert _idle_run_loads(demo_copy.config, {"suds", "pydub", "lameenc", "jinja2"}) == "0 []"


def test_an_idle_run_without_callers_imports_no_phone_number_library(demo_copy):
    """Without [callers] a minutely run that finds nothing new never loads phonenumbers (some
    20 ms of a run that has nothing to do)."""
    config = demo_copy.config.read_text(encoding="utf-8")
    demo_copy.config.write_text(config.split("\n[callers]", 1)[0] + "\n", encoding="utf-8")
    assert _idle_run_loads(demo_copy.config, {"phonenumbers"}) == "0 []"


def test_the_run_imports_the_phone_number_library_only_where_callers_need_it():
    """Without [callers] only a new call's number needs it; with them, checking callers.country
    at start does."""
    probe = ("import sys, poller.cli.main, poller.run.pipeline, poller.config.load\n"
             "poller.config.load.from_mapping({'source': {'url': 'sqlite:///cdr.db'}})\n"
             "print(sorted({m.split('.')[0] for m in sys.modules} & {'phonenumbers'}))\n")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_bad_date_on_the_command_line_is_a_usage_error(tmp_path):
    """A mistyped --since is refused before anything runs (exit 2)."""
    result = run_cli("--config", str(tmp_path / "x.toml"), "run",
                     "--since", "last tuesday")
    assert result.exit_code == 2
    assert "not a date" in result.output


def test_until_before_since_is_refused(tmp_path):
    """--until must be later than --since: refused before the config is even read (there is
    none here, and the message is about the dates)."""
    result = run_cli("--config", str(tmp_path / "x.toml"), "run",
                     "--since", "2026-02-01", "--until", "2026-01-01")
    assert result.exit_code == ExitCode.CONFIG
    assert "--until must be later than --since" in result.output


def test_verbose_and_quiet_together_are_refused():
    """-v and -q contradict each other: exit 2 saying so, rather than one silently winning."""
    result = run_cli("-v", "-q", "status")
    assert result.exit_code == 2 and "-v and -q" in result.output


def test_force_without_a_backfill_is_refused(tmp_path):
    """--force only means something for --since: alone it is a mistake worth saying."""
    result = run_cli("--config", str(tmp_path / "x.toml"), "run", "--force")
    assert result.exit_code == ExitCode.CONFIG
    assert "--force only applies to a backfill" in result.output


# -- the global options, anywhere on the line

def test_global_options_work_after_the_command_too(demo_copy):
    """`poller status --config X` and `poller run -q` (as a cron line may be written) mean
    what `poller --config X status` and `poller -q run` mean."""
    config = str(demo_copy.folder / "poller.toml")
    after = run_cli("status", "--config", config)
    assert after.exit_code == 0, after.output
    before = run_cli("--config", config, "status")
    assert after.stdout.splitlines()[1:] == before.stdout.splitlines()[1:]  # bar `now:`
    quiet = run_cli("run", "-q", "--config", config)
    assert quiet.exit_code == 0 and quiet.output == "", quiet.output
    loud = run_cli("run", "--config", config)
    assert "INFO run: delivered 0 calls" in loud.output
    both = run_cli("-v", "run", "-q", "--config", config)
    assert both.exit_code == 2 and "-v and -q contradict" in both.output
    grouped = run_cli("archive", "--config", config, "build", "-q")
    assert grouped.exit_code == 0 and "index.html" in grouped.stdout, grouped.output


def test_the_config_given_after_the_command_wins_over_the_environment(demo_copy):
    config = str(demo_copy.folder / "poller.toml")
    result = run_cli("status", "--config", config,
                     env={"POLLER_CONFIG": "/nonexistent/poller.toml"})
    assert result.exit_code == 0, result.output


def test_version_has_a_short_option():
    for flag in ("-V", "--version"):
        result = run_cli(flag)
        assert result.exit_code == 0 and re.match(r"poller, version \d", result.output), flag


def test_the_command_list_does_not_cut_descriptions():
    """`poller --help` lists each command with its help's whole first paragraph."""
    text = " ".join(run_cli("--help").output.split())
    assert "..." not in text.split("Commands:")[1]
    for command in main.commands.values():
        first = " ".join((command.help or "").split("\n\n")[0].split())
        assert first in text, command.name


def test_shell_completion_works_and_is_documented():
    program = Path(sys.executable).with_name("poller")  # the installed entry point
    result = subprocess.run([str(program)], capture_output=True, text=True, cwd=ROOT,
                            env={"_POLLER_COMPLETE": "bash_source", "PATH": "/usr/bin:/bin"},
                            timeout=60)
    assert result.returncode == 0 and "_poller_completion" in result.stdout, result.stderr
    assert "_POLLER_COMPLETE=bash_source poller > /etc/bash_completion.d/poller" in README
    page = (ROOT / "man" / "poller.1").read_text(encoding="utf-8")
    assert "SHELL COMPLETION" in page and "bash_source" in page
