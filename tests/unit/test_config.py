"""config.yaml: interpolation, validation, and errors that name file, line and path."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from fleet.config import DatabaseConfig, FleetConfig
from fleet.config_file import ConfigError, load_config, load_section, parse_config

ROOT = Path(__file__).resolve().parents[2]
TOKEN_A = "111111:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
TOKEN_B = "222222:BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB"

BASE = f"""\
funnels:
  main:
    welcome: {{text: Olá}}
    fallback: {{text: Use /start}}
bots:
  - id: a
    token: "{TOKEN_A}"
    funnel: main
  - id: b
    token: "{TOKEN_B}"
    funnel: main
"""


def problems(text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "test.yaml", env or {})
    return [str(p) for p in info.value.problems]


def test_sample_config_is_valid() -> None:
    config = load_config(ROOT / "config.yaml", env={})
    assert len(config.bots) >= 3
    assert {bot.funnel for bot in config.bots} <= set(config.funnels)
    assert config.database.url is None  # unset: the demo starts embedded servers
    assert isinstance(config.http.port, int)
    assert config.instance.id  # defaulted from hostname-pid


def test_interpolation_types_defaults_and_escapes() -> None:
    text = BASE + (
        "http:\n"
        "  port: ${PORT:-8081}\n"
        "  host: '${HOST}'\n"
        "database:\n"
        "  url: postgresql://u:${PW}@db/x\n"
        "redis:\n"
        "  key_prefix: literal$${x}\n"
    )
    with pytest.raises(ConfigError) as info:  # "$${" is a literal "${", "}" not allowed here
        parse_config(text, "t.yaml", {"HOST": "0.0.0.0", "PW": "s3cret"})
    assert [p.path for p in info.value.problems] == ["redis.key_prefix"]

    config = parse_config(
        text.replace("literal$${x}", "fleet-${ENVNAME:-dev}"),
        "t.yaml",
        {"HOST": "0.0.0.0", "PW": "s3cret"},
    )
    assert config.http.port == 8081
    assert config.http.host == "0.0.0.0"
    assert config.database.url is not None
    assert config.database.url.get_secret_value() == "postgresql://u:s3cret@db/x"
    assert config.redis.key_prefix == "fleet-dev"


def test_unset_variable_without_default_names_path_and_line() -> None:
    text = BASE + "database:\n  url: ${DB_URL}\n"
    assert problems(text) == [
        "database.url: environment variable DB_URL is not set and has no default "
        "(test.yaml line 13)"
    ]


def test_unknown_key_wrong_type_and_missing_field() -> None:
    text = BASE.replace(
        "    funnel: main\n  - id: b", "    funnel: main\n    colour: red\n  - id: b"
    )
    text = text.replace("  - id: b\n", "  - enabled: maybe\n")
    found = problems(text + "http:\n  port: eighty\n")
    assert "bots[0].colour: unknown key (test.yaml line 9)" in found
    assert "bots[1].id: field required (test.yaml line 10)" in found
    assert any(p.startswith("bots[1].enabled: Input should be a valid boolean") for p in found)
    assert any(p.startswith("http.port: Input should be a valid integer") for p in found)
    assert all("(test.yaml line " in p for p in found)


def test_duplicate_bot_id_and_token_never_print_the_token() -> None:
    text = BASE.replace("id: b", "id: a").replace(TOKEN_B, TOKEN_A)
    found = problems(text)
    assert found == [
        "bots[1].id: duplicate bot id (also bots[0]) (test.yaml line 9)",
        "bots[1].token: same token as bots[0] (test.yaml line 10)",
    ]
    assert not any("AAAA" in p for p in found)


def test_bad_token_shape_does_not_echo_the_value() -> None:
    found = problems(BASE.replace(TOKEN_B, "not-a-token-but-a-secret"))
    assert len(found) == 1 and found[0].startswith("bots[1].token: Value error, not a bot token")
    assert "secret" not in found[0].split(",", 1)[1].replace("<digits>:<secret>", "")


def test_unknown_funnel() -> None:
    found = problems(BASE.replace("funnel: main\n  - id: b", "funnel: nope\n  - id: b"))
    assert found == ["bots[0].funnel: unknown funnel 'nope' (known: main) (test.yaml line 8)"]


def test_yaml_syntax_error_and_duplicate_yaml_key() -> None:
    assert problems("bots: [\n  - x\n") == [
        "test.yaml line 2: YAML syntax error: while parsing a flow node expected the node "
        "content, but found '-'"
    ]
    assert problems(BASE + "http:\n  port: 1\n  port: 2\n") == [
        "http.port: duplicate key (first at line 13) (test.yaml line 14)"
    ]
    assert problems("- just\n- a list\n") == [
        "test.yaml line 1: the top level must be a mapping of sections"
    ]


def test_webhook_mode_needs_public_url_and_secret() -> None:
    found = problems(BASE + "telegram:\n  mode: webhook\n  webhook_secret: short\n")
    assert len(found) == 1
    assert found[0].startswith("telegram.webhook_secret: Value error, must be 16-256")
    # Cross-field checks run once every field is valid on its own.
    assert problems(BASE + "telegram:\n  mode: webhook\n") == [
        "http.public_url: required when telegram.mode is webhook (test.yaml line 1)",
        "telegram.webhook_secret: required when telegram.mode is webhook (test.yaml line 12)",
    ]

    config = parse_config(
        BASE + "http: {public_url: 'https://bots.example.com'}\n"
        "telegram: {mode: webhook, webhook_secret: '${WH}'}\n",
        "t.yaml",
        {"WH": "x" * 32},
    )
    assert config.telegram.mode == "webhook"


def test_section_loading_ignores_other_sections(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("database:\n  url: ${DB:-postgresql://h/db}\nbots: [{id: x}]\nzzz: ${UNSET}\n")
    config = load_section(path, "database", DatabaseConfig, env={})
    assert config.url is not None and config.url.get_secret_value() == "postgresql://h/db"
    path.write_text("database:\n  pool_size: -1\nbots: [{id: x}]\n")
    with pytest.raises(ConfigError) as info:
        load_section(path, "database", DatabaseConfig, env={})
    assert [p.path for p in info.value.problems] == ["database.pool_size"]


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the file: No such file or directory"):
        load_config(tmp_path / "missing.yaml")


def test_json_schema_lists_every_section() -> None:
    schema = FleetConfig.model_json_schema()
    assert set(schema["properties"]) == {
        "instance",
        "redis",
        "database",
        "http",
        "telegram",
        "runtime",
        "leases",
        "payments",
        "gateways",
        "funnels",
        "bots",
    }


@pytest.mark.parametrize(
    ("leases", "needle"),
    [
        ({"ttl": 10, "renew_deadline": 10}, "renew_deadline must be below ttl"),
        ({"renew_deadline": 2, "retry_period": 2}, "exceed 1.2 x retry_period"),
    ],
)
def test_lease_timings_keep_their_ratios(leases: dict[str, float], needle: str) -> None:
    with pytest.raises(ValidationError, match=needle):
        FleetConfig.model_validate({"leases": leases})
