"""Which instance should own which bot: weighted rendezvous (HRW) hashing.

Every instance scores every bot with a hash of the pair and the bot goes to the
highest score. Nothing is stored or coordinated: any instance that knows the
membership computes the same answer, so leases only have to confirm it.

Why HRW rather than ``hash(bot) % N`` or a ring:

- minimal movement. When an instance joins, the only bots that move are those
  whose top score is now the newcomer's, about 1/N of them (N counted after the
  join), and they all move to the newcomer. When one leaves or crashes, only
  its own bots move, spread over the survivors by their next-best score. Modulo
  hashing would reshuffle nearly everything; a ring needs virtual nodes to
  spread a leaver's load evenly.
- capacity weights. With the logarithmic score ``-weight / ln(u)`` an instance
  wins a bot with probability ``weight / sum(weights)``, so a machine with
  twice the capacity gets twice the bots, and changing one weight moves only
  bots to or from that instance.

Pure functions, stdlib only: the supervisor, the leases and the simulation in
``bench/leases_sim.py`` all import this without side effects.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping

_TWO_64 = float(2**64)


def _unit(bot_id: str, instance_id: str) -> float:
    """A uniform value in (0, 1) from a stable 64-bit hash of the pair.

    blake2b rather than ``hash()``: ``hash()`` of a str is salted per process,
    and every instance must agree on the score. The NUL separator keeps
    ("ab", "c") and ("a", "bc") apart.
    """
    digest = hashlib.blake2b(f"{bot_id}\x00{instance_id}".encode(), digest_size=8).digest()
    h = int.from_bytes(digest, "big")
    # +0.5 keeps u strictly inside (0, 1): ln(0) and ln(1) = 0 would blow up the score.
    return (h + 0.5) / _TWO_64


def hrw_score(bot_id: str, instance_id: str, weight: float = 1.0) -> float:
    """Weighted rendezvous score of ``instance_id`` for ``bot_id`` (higher wins).

    ``-weight / ln(u)`` is positive for ``u`` in (0, 1) and makes the chance of
    winning proportional to ``weight``.
    """
    return -weight / math.log(_unit(bot_id, instance_id))


def desired_owner(bot_id: str, instances: Mapping[str, float]) -> str | None:
    """The instance that should own ``bot_id``, or None if none is eligible.

    ``instances`` maps instance id to capacity weight; a weight <= 0 means the
    instance takes no bots (draining, or configured off). Equal scores go to the
    smallest instance id, so the answer never depends on the mapping's order.
    """
    best: str | None = None
    best_score = 0.0
    for instance_id, weight in instances.items():
        # "not weight > 0" also rejects NaN, which would poison every comparison.
        if not weight > 0:
            continue
        score = hrw_score(bot_id, instance_id, weight)
        if best is None or score > best_score or (score == best_score and instance_id < best):
            best, best_score = instance_id, score
    return best


def assign(bot_ids: Iterable[str], instances: Mapping[str, float]) -> dict[str, str | None]:
    """``desired_owner`` for each bot, keyed by bot id."""
    return {bot_id: desired_owner(bot_id, instances) for bot_id in bot_ids}
