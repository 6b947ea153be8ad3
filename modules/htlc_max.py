"""The max-HTLC a channel advertises (htlc_maximum_msat): pure, no clock.

Senders plan routes from gossip. A channel that advertises more than it can forward makes
them try amounts that fail here (4103) and cost them a retry; one that advertises far less
than it can forward is passed over by the larger payments it could have carried. So the
advertised maximum follows the spendable balance, read in coarse bands so that a balance
moving with every forward does not move the maximum with it:

* bands: the channel's largest possible maximum P (capacity less the reserve, what
  lightningd accepts and advertises by default) halved, P, P/2, P/4 ... P/64: a
  power-of-two share of the channel. Halving keeps the bands few (seven) whatever the
  channel's size, and the advertised maximum within a factor two of what the channel can
  forward. The spendable balance is always below P (the reserve, the commitment fee), so
  a managed channel advertises P/2 at most: no single forward above half the channel.
  Below P/64 (1.6 % of the channel) a channel is empty for most payments; it keeps P/64
  there, so the small ones still come and their refusals stay evidence of its demand for
  the fee controller;
* down: the moment the advertised maximum is above the spendable balance, its target is
  the band at or below the spendable (never more than the channel can forward);
* up: only to the band at or below three quarters of the spendable: a raise keeps a
  quarter of headroom, so the balance must fall by a quarter before it comes down again
  (hysteresis: noise around a band's edge moves nothing);
* never below the channel's htlc minimum (nor 0), never above P.

A change rides along with a fee broadcast whenever one goes out. On its own it is worth a
broadcast (`urgent`) only when the advertised maximum is at least twice what the channel
can forward (a band or more: the payments in between would fail), or at most a quarter of
the band it could advertise (two bands: the larger payments go elsewhere).
"""
import dataclasses
from typing import Optional

BANDS = 7                  # P, P/2, ..., P/64
RAISE_SHARE = (3, 4)       # a raise goes to the band at or below 3/4 of the spendable
URGENT_OVER = 2            # alone worth a broadcast: advertised >= 2 x spendable ...
URGENT_UNDER = 4           # ... or the band it could have >= 4 x advertised


@dataclasses.dataclass(frozen=True)
class HtlcMaxPlan:
    current_msat: int
    target_msat: int       # equal to current: leave it
    urgent: bool           # worth a gossip broadcast of its own
    reason: str

    @property
    def changes(self) -> bool:
        return self.target_msat != self.current_msat


def band_floor_msat(amount_msat: int, top_msat: int) -> int:
    """The largest band (top >> k, k < BANDS) at or below amount; the smallest band when
    amount is below it."""
    for k in range(BANDS):
        level = top_msat >> k
        if level <= amount_msat:
            return level
    return top_msat >> (BANDS - 1)


def _sats(msat: int) -> str:
    return f"{msat // 1000:,} sat"


def plan_htlc_max(spendable_msat: int, possible_max_msat: int, htlc_min_msat: int,
                  current_msat: int) -> HtlcMaxPlan:
    """Where the advertised maximum should be, from the spendable balance (lightningd's
    spendable_msat), the largest maximum the channel takes, its htlc minimum and the
    maximum it advertises now."""
    top = max(possible_max_msat, 1)
    low = max(htlc_min_msat, 1)

    def clamp(x: int) -> int:
        return min(top, max(low, x))

    spendable = max(spendable_msat, 0)
    if current_msat > top:
        return HtlcMaxPlan(current_msat, clamp(band_floor_msat(spendable, top)), True,
                           f"{_sats(current_msat)} advertised, above the channel's largest "
                           f"{_sats(top)}: lowered")
    if current_msat > spendable:
        target = clamp(band_floor_msat(spendable, top))
        if target < current_msat:
            urgent = current_msat >= URGENT_OVER * spendable
            return HtlcMaxPlan(current_msat, target, urgent,
                               f"{_sats(current_msat)} advertised but {_sats(spendable)} spendable: "
                               f"lowered to the band {_sats(target)}"
                               + (" (a band or more over: worth a broadcast)" if urgent else ""))
        return HtlcMaxPlan(current_msat, current_msat, False,
                           f"{_sats(current_msat)} advertised, {_sats(spendable)} spendable: at the "
                           f"smallest band already")
    headroom = spendable * RAISE_SHARE[0] // RAISE_SHARE[1]
    level = band_floor_msat(headroom, top)
    # never raised above what it can forward (below the smallest band: only up to the minimum)
    up = clamp(level) if level <= headroom else min(top, max(low, current_msat))
    if up > current_msat:
        urgent = up >= URGENT_UNDER * current_msat
        return HtlcMaxPlan(current_msat, up, urgent,
                           f"{_sats(current_msat)} advertised, {_sats(spendable)} spendable: raised "
                           f"to the band {_sats(up)}"
                           + (" (two bands or more under: worth a broadcast)" if urgent else ""))
    return HtlcMaxPlan(current_msat, current_msat, False,
                       f"{_sats(current_msat)} advertised, {_sats(spendable)} spendable: within its band")


def plan_for_channel(channel) -> Optional[HtlcMaxPlan]:
    """plan_htlc_max from a modules.models.Channel; None when the node did not say what it
    advertises or what it accepts (nothing is changed then)."""
    if channel.htlc_maximum_msat is None or not channel.htlc_max_possible_msat:
        return None
    return plan_htlc_max(channel.spendable_msat, channel.htlc_max_possible_msat,
                         channel.htlc_minimum_msat, channel.htlc_maximum_msat)
