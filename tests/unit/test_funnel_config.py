"""The funnel section: prices in cents from text, offers that reference each other, texts
with known placeholders only, per-bot overrides; each problem named by its path."""

from __future__ import annotations

import pytest

from fleet.config_file import ConfigError, parse_config

TOKEN_A = "111111:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
TOKEN_B = "222222:BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB"

FUNNEL = """\
payments: {url_secret: funnel-url-secret-0123}
gateways:
  - {id: pp, kind: pushinpay, access_token: tok}
  - {id: demo, kind: sandbox}
funnels:
  curso:
    gateway: demo
    welcome:
      text: "Olá {first_name}!"
      media: {type: video, url: "https://example.com/v.mp4"}
      audio: {file_id: AwACAgEAAx}
    fallback: {text: Use /start}
    plans:
      - id: mensal
        button: Plano Mensal
        price: "19.90"
        description: Acesso por 30 dias
        deliver: {link: "https://t.me/+abc"}
        order_bumps:
          - {id: ebook, text: Leve também o e-book, price: "9.90"}
      - id: vip
        button: VIP
        price: "49,9"
        deliver: {vip_chat_id: -100123, days: 30}
    url_buttons: [{text: Suporte, url: "https://t.me/suporte"}]
    downsells:
      - {id: d1, after: 10m, text: "Última chance, {first_name}", discount_percent: 30}
      - {id: d2, after: 1h, text: Só hoje, price: "9.90"}
    upsells:
      - {id: u1, after_plan: mensal, after: 1h, text: Mais, price: "29.90", deliver: {link: "https://t.me/+up"}}
    messages: {pix: "Pague {amount}: <code>{pix_code}</code>"}
    owner_chat_ids: [123456]
bots:
  - id: a
    token: "TOKEN_A"
    funnel: curso
  - id: b
    token: "TOKEN_B"
    funnel: curso
    overrides: {welcome: {text: "Oi {first_name}, bot B"}, messages: {paid: "Pronto: {link}"}}
""".replace("TOKEN_A", TOKEN_A).replace("TOKEN_B", TOKEN_B)


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "f.yaml", {})
    return [str(p) for p in info.value.problems]


def test_a_whole_funnel_loads_in_cents_with_durations_and_overrides() -> None:
    config = parse_config(FUNNEL, "f.yaml", {})
    funnel = config.funnels["curso"]
    mensal, vip = funnel.plans
    assert (mensal.price, mensal.order_bumps[0].price, vip.price) == (1990, 990, 4990)
    assert vip.deliver.vip_chat_id == -100123 and vip.deliver.days == 30
    assert [d.after for d in funnel.downsells] == [600, 3600]
    assert funnel.downsells[1].price == 990 and funnel.upsells[0].price == 2990
    assert funnel.messages.pending.startswith("Ainda")  # defaults where not given
    b = config.funnel_for(config.bot("b"))
    assert b.welcome.text == "Oi {first_name}, bot B"
    assert b.welcome.media == funnel.welcome.media  # merged, not replaced
    assert b.messages.paid == "Pronto: {link}" and b.messages.pix == funnel.messages.pix
    assert config.funnel_for(config.bot("a")) is funnel


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        pytest.param(
            ('price: "19.90"', "price: 19.90"), "funnels.curso.plans[0].price: Value error,"
            ' write prices as text, e.g. "19.90" (a float loses cents)', id="float-price",
        ),
        pytest.param(
            ('price: "19.90"', 'price: "0"'), "funnels.curso.plans[0].price: Value error, a price"
            " must be above zero", id="zero-price",
        ),
        pytest.param(
            ('price: "19.90"', 'price: "dez"'), "funnels.curso.plans[0].price", id="not-a-price",
        ),
        pytest.param(
            ("discount_percent: 30", "discount_percent: 96"),
            "funnels.curso.downsells[0].discount_percent: Input should be less than or equal to 95",
            id="discount-range",
        ),
        pytest.param(
            ("after_plan: mensal", "after_plan: anual"),
            "funnels.curso: Value error, upsell 'u1': unknown plan 'anual' (known: mensal, vip)",
            id="unknown-plan",
        ),
        pytest.param(
            ('text: "Olá {first_name}!"', 'text: "Olá {nome}!"'),
            "funnels.curso.welcome.text: Value error, unknown placeholder {nome}",
            id="unknown-placeholder",
        ),
        pytest.param(
            ("{vip_chat_id: -100123, days: 30}", "{vip_chat_id: -100123}"),
            "funnels.curso.plans[1].deliver: Value error, vip_chat_id needs days",
            id="vip-without-days",
        ),
        pytest.param(
            ("after: 10m", "after: soon"), "funnels.curso.downsells[0].after: Value error, a"
            ' duration like "30s"', id="bad-duration",
        ),
        pytest.param(
            ("gateway: demo", "gateway: mp"), "funnels.curso.gateway: unknown gateway 'mp'",
            id="unknown-gateway",
        ),
        pytest.param(
            ('price: "9.90"}', 'price: "0.30"}'), "funnels.curso.plans[0].order_bumps[0].price:"
            " below pushinpay's minimum of 50 cents", id="gateway-minimum",
        ),
        pytest.param(
            ('{text: "Oi {first_name}, bot B"}', '{text: "Oi {name}"}'),
            "bots[1].overrides.welcome.text: Value error, unknown placeholder {name}",
            id="override-placeholder",
        ),
    ],
)  # fmt: skip
def test_each_problem_names_its_path(change: tuple[str, str], expected: str) -> None:
    text = FUNNEL.replace(*change, 1)
    if change[0] == 'price: "9.90"}':
        text = text.replace("gateway: demo", "gateway: pp", 1)
    found = problems(text)
    assert any(expected in problem for problem in found), found


def test_a_funnel_that_sells_needs_a_gateway() -> None:
    text = FUNNEL.replace("    gateway: demo\n", "", 1)
    assert any("needs a gateway" in p for p in problems(text))
