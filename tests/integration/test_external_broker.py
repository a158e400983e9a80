"""`serve --broker kafka://...`: no embedded broker; a broker that restarts empty is detected."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from tests.integration.conftest import ROOT, Service, free_port
from tests.integration.test_durability import assert_all_recorded_once, post_many

pytestmark = pytest.mark.integration


def start_broker(port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "streams.cli", "broker", "--port", str(port)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(1.0)
    assert proc.poll() is None
    return proc


def stop_broker(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    proc.wait(10)


def test_external_broker_restarting_empty_is_recovered(make_service) -> None:
    port = free_port()
    broker = start_broker(port)
    svc: Service = make_service(args=["--broker", f"kafka://127.0.0.1:{port}"])
    try:
        svc.start()
        assert "embedded broker" not in svc.log()  # it started none of its own
        first = post_many(svc, 24_000_000, 500)
        assert_all_recorded_once(svc, first)
        epoch = svc.health()["epoch"]

        stop_broker(broker)  # the broker goes away with all its topics...
        during = post_many(svc, 24_100_000, 500)  # ...the endpoint keeps accepting...
        time.sleep(2)
        broker = start_broker(port)  # ...and an empty one comes back on the same address
        assert_all_recorded_once(svc, first + during)
        assert svc.health()["epoch"] != epoch
        assert "came back empty (new epoch)" in svc.log()
        assert svc.stop() == 0
    finally:
        stop_broker(broker)
