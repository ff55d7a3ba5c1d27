"""The notify protocol against a real datagram socket standing in for systemd."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from fleet.notify import SystemdNotifier


@pytest.fixture
def systemd(tmp_path: Path) -> Iterator[tuple[str, socket.socket]]:
    path = str(tmp_path / "notify.sock")
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(path)
    receiver.settimeout(5)
    yield path, receiver
    receiver.close()


def received(receiver: socket.socket) -> dict[str, str]:
    lines = receiver.recv(4096).decode().splitlines()
    return dict(line.split("=", 1) for line in lines)


def test_ready_status_and_stopping_arrive(systemd: tuple[str, socket.socket]) -> None:
    path, receiver = systemd
    notifier = SystemdNotifier({"NOTIFY_SOCKET": path})
    try:
        assert notifier.ready("3 bots running")
        assert received(receiver) == {"READY": "1", "STATUS": "3 bots running"}
        assert notifier.stopping()
        assert received(receiver) == {"STOPPING": "1", "STATUS": "draining"}
    finally:
        notifier.close()


async def test_watchdog_pings_from_the_loop(systemd: tuple[str, socket.socket]) -> None:
    path, receiver = systemd
    env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "200000", "WATCHDOG_PID": str(os.getpid())}
    notifier = SystemdNotifier(env)
    assert notifier.watchdog_interval == pytest.approx(0.2)
    task = asyncio.create_task(notifier.watchdog())
    try:
        for _ in range(2):
            assert await asyncio.to_thread(received, receiver) == {"WATCHDOG": "1"}
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        notifier.close()


def test_without_systemd_everything_is_a_no_op() -> None:
    notifier = SystemdNotifier({})
    assert not notifier.enabled
    assert not notifier.ready("x")
    assert notifier.watchdog_interval is None
    # A watchdog meant for another process is not ours to feed.
    other = SystemdNotifier({"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "1000", "WATCHDOG_PID": "1"})
    assert other.watchdog_interval is None


def test_a_vanished_socket_is_logged_not_raised(tmp_path: Path) -> None:
    notifier = SystemdNotifier({"NOTIFY_SOCKET": str(tmp_path / "gone.sock")})
    assert not notifier.notify(READY=1)
    notifier.close()
