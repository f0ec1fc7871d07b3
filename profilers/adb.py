"""Run commands on, and push files to, an Android device with ``adb -s SERIAL``.

Like the ssh transport: remote commands are argument lists joined with ``shlex.join`` for the device's
``sh``; ``adb`` itself is started with an argument list. A missing, offline or unauthorised device is a
``TransportError`` that names the serial and the command.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from slimda.profilers.transport import CommandResult, TransportError, decode, run_argv

_ADB_DEVICE_TROUBLE = re.compile(
    r"(device .*not found|no devices/emulators found|device offline|device unauthorized|"
    r"more than one device)", re.IGNORECASE)


@dataclass(frozen=True)
class AdbTarget:
    """A device as ``adb devices`` lists it (``serial``), reached through the ``adb`` program."""

    serial: str
    adb: str = "adb"

    def _base(self) -> list[str]:
        return [self.adb, "-s", self.serial]

    def _check_device(self, proc_stderr: str, what: str) -> None:
        if _ADB_DEVICE_TROUBLE.search(proc_stderr):
            raise TransportError(
                f"adb cannot use device {self.serial!r} while running: {what}\n{proc_stderr.strip()}\n"
                "Check `adb devices` (USB debugging on, the computer authorised on the phone).")

    def run(self, argv: list[str], timeout: float = 600.0, check: bool = False,
            env: dict[str, str] | None = None) -> CommandResult:
        """Run ``argv`` in the device shell, optionally with environment variables set for it."""
        remote_cmd = shlex.join(str(a) for a in argv)
        if env:
            remote_cmd = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items()) + " " + remote_cmd
        proc = run_argv(self._base() + ["shell", remote_cmd], timeout, f"adb -s {self.serial} shell {remote_cmd}")
        stderr = decode(proc.stderr)
        self._check_device(stderr, remote_cmd)
        result = CommandResult(remote_cmd, proc.returncode, decode(proc.stdout), stderr)
        if check and proc.returncode != 0:
            raise TransportError(f"on adb device {self.serial}, command failed (exit {proc.returncode}): "
                                 f"{remote_cmd}\n{result.tail()}")
        return result

    def push(self, local: str | Path, remote: str, timeout: float = 600.0) -> None:
        """``adb push`` a local file to ``remote`` on the device."""
        what = f"adb -s {self.serial} push {local} {remote}"
        proc = run_argv(self._base() + ["push", str(local), remote], timeout, what)
        stderr = decode(proc.stderr)
        self._check_device(stderr, what)
        if proc.returncode != 0:
            raise TransportError(f"{what} failed (exit {proc.returncode}): {stderr.strip() or decode(proc.stdout)}")

    def read_text(self, remote: str, timeout: float = 120.0) -> str | None:
        result = self.run(["cat", remote], timeout=timeout)
        return result.stdout if result.returncode == 0 else None
