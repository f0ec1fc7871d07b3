"""What the ssh and adb transports share: the result of a remote command and the errors they raise.

``TransportError`` means the target itself could not be used (unreachable host, missing tool, no adb
device). It is fatal for a whole LUT build, so ``measure_row`` lets it through instead of writing one
failure row per entry.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass

from slimda.errors import SlimdaError


class TransportError(SlimdaError):
    """The target cannot be reached or lacks a tool; the message names the host and the command."""


@dataclass(frozen=True)
class CommandResult:
    """A finished remote command: the command line as the remote shell saw it, exit status, output."""

    command: str
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + ("\n" if self.stdout and self.stderr else "") + self.stderr

    def tail(self, lines: int = 15) -> str:
        return "\n".join(self.output.strip().splitlines()[-lines:])


def run_argv(argv: list[str], timeout: float, what: str, stdin: bytes | None = None,
             text: bool = True) -> subprocess.CompletedProcess:
    """``subprocess.run`` of a local argument list (never a shell string) with a timeout.

    A missing local program (ssh, adb) or a timeout becomes a ``TransportError`` that names ``what``.
    """
    try:
        if stdin is None:
            return subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout,
                                  check=False, text=text)
        return subprocess.run(argv, input=stdin, capture_output=True, timeout=timeout, check=False)
    except FileNotFoundError:
        raise TransportError(f"{argv[0]!r} is not installed on this machine (needed for {what})") from None
    except subprocess.TimeoutExpired:
        raise TransportError(f"{what} did not finish within {timeout:g} s") from None


def decode(data: bytes | str | None) -> str:
    if data is None:
        return ""
    return data if isinstance(data, str) else data.decode("utf-8", errors="replace")
