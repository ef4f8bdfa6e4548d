"""One encoder child serves a whole run: started by the first recording, kept for the next,
replaced when it dies (charged to the call it was encoding, or to none when it died between
calls) or when it has grown or served long; ended with the run. Real children, real audio."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from audiotools import Background, encoders_of, write_speech_wav

from poller.config.schema import Seconds, TranscodeConfig
from poller.recordings import transcode
from poller.recordings.transcode import EncoderProcess, TranscodeError, Unreadable

# nice 0: these tests are about the child's life, and a niced child waits out any other load
CONFIG = TranscodeConfig(nice=0, timeout=Seconds(120))


@pytest.fixture
def short(tmp_path: Path) -> Path:
    return write_speech_wav(tmp_path / "short.wav", 3.0)


def dead(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pid not in encoders_of(os.getpid()):
            return True
        time.sleep(0.01)
    return False


def test_one_child_serves_every_call_and_ends_with_the_run(tmp_path, short):
    """Three calls, one child: the same pid for each; none is left once the run closes it."""
    with EncoderProcess(CONFIG) as encoder:
        assert encoder.pid is None  # nothing encoded, nothing started
        pids = set()
        for number in range(3):
            encoded = encoder.encode([short], tmp_path / f"{number}.mp3", call_seconds=3)
            assert abs(encoded.seconds - 3.0) < 0.01 and encoded.cpu > 0
            pids.add(encoder.pid)
        assert len(pids) == 1 and encoders_of(os.getpid()) == list(pids)
    assert encoders_of(os.getpid()) == []


def test_an_unreadable_file_is_the_calls_and_the_child_goes_on(tmp_path, short):
    """Noise behind a RIFF header: that call is Unreadable; the same child encodes the next."""
    noise = tmp_path / "noise.wav"
    noise.write_bytes(b"RIFF" + os.urandom(4000))
    with EncoderProcess(CONFIG) as encoder:
        encoder.encode([short], tmp_path / "a.mp3")
        pid = encoder.pid
        with pytest.raises(Unreadable):
            encoder.encode([noise], tmp_path / "b.mp3")
        encoder.encode([short], tmp_path / "c.mp3")
        assert encoder.pid == pid


@pytest.mark.slow  # a ten-minute recording, killed while it is encoded
def test_a_child_killed_mid_call_charges_that_call_and_a_new_one_takes_the_next(tmp_path,
                                                                                 short):
    """SIGKILL to the child while it encodes: that call fails with TranscodeError (retried by
    the run's schedule, never `unreadable`), and the next call gets a fresh child."""
    long = write_speech_wav(tmp_path / "long.wav", 600.0)
    target = tmp_path / "long.mp3"
    with EncoderProcess(CONFIG) as encoder:
        encoder.encode([short], tmp_path / "first.mp3")
        pid = encoder.pid
        assert pid is not None
        job = Background(encoder.encode, [long], target)
        job.start()
        deadline = time.monotonic() + 30
        while not (target.exists() and target.stat().st_size):
            assert time.monotonic() < deadline and job.is_alive(), job.error
            time.sleep(0.005)
        os.kill(pid, signal.SIGKILL)
        job.join(timeout=30)
        assert isinstance(job.error, TranscodeError), job.error or job.result
        assert "killed by signal 9" in str(job.error)
        encoded = encoder.encode([short], tmp_path / "next.mp3")
        assert abs(encoded.seconds - 3.0) < 0.01
        assert encoder.pid not in (None, pid) and dead(pid)


def test_a_child_that_died_between_calls_costs_no_call(tmp_path, short):
    """A child gone while idle (the OOM killer, an operator's kill) is replaced before the next
    call is sent: that call is encoded as if nothing had happened."""
    with EncoderProcess(CONFIG) as encoder:
        encoder.encode([short], tmp_path / "a.mp3")
        pid = encoder.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        assert dead(pid)
        encoded = encoder.encode([short], tmp_path / "b.mp3")
        assert abs(encoded.seconds - 3.0) < 0.01 and encoder.pid != pid


def test_a_child_that_served_long_or_grew_is_replaced(tmp_path, short, monkeypatch):
    """Memory stays bounded over a long backfill: after JOBS_PER_CHILD calls, or once it holds
    GROWTH_LIMIT_KB more than after its first, the child is ended and the next call starts a
    new one."""
    monkeypatch.setattr(transcode, "JOBS_PER_CHILD", 2)
    with EncoderProcess(CONFIG) as encoder:
        encoder.encode([short], tmp_path / "1.mp3")
        first = encoder.pid
        encoder.encode([short], tmp_path / "2.mp3")
        assert encoder.pid is None and first is not None and dead(first)
        encoder.encode([short], tmp_path / "3.mp3")
        assert encoder.pid not in (None, first)
        monkeypatch.setattr(transcode, "JOBS_PER_CHILD", 1000)
        monkeypatch.setattr(transcode, "GROWTH_LIMIT_KB", -10**9)  # any size counts as grown
        second = encoder.pid
        assert second is not None
        encoder.encode([short], tmp_path / "4.mp3")
        assert encoder.pid is None and dead(second)


def test_a_child_that_answers_nonsense_fails_that_call_and_is_replaced(tmp_path, short,
                                                                        monkeypatch):
    """Anything but one reply line on the child's stdout (a library printing, say) fails that
    call with TranscodeError and ends the child: a stray line must never pass for the next
    call's reply. The next call gets a real child."""
    real = EncoderProcess._start
    babbling = [sys.executable, "-c", "import sys\nfor line in sys.stdin:\n"
                "    print('LAME says hello', flush=True)"]

    def start_babbling(self):
        monkeypatch.setattr(EncoderProcess, "_start", real)  # the next child is a real one
        process = subprocess.Popen(babbling, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, start_new_session=True)
        for stream in (process.stdout, process.stderr):
            os.set_blocking(stream.fileno(), False)
        return process

    monkeypatch.setattr(EncoderProcess, "_start", start_babbling)
    with EncoderProcess(CONFIG) as encoder:
        with pytest.raises(TranscodeError, match="LAME says hello"):
            encoder.encode([short], tmp_path / "a.mp3")
        assert encoder.pid is None
        encoded = encoder.encode([short], tmp_path / "b.mp3")
        assert abs(encoded.seconds - 3.0) < 0.01
