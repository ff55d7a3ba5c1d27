"""The CLI as operators run it: a real process, exit codes, one clear line."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "123456:ABCDEFGHIJKLMNOPQRSTUVWXYZabcdef"
VALID = f"""\
funnels:
  main:
    welcome: {{text: Olá}}
    fallback: {{text: Use /start}}
bots:
  - id: loja
    token: "{TOKEN}"
    funnel: main
"""


def botfleet(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fleet", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", **(env or {})},
    )


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return str(path)


def test_sample_config_checks_ok() -> None:
    result = botfleet("check-config", "-c", "config.yaml")
    assert result.returncode == 0, result.stderr
    assert "config.yaml: OK - 4 bots (3 enabled), 2 funnels" in result.stdout


@pytest.mark.parametrize(
    ("text", "env", "expected"),
    [
        pytest.param("bots: [\n", {}, "line 2: YAML syntax error", id="yaml-syntax"),
        pytest.param(
            VALID + "colour: red\n", {}, "colour: unknown key ({cfg} line 9)", id="unknown-key"
        ),
        pytest.param(
            VALID + "http: {port: many}\n",
            {},
            "http.port: Input should be a valid integer",
            id="wrong-type",
        ),
        pytest.param(
            VALID + "  - {id: loja, token: '999:ABCDEFGHIJKLMNOPQRSTUVWXYZ', funnel: main}\n",
            {},
            "bots[1].id: duplicate bot id (also bots[0]) ({cfg} line 9)",
            id="duplicate-id",
        ),
        pytest.param(
            VALID + f"  - {{id: other, token: '{TOKEN}', funnel: main}}\n",
            {},
            "bots[1].token: same token as bots[0] ({cfg} line 9)",
            id="duplicate-token",
        ),
        pytest.param(
            VALID.replace(f'"{TOKEN}"', "${LOJA_TOKEN}"),
            {},
            "bots[0].token: environment variable LOJA_TOKEN is not set and has no default "
            "({cfg} line 7)",
            id="unset-env",
        ),
    ],
)
def test_bad_input_exits_2_with_one_clear_line(
    tmp_path: Path, text: str, env: dict[str, str], expected: str
) -> None:
    cfg = write(tmp_path, text)
    result = botfleet("check-config", "-c", cfg, env=env)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert expected.format(cfg=cfg) in lines[0]
    assert "Traceback" not in result.stderr
    assert "ABCDEFGHIJ" not in result.stderr + result.stdout  # tokens are never echoed


def test_env_interpolation_satisfies_the_config(tmp_path: Path) -> None:
    cfg = write(tmp_path, VALID.replace(f'"{TOKEN}"', "${LOJA_TOKEN}"))
    result = botfleet("check-config", "-c", cfg, env={"LOJA_TOKEN": TOKEN})
    assert result.returncode == 0, result.stderr


def test_config_schema_is_json() -> None:
    result = botfleet("config", "schema")
    assert result.returncode == 0, result.stderr
    schema = json.loads(result.stdout)
    assert schema["properties"]["bots"]["type"] == "array"


def test_db_upgrade_current_downgrade(tmp_path: Path, empty_database_url: str) -> None:
    cfg = write(tmp_path, "database:\n  url: ${DB_URL}\nbots: this section is not read\n")
    env = {"DB_URL": empty_database_url}
    upgraded = botfleet("db", "upgrade", "-c", cfg, env=env)
    assert upgraded.returncode == 0, upgraded.stderr
    assert "database at 0005" in upgraded.stdout
    current = botfleet("db", "current", "-c", cfg, env=env)
    assert "database at 0005; code head 0005 (up to date)" in current.stdout
    down = botfleet("db", "downgrade", "base", "-c", cfg, env=env)
    assert down.returncode == 0, down.stderr
    assert "database at base" in down.stdout


def test_db_without_url_is_a_config_error(tmp_path: Path) -> None:
    result = botfleet("db", "current", "-c", write(tmp_path, "database: {}\n"))
    assert result.returncode == 2
    assert "database.url: not set" in result.stderr


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP port that accepts connections and never says a word."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    listener.close()


def test_database_that_does_not_answer_fails_clearly_within_5_s(
    tmp_path: Path, silent_server: int
) -> None:
    cfg = write(
        tmp_path, f"database:\n  url: postgresql://bf:hunter2@127.0.0.1:{silent_server}/x\n"
    )
    started = time.monotonic()
    result = botfleet("db", "upgrade", "-c", cfg)
    elapsed = time.monotonic() - started
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"error: PostgreSQL at postgresql+asyncpg://bf:***@127.0.0.1:{silent_server}/x "
        "did not answer within 5 s"
    ]
    assert "hunter2" not in result.stderr
    # 5 s of waiting plus interpreter start-up; a hang would hit the 60 s subprocess timeout.
    assert elapsed < 10


def test_database_refusing_connections_fails_at_once(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port that nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    cfg = write(tmp_path, f"database:\n  url: postgresql://bf@127.0.0.1:{port}/x\n")
    result = botfleet("db", "current", "-c", cfg)
    assert result.returncode == 1
    assert (
        f"PostgreSQL at postgresql+asyncpg://bf@127.0.0.1:{port}/x is unreachable" in result.stderr
    )
    assert "Traceback" not in result.stderr
