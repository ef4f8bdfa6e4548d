"""Turning a call's recording files into one MP3 in a low-priority child process.

One child serves a whole run (`EncoderProcess`): its start-up — an interpreter, the audio
imports, LAME, lowering its priority — is about 15 ms of CPU, as much as encoding 20 s of speech,
so paying it once a call would double the cost of the short calls most calls are.
"""

from __future__ import annotations

import json
import logging
import os
import selectors
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from poller.config.schema import TranscodeConfig
from poller.errors import DeliveryError, StorageUnavailable
from poller.recordings.jobs import EXIT_CANNOT_WRITE, EXIT_UNREADABLE, Job

log = logging.getLogger(__name__)

# a child that holds this much more memory after a job than after its first is replaced:
# however long the calls, a run's encoder stays about the size of one
GROWTH_LIMIT_KB = 32 * 1024
JOBS_PER_CHILD = 1000  # and a fresh one now and then, whatever its size
STDERR_KEPT = 4000  # characters of the child's own complaints kept for the error message


class TranscodeError(DeliveryError):
    """The MP3 could not be made this time (a stuck encoder, no ffmpeg): retried later."""


class Unreadable(Exception):
    """The input is truncated, corrupt or not audio: the call goes out without it."""


@dataclass(frozen=True)
class Encoded:
    """What the encoder child reported."""

    seconds: float  # audio seconds read
    mp3_seconds: float  # audio seconds in the MP3, by its frame headers
    peak_rss_kb: int  # the child's own peak memory during this job
    cpu: float = 0.0  # CPU seconds of the child (and its decoders) on this job


class EncoderProcess:
    """The encoder child of one run, started at its first job and kept for the next.

    It runs in a session of its own at `transcode.nice` (see poller.recordings.encoder). A job
    that exceeds `transcode.timeout`, or an interrupt of this process, kills it with its whole
    process group; a child that died is charged to the job it was doing (TranscodeError, retried
    later) and replaced at the next job, and one found dead between jobs is replaced at no
    call's expense.
    """

    def __init__(self, config: TranscodeConfig):
        self.config = config
        self._process: subprocess.Popen[bytes] | None = None
        self._jobs = 0
        self._baseline_kb = 0  # the child's memory after its first job
        self._stderr = b""  # the tail of what the child said on stderr

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def __enter__(self) -> EncoderProcess:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()

    def encode(self, sources: list[Path], target: Path, *,
               call_seconds: float | None = None) -> Encoded:
        """Encode `sources` (joined in order) into `target`.

        Given `call_seconds` (the call's duration), a file far longer than the call is
        Unreadable, and the child stops decoding it there (encoder.max_recording_seconds).
        """
        line = Job(target, list(sources), call_seconds).to_line()
        process = self._send(line)
        try:
            reply = self._reply(process, time.monotonic() + float(self.config.timeout))
        except BaseException:
            self._kill()
            raise
        if reply is None:
            raise TranscodeError(self._died(process))
        self._jobs += 1
        self._retire_if_grown(reply)
        code, message = reply["code"], reply.get("message", "")
        if code == EXIT_UNREADABLE:
            raise Unreadable(message.removeprefix("unreadable: "))
        if code == EXIT_CANNOT_WRITE:  # the folder of the MP3 refuses writes: nobody's fault
            raise StorageUnavailable(f"state.dir: the encoder {message[-500:]}")
        if code != 0:
            raise TranscodeError(f"encoder failed ({code}): {message[-500:]}")
        return Encoded(reply["seconds"], reply["mp3_seconds"], reply["peak_rss_kb"],
                       reply["cpu"])

    def close(self) -> None:
        """End the child: at end of input it exits; one still busy (an interrupted job) is
        killed."""
        process, self._process = self._process, None
        if process is None:
            return
        assert process.stdin is not None
        try:
            process.stdin.close()
            process.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            _kill(process)
        _close_pipes(process)

    # -- the child's life
    def _send(self, line: bytes) -> subprocess.Popen[bytes]:
        """The job written to a live child: one that died between jobs (killed by the OOM
        killer, say) is replaced first, its death no job's fault."""
        for _ in range(2):
            process = self._alive()
            assert process.stdin is not None
            try:
                process.stdin.write(line)
                process.stdin.flush()
                return process
            except BrokenPipeError:
                log.info("the encoder child had ended (%s): starting another",
                         self._died(process))
        raise TranscodeError("the encoder child ends as soon as it starts")

    def _alive(self) -> subprocess.Popen[bytes]:
        if self._process is not None and self._process.poll() is not None:
            log.info("the encoder child had ended (%s): starting another",
                     self._died(self._process))
        if self._process is None:
            self._process = self._start()
            self._jobs, self._baseline_kb, self._stderr = 0, 0, b""
        return self._process

    def _start(self) -> subprocess.Popen[bytes]:
        config = self.config
        command = [sys.executable, "-m", "poller.recordings.encoder", "--serve",
                   "--bitrate", config.bitrate.rstrip("k"), "--nice", str(config.nice),
                   "--ffmpeg", config.ffmpeg, f"--parent={os.getpid()}"]
        process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, start_new_session=True)
        for stream in (process.stdout, process.stderr):
            assert stream is not None
            os.set_blocking(stream.fileno(), False)
        return process

    def _reply(self, process: subprocess.Popen[bytes], deadline: float) -> dict[str, Any] | None:
        """The child's answer line, or None when it ended without one; TranscodeError (the
        child killed) past the deadline. Its stderr is drained meanwhile and its tail kept."""
        assert process.stdout is not None and process.stderr is not None
        got = b""
        with selectors.DefaultSelector() as selector:
            selector.register(process.stdout, selectors.EVENT_READ)
            selector.register(process.stderr, selectors.EVENT_READ)
            while b"\n" not in got:
                left = deadline - time.monotonic()
                if left <= 0:
                    self._kill()
                    raise TranscodeError(f"encoder killed after {self.config.timeout:.0f}s")
                for key, _ in selector.select(left):
                    data = _read(process.stdout if key.fileobj is process.stdout
                                 else process.stderr)
                    if data is None:
                        continue  # woken, yet nothing to read after all
                    if key.fileobj is process.stderr:
                        self._stderr = (self._stderr + data)[-STDERR_KEPT:]
                        if not data:
                            selector.unregister(process.stderr)
                        continue
                    if not data:
                        return None
                    got += data
        line, _, rest = got.partition(b"\n")
        try:
            reply = json.loads(line)
            if rest.strip() or not isinstance(reply, dict) or "code" not in reply:
                raise ValueError("not one reply")
        except ValueError:
            # something else wrote to the child's stdout: no later reply could be trusted
            self._kill()
            raise TranscodeError("the encoder child answered "
                                 f"{got[:200].decode(errors='replace')!r}") from None
        return reply

    def _died(self, process: subprocess.Popen[bytes]) -> str:
        """Why the child ended: reaped, its exit status and the tail of what it said."""
        assert process.stderr is not None
        try:
            code = process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            _kill(process)
            code = process.returncode
        tail = self._stderr + (_read(process.stderr) or b"")
        _close_pipes(process)
        if process is self._process:
            self._process = None
        how = f"killed by signal {-code}" if code < 0 else f"exit {code}"
        text = tail.decode(errors="replace").strip()[-500:]
        return f"encoder ended ({how}){': ' + text if text else ''}"

    def _retire_if_grown(self, reply: dict[str, Any]) -> None:
        """Memory stays bounded over a long run: a child that grew, or has served long, is
        ended now and a fresh one starts with the next job."""
        held = int(reply.get("rss_kb", 0))
        if self._jobs == 1:
            self._baseline_kb = held
        if self._jobs >= JOBS_PER_CHILD or held > self._baseline_kb + GROWTH_LIMIT_KB:
            log.debug("encoder child retired after %d jobs (%d kB held)", self._jobs, held)
            self.close()

    def _kill(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            _kill(process)
            _close_pipes(process)


def to_mp3(sources: list[Path], target: Path, config: TranscodeConfig, *,
           call_seconds: float | None = None) -> Encoded:
    """Encode one call's recordings in a child of its own (a tool, a test): a run keeps an
    EncoderProcess for all its calls instead."""
    with EncoderProcess(config) as encoder:
        return encoder.encode(sources, target, call_seconds=call_seconds)


def _read(stream: IO[bytes]) -> bytes | None:
    """What the pipe holds now: b"" at its end, None when nothing is there yet."""
    try:
        return os.read(stream.fileno(), 65536)
    except BlockingIOError:
        return None
    except OSError:
        return b""


def _kill(process: subprocess.Popen[bytes]) -> None:
    """The child and its whole process group (a decoder it started) killed and reaped."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()


def _close_pipes(process: subprocess.Popen[bytes]) -> None:
    for stream in (process.stdin, process.stdout, process.stderr):
        if stream is not None:
            try:
                stream.close()
            except OSError:
                pass
