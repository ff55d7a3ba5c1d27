"""What is charged, decided here from the configuration alone (never from a button).

A plan's price plus the order bumps the user accepted, a downsell's price
(fixed, or a percentage off what the user was charged, rounded to the cent),
an upsell's price. Unknown ids are ``None``: a button the configuration does not
know (stale after a reload, or forged) charges nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from fleet.config_funnel import Deliver, FunnelConfig, Plan


@dataclass(frozen=True, slots=True)
class Offer:
    """A priced offer: what the PIX is for (``ref`` is stored on the payment)."""

    ref: str  # "plan:mensal+ebook", "downsell:d1", "upsell:u1"
    title: str
    amount_cents: int


def plan_offer(funnel: FunnelConfig, plan_id: str, bumps: Iterable[str] = ()) -> Offer | None:
    plan = funnel.plan(plan_id)
    if plan is None:
        return None
    taken = _bumps(plan, bumps)
    if taken is None:
        return None
    amount = plan.price + sum(bump.price for bump in plan.order_bumps if bump.id in taken)
    suffix = "".join(f"+{bump.id}" for bump in plan.order_bumps if bump.id in taken)
    return Offer(f"plan:{plan.id}{suffix}", plan.button, amount)


def downsell_offer(
    funnel: FunnelConfig, downsell_id: str, base_cents: int, plan_id: str | None = None
) -> Offer | None:
    """``base_cents``: what the user's pending charge was for, ``plan_id``: the plan it was
    for (both from the database); the downsell delivers that plan."""
    downsell = next((d for d in funnel.downsells if d.id == downsell_id), None)
    if downsell is None or (plan_id is not None and funnel.plan(plan_id) is None):
        return None
    if downsell.price is not None:
        amount = downsell.price
    else:
        assert downsell.discount_percent is not None  # one of the two (config check)
        amount = discounted(base_cents, downsell.discount_percent)
    ref = f"downsell:{downsell.id}" + (f">{plan_id}" if plan_id else "")
    return Offer(ref, downsell.button, amount)


def upsell_offer(funnel: FunnelConfig, upsell_id: str) -> Offer | None:
    upsell = next((u for u in funnel.upsells if u.id == upsell_id), None)
    if upsell is None:
        return None
    return Offer(f"upsell:{upsell.id}", upsell.button, upsell.price)


def plan_of(offer_ref: str) -> str | None:
    """The plan an offer delivers: ``plan:mensal+ebook`` and ``downsell:d1>mensal`` ->
    ``mensal``; an upsell delivers its own."""
    kind, _, rest = offer_ref.partition(":")
    if kind == "plan":
        return rest.split("+", 1)[0] or None
    if kind == "downsell" and ">" in rest:
        return rest.rsplit(">", 1)[1] or None
    return None


def deliverable(funnel: FunnelConfig, offer_ref: str) -> Deliver | None:
    """What a paid offer gives the buyer, from the configuration."""
    kind, _, rest = offer_ref.partition(":")
    if kind == "upsell":
        upsell = next((u for u in funnel.upsells if u.id == rest), None)
        return upsell.deliver if upsell is not None else None
    plan_id = plan_of(offer_ref)
    plan = funnel.plan(plan_id) if plan_id is not None else None
    return plan.deliver if plan is not None else None


def discounted(cents: int, percent: int) -> int:
    """``percent`` off, rounded half up to the cent, never below one cent."""
    if not 0 < percent < 100:
        raise ValueError("a discount is between 1 and 99 percent")
    return max(1, (cents * (100 - percent) + 50) // 100)


def _bumps(plan: Plan, bumps: Iterable[str]) -> set[str] | None:
    taken = set(bumps)
    known = {bump.id for bump in plan.order_bumps}
    return taken if taken <= known else None
