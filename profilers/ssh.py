"""Run commands on, and copy files to, a host over OpenSSH.

Remote commands are argument lists: they are joined with ``shlex.join`` so the remote shell sees each
argument quoted (paths with spaces survive), and the local ``ssh`` is started with ``subprocess.run([...])``,
never through a local shell. ``BatchMode=yes`` (no password prompts that would hang a LUT build) and a
``ConnectTimeout`` are always set; unknown host keys are accepted on first use (``accept-new``) unless the
caller overrides ``StrictHostKeyChecking`` in ``options``.

Files travel as ``ssh host 'cat > path'`` (and ``cat path`` back), which needs nothing on the target but a
POSIX shell: no sftp subsystem, no scp.
"""

from __future__ import annotations

import hashlib
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from slimda.profilers.transport import CommandResult, TransportError, decode, run_argv


def remote_model_path(path: Path, remote_dir: str) -> str:
    """Where a model goes on a host: named by content, so concurrent or repeated runs never clash."""
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    return f"{remote_dir.rstrip('/')}/{path.stem}-{digest}{path.suffix or '.onnx'}"


def upload_once(target: SSHTarget, path: Path, remote_dir: str) -> str:
    """Copy ``path`` to ``remote_dir`` on ``target`` under its content name, unless it is there already (a file
    of that name is this very file, copied whole); returns the remote path."""
    remote = remote_model_path(path, remote_dir)
    if not target.exists(remote):
        target.put(path, remote)
    return remote


@dataclass(frozen=True)
class SSHTarget:
    """``host`` is ``user@addr`` (or an alias from ~/.ssh/config); ``options`` are extra ``-o`` values."""

    host: str
    port: int | None = None
    identity_file: str | None = None
    options: tuple[str, ...] = field(default_factory=tuple)
    connect_timeout_s: int = 10

    def ssh_argv(self) -> list[str]:
        """The local ``ssh`` invocation up to (not including) the remote command."""
        argv = ["ssh", "-o", "BatchMode=yes", "-o", f"ConnectTimeout={self.connect_timeout_s}"]
        if not any(o.lower().startswith("stricthostkeychecking") for o in self.options):
            argv += ["-o", "StrictHostKeyChecking=accept-new"]
        for opt in self.options:
            argv += ["-o", opt]
        if self.port:
            argv += ["-p", str(self.port)]
        if self.identity_file:
            argv += ["-i", str(self.identity_file), "-o", "IdentitiesOnly=yes"]
        return argv + ["--", self.host]

    def _call(self, remote_cmd: str, timeout: float, stdin: bytes | None = None,
              text: bool = True) -> tuple[int, str | bytes, str]:
        what = f"ssh {self.host}: {remote_cmd}"
        proc = run_argv(self.ssh_argv() + [remote_cmd], timeout, what, stdin=stdin, text=text)
        stderr = decode(proc.stderr)
        if proc.returncode == 255:
            raise TransportError(
                f"cannot reach {self.host} over ssh (exit 255) while running: {remote_cmd}\n"
                f"{stderr.strip()}\nCheck the address and port, that sshd runs there, and that key login "
                "works without a password (ssh -o BatchMode=yes ...): the profiler cannot type passwords."
            )
        return proc.returncode, proc.stdout, stderr

    def run(self, argv: list[str], timeout: float = 600.0, check: bool = False) -> CommandResult:
        """Run ``argv`` on the host. ``check`` turns a non-zero exit into a ``TransportError``."""
        remote_cmd = shlex.join(str(a) for a in argv)
        code, out, err = self._call(remote_cmd, timeout)
        result = CommandResult(remote_cmd, code, decode(out), err)
        if check and code != 0:
            raise TransportError(f"on {self.host}, command failed (exit {code}): {remote_cmd}\n{result.tail()}")
        return result

    def put(self, local: str | Path, remote: str, timeout: float = 600.0) -> None:
        """Copy a local file to ``remote`` (its directory is created). The file appears whole or not at all:
        it is written beside and renamed, so an interrupted copy never leaves a truncated model behind."""
        parent = str(Path(remote).parent)
        partial = shlex.quote(remote + ".partial-") + "$$"
        script = f"mkdir -p {shlex.quote(parent)} && cat > {partial} && mv -f {partial} {shlex.quote(remote)}"
        remote_cmd = shlex.join(["sh", "-c", script])
        code, _, err = self._call(remote_cmd, timeout, stdin=Path(local).read_bytes(), text=False)
        if code != 0:
            raise TransportError(f"cannot copy {local} to {self.host}:{remote} (exit {code}): {err.strip()}")

    def exists(self, remote: str, timeout: float = 60.0) -> bool:
        """Whether ``remote`` is a non-empty file on the host."""
        return self.run(["test", "-s", remote], timeout=timeout).returncode == 0

    def get(self, remote: str, local: str | Path, timeout: float = 600.0) -> Path:
        """Copy ``remote`` from the host to a local file; returns the local path."""
        remote_cmd = shlex.join(["cat", remote])
        code, out, err = self._call(remote_cmd, timeout, stdin=b"", text=False)
        if code != 0:
            raise TransportError(f"cannot copy {self.host}:{remote} here (exit {code}): {err.strip()}")
        local = Path(local)
        local.parent.mkdir(parents=True, exist_ok=True)
        local.write_bytes(out if isinstance(out, bytes) else out.encode())
        return local

    def read_text(self, remote: str, timeout: float = 120.0) -> str | None:
        """The content of a remote text file, or None when it cannot be read."""
        result = self.run(["cat", remote], timeout=timeout)
        return result.stdout if result.returncode == 0 else None
