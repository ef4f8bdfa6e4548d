"""The systemd units in contrib/systemd: valid for systemd itself, and carrying the priority and
hardening settings the README promises."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

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
        "User": ["poller"],
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


# -- hardening: systemd's own rating, and the restrictions tried on the real work

EXPOSURE = re.compile(r"Overall exposure level for \S+: (\d+\.\d)")


@needs_analyze
@pytest.mark.parametrize("name", SERVICES)
def test_systemd_rates_the_services_below_5(tmp_path, name):
    """`systemd-analyze security` rated both 8.2 EXPOSED; hardened they rate under 5.0 (OK)."""
    copies(tmp_path)
    result = subprocess.run([ANALYZE, "security", "--offline=true", str(tmp_path / name)],
                            capture_output=True, text=True, timeout=120)
    match = EXPOSURE.search(result.stdout)
    if match is None:
        pytest.skip(f"this systemd-analyze cannot rate a unit file: {result.stderr.strip()}")
    assert float(match.group(1)) < 5.0, result.stdout


@pytest.mark.parametrize("name", SERVICES)
def test_the_hardening_leaves_what_the_poller_needs(name):
    """The network (a target, a database over TCP), the database's socket, state.dir and the
    recordings' folder (read, through the asterisk group) stay reachable."""
    found = directives(name)
    assert found["RestrictAddressFamilies"] == ["AF_UNIX AF_INET AF_INET6"]
    assert "PrivateNetwork" not in found and "IPAddressDeny" not in found
    assert "/var/lib/poller" in found["ReadWritePaths"]
    # the asterisk group comes from the group database (usermod); a unit naming a group that
    # does not exist fails to start (216/GROUP) on a PBX without FreePBX
    assert "SupplementaryGroups" not in found
    assert found["ProtectSystem"] == ["strict"]  # reads everywhere, the spool included
    assert found["SystemCallFilter"] == ["@system-service"]
    assert found["CapabilityBoundingSet"] == [""] and found["MemoryDenyWriteExecute"] == ["yes"]
    for key in ("PrivateDevices", "ProtectClock", "ProtectKernelModules", "ProtectKernelLogs",
                "RestrictNamespaces", "LockPersonality"):
        assert found[key] == ["yes"], key


def _under_the_units_filters(args: list[str], **options: Any) -> subprocess.CompletedProcess[str]:
    """`args` run under the seccomp filters the units ask systemd for."""
    try:
        from seccomp_filter import loader, syscall_set

        load = loader(syscall_set("@system-service"))
    except (RuntimeError, subprocess.CalledProcessError) as exc:
        pytest.skip(str(exc))
    return subprocess.run(args, preexec_fn=load, capture_output=True, text=True, timeout=300,
                          **options)


@needs_analyze
def test_the_filters_refuse_what_the_units_forbid():
    """The control: under the filters a packet socket and W+X memory are refused."""
    probe = ("import socket, mmap, errno\n"
             "try:\n    socket.socket(socket.AF_PACKET, socket.SOCK_RAW)\n"
             "except OSError as exc:\n    print('packet', errno.errorcode[exc.errno])\n"
             "try:\n    mmap.mmap(-1, 4096, prot=mmap.PROT_WRITE | mmap.PROT_EXEC)\n"
             "except OSError as exc:\n    print('wx', errno.errorcode[exc.errno])\n")
    result = _under_the_units_filters([sys.executable, "-c", probe])
    assert result.returncode == 0, result.stderr
    assert "packet EPERM" in result.stdout and "wx EPERM" in result.stdout, result.stdout


@needs_analyze
@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed")
def test_the_real_work_runs_under_the_units_filters(tmp_path, mysql_server):
    """The demo's whole pipeline (SQLite, LAME, the encoder child lowering its priority, the
    archive and its pages), ffmpeg decoding GSM, and a MariaDB connection over TCP, all under
    SystemCallFilter=@system-service, MemoryDenyWriteExecute and RestrictAddressFamilies."""
    demo = _under_the_units_filters([installed_poller(), "demo", str(tmp_path / "demo")])
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert "delivered 12 calls" in demo.stdout + demo.stderr and "7 recordings" in demo.stdout
    gsm = tmp_path / "call.wav"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "sine=frequency=440:duration=2",
                    "-ar", "8000", "-ac", "1", "-c:a", "gsm_ms", str(gsm)], check=True,
                   timeout=60)
    pcm = tmp_path / "call.raw"
    decoded = _under_the_units_filters(["ffmpeg", "-v", "error", "-i", str(gsm), "-f", "s16le",
                                        "-ac", "1", "-ar", "8000", str(pcm)])
    assert decoded.returncode == 0, decoded.stderr
    assert pcm.stat().st_size > 2 * 8000, pcm.stat().st_size  # two seconds of 16-bit samples
    connect = ("import sqlalchemy as sa, sys\n"
               "with sa.create_engine(sys.argv[1]).connect() as c:\n"
               "    print(c.execute(sa.text('select 41 + 1')).scalar())\n")
    query = _under_the_units_filters([sys.executable, "-c", connect, mysql_server])
    assert query.returncode == 0 and query.stdout.strip() == "42", query.stderr
