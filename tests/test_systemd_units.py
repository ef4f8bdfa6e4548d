"""The systemd units in contrib/systemd: valid for systemd itself, and carrying the priority and
hardening settings the README promises."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from support import ROOT

UNITS = ROOT / "contrib" / "systemd"
SERVICES = ("poller.service", "poller-follow.service")
ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")


def installed_poller() -> str:
    """The poller script of this interpreter's environment (else the one on PATH)."""
    beside = Path(sys.executable).parent / "poller"
    if beside.is_file():
        return str(beside)
    found = shutil.which("poller")
    if found is None:
        pytest.skip("the poller command is not installed (pip install -e .)")
    return found


def copies(folder: Path) -> list[Path]:
    """The three units with ExecStart pointing at the installed poller (verify checks that the
    command exists and is executable)."""
    poller = installed_poller()
    made = []
    for name in ("poller.service", "poller.timer", "poller-follow.service"):
        text = (UNITS / name).read_text(encoding="utf-8")
        path = folder / name
        path.write_text(text.replace("/usr/local/bin/poller", poller), encoding="utf-8")
        made.append(path)
    return made


def verify(*paths: Path) -> subprocess.CompletedProcess[str]:
    assert ANALYZE is not None
    return subprocess.run([ANALYZE, "verify", "--man=no", *map(str, paths)], cwd=paths[0].parent,
                          capture_output=True, text=True, timeout=120)


def directives(name: str) -> dict[str, list[str]]:
    """`Key=value` lines of a unit (comments skipped), every value of a repeated key kept."""
    found: dict[str, list[str]] = {}
    for line in (UNITS / name).read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        found.setdefault(key.strip(), []).append(value.strip())
    return found


@needs_analyze
def test_units_pass_systemd_analyze_verify(tmp_path):
    """systemd-analyze verify on the three units (ExecStart: installed poller) prints nothing."""
    result = verify(*copies(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == "" and result.stderr == "", result.stdout + result.stderr


@needs_analyze
def test_verify_reports_a_broken_unit(tmp_path):
    """A copy with a misspelt directive is reported: the verify check can fail."""
    service, timer, _ = copies(tmp_path)
    text = service.read_text(encoding="utf-8")
    service.write_text(text.replace("[Service]\n", "[Service]\nNoNewPrivilege=yes\n", 1),
                       encoding="utf-8")
    result = verify(service, timer)
    output = result.stdout + result.stderr
    assert "Unknown key" in output and "NoNewPrivilege" in output, output


@needs_analyze
def test_verify_reports_a_missing_command(tmp_path):
    """The units as shipped, without /usr/local/bin/poller: verify says it is not executable."""
    if Path("/usr/local/bin/poller").exists():
        pytest.skip("/usr/local/bin/poller exists here")
    service = tmp_path / "poller.service"
    shutil.copyfile(UNITS / "poller.service", service)
    result = verify(service)
    assert "/usr/local/bin/poller" in result.stdout + result.stderr
    assert "not executable" in result.stdout + result.stderr


@pytest.mark.parametrize("name", SERVICES)
def test_services_are_gentle_and_hardened(name):
    """Each service: poller user in asterisk group, idle CPU and I/O, Nice=10, hardening on."""
    unit = directives(name)
    expected = {
        "User": ["poller"], "SupplementaryGroups": ["asterisk"],
        "CPUWeight": ["idle"], "Nice": ["10"], "IOSchedulingClass": ["idle"],
        "ProtectSystem": ["strict"], "NoNewPrivileges": ["yes"], "PrivateTmp": ["yes"],
        "ReadWritePaths": ["/var/lib/poller"],
        # a stop signals the poller alone: it finishes (or unwinds) the call its encoder has
        "KillMode": ["mixed"],
    }
    for key, values in expected.items():
        assert unit.get(key) == values, (name, key, unit.get(key))
    assert unit["Environment"] == ["POLLER_CONFIG=/etc/poller/poller.toml"]


def test_timer_service_and_follow_service_run_the_right_commands():
    """The timer fires a quiet batch every minute; the follow service polls every 15 s."""
    batch = directives("poller.service")
    assert batch["Type"] == ["oneshot"]
    assert batch["ExecStart"] == ["/usr/local/bin/poller -q run"]
    assert batch["SuccessExitStatus"] == ["1"]

    timer = directives("poller.timer")
    assert re.fullmatch(r"(\*-\*-\* )?\*:\*(:00)?|minutely", timer["OnCalendar"][0]), timer
    assert timer["WantedBy"] == ["timers.target"]
    assert "Unit" not in timer or timer["Unit"] == ["poller.service"]

    follow = directives("poller-follow.service")
    assert follow["Type"] == ["simple"]
    assert follow["ExecStart"] == ["/usr/local/bin/poller run --follow --interval 15s"]
    assert follow["KillSignal"] == ["SIGTERM"]
    assert follow["Restart"] == ["on-failure"]
    assert follow["WantedBy"] == ["multi-user.target"]
