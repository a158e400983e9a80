"""Integration fixtures: the real service (`orderstream serve`) on loopback ports.

Every process a test starts (supervisor, broker, workers) is stopped by the fixture, and the
fixture checks that none of them outlived the stop.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.flood import serve_argv

ROOT = Path(__file__).resolve().parents[2]


_handed_out: set[int] = set()


def free_port() -> int:
    """A free loopback port that this test process never handed out before.

    A port is free only until someone binds it: two picks before either is bound can return the
    same port (a scrape port once came back equal to the broker's, and serve could not bind it).
    """
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is gone for our purposes
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


class Response:
    def __init__(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.status = status
        self.body = body
        self.headers = headers

    def json(self) -> Any:
        return json.loads(self.body)

    def lines(self) -> list[Any]:
        return [json.loads(ln) for ln in self.body.splitlines() if ln.strip()]


class Service:
    """One `orderstream serve` process with its own data dir and ports."""

    def __init__(
        self, data_dir: Path, env: dict[str, str] | None = None, args: list[str] | None = None
    ) -> None:
        self.data_dir = data_dir
        self.http_port = free_port()
        self.broker_port = free_port()
        self.env = env or {}
        self.args = args or []
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir.parent / f"{data_dir.name}-serve.log"
        self.base = f"http://127.0.0.1:{self.http_port}"
        self.api_key = ""  # the service's bootstrap key (all scopes), read once it is ready

    def start(self, timeout: float = 60.0) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        env = dict(os.environ, **self.env)
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        self.proc = subprocess.Popen(
            [*serve_argv(self.data_dir, self.http_port, self.broker_port), *self.args],
            cwd=ROOT,
            env=env,
            stdout=open(self.log_path, "ab"),
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"serve exited {self.proc.returncode}:\n{self.log()[-3000:]}")
            if "ready in" in self.log():
                key = self.data_dir / "auth" / "bootstrap.key"
                self.api_key = key.read_text().strip() if key.exists() else ""
                return
            time.sleep(0.1)
        log = self.log()[-3000:]
        self._kill_all()  # a service that never got ready must not outlive the test either
        raise TimeoutError(f"service not ready in {timeout}s:\n{log}")

    def _kill_all(self) -> None:
        assert self.proc is not None
        pids = [p for group in self.child_pids().values() for p in group]
        self.proc.kill()
        self.proc.wait()
        for p in pids:
            if pid_alive(p):
                os.kill(p, signal.SIGKILL)

    def log(self) -> str:
        try:
            return self.log_path.read_bytes()[self._log_offset :].decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def child_pids(self) -> dict[str, list[int]]:
        text = self.log()
        return {
            "broker": [int(p) for p in re.findall(r"Tansu, pid (\d+)", text)],
            "worker": [int(p) for p in re.findall(r"worker \d+ started \(pid (\d+)", text)],
        }

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM, wait, and check that nothing it started is still running."""
        assert self.proc is not None
        pids = self.child_pids()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(
                    f"serve did not stop in {timeout}s:\n{self.log()[-3000:]}"
                ) from None
        time.sleep(0.2)
        leftover = [p for group in pids.values() for p in group if pid_alive(p)]
        for p in leftover:
            os.kill(p, signal.SIGKILL)
        assert not leftover, f"processes left running after stop: {leftover}"
        return self.proc.returncode

    # -- HTTP --------------------------------------------------------------------------------

    @property
    def auth(self) -> dict[str, str]:
        """Headers carrying the bootstrap key: tests act as a fully trusted client."""
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        auth: bool = True,
    ) -> Response:
        sent = {**(self.auth if auth else {}), **(headers or {})}
        req = urllib.request.Request(self.base + path, data=body, method=method, headers=sent)
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return Response(resp.status, resp.read(), dict(resp.headers))
        except urllib.error.HTTPError as err:
            return Response(err.code, err.read(), dict(err.headers))

    def post_order(self, channel: str, payload: bytes) -> Response:
        return self.request("POST", "/v1/orders", payload, {"X-Channel": channel})

    def post_batch(self, channel: str, payloads: list[bytes]) -> Response:
        return self.request(
            "POST",
            "/v1/orders",
            b"\n".join(payloads) + b"\n",
            {"X-Channel": channel, "Content-Type": "application/x-ndjson"},
        )

    def get_order(self, order_id: str) -> Response:
        return self.request("GET", f"/v1/orders/{order_id}")

    def wait_order(self, order_id: str, timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            resp = self.get_order(order_id)
            if resp.status == 200 and resp.json().get("state") != "accepted":
                return resp.json()  # recorded (accepted: in the journal, not yet processed)
            time.sleep(0.1)
        raise AssertionError(
            f"order {order_id} not visible within {timeout}s:\n{self.log()[-2000:]}"
        )

    def health(self) -> dict[str, Any]:
        return self.request("GET", "/health").json()

    def wait_drained(self, timeout: float = 60.0) -> None:
        """Until the journal holds nothing unsettled: every accepted order was recorded."""
        deadline = time.monotonic() + timeout
        depth = None
        while time.monotonic() < deadline:
            depth = self.health()["journal_depth"]
            if depth == 0:
                return
            time.sleep(0.1)
        raise AssertionError(f"journal still holds {depth} entries after {timeout}s")


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    svc = Service(tmp_path_factory.mktemp("svc") / "data")
    svc.start()
    try:
        yield svc
    finally:
        assert svc.stop() == 0


@pytest.fixture
def make_service(tmp_path: Path) -> Iterator[Any]:
    started: list[Service] = []

    def make(
        env: dict[str, str] | None = None, args: list[str] | None = None, data: Path | None = None
    ) -> Service:
        svc = Service(data or tmp_path / f"data{len(started)}", env, args)
        started.append(svc)
        return svc

    yield make
    for svc in started:
        if svc.proc is not None and svc.proc.poll() is None:
            svc.stop()
