"""The fee cycle: read, decide (pure, modules/fee_controller.py), apply, record.

Every decision is stored with its reasons, applied or not. A controller state is saved
only once its decision took effect: after setchannel succeeded for a "set" (in dry-run
a "set" is recorded but its state is not, so the same move is proposed again rather
than believed), always for the other actions.

What the network charges into each peer (gossip, modules.network_prior) is read before the
decisions and kept in memory: each peer's at most every 6 h, at most 50 reads a cycle, the
cycle's reads stopped at the first failure (logged once): a cycle never waits on gossip for
long, and never fails for it.
"""
import dataclasses
import json
from typing import Any, Dict, Iterable, List, Mapping, Optional

from modules.balance_trend import net_forward_by_hour
from modules.evidence import HOUR_SECONDS, build_evidence, fee_changes_to_record
from modules.fee_controller import (A_SET, A_SET_HTLC_MAX, FeeDecision, FeeInputs, FeeState,
                                    decide_all_fees, prune_state)
from modules import network_prior
from modules.models import Channel, ChannelFlow
from modules.network_prior import NetworkSummary
from modules.node import NodeAdapter, NodeError
from modules.policy import PeerPolicy
from modules.rebalance_decisions import DemandOutlook

ACTIONS = ("set", "hold", "skip_gossip", "skip_inactive", "skip_policy", "set_htlc_max", "set_failed")
BROADCASTS = (A_SET, A_SET_HTLC_MAX)
MANAGED_STATES = ("CHANNELD_NORMAL", "CHANNELD_AWAITING_SPLICE")


class FeeCycle:
    def __init__(self, node: NodeAdapter, db, config, log):
        self.node = node
        self.db = db
        self.config = config
        self.log = log
        self.states: Dict[str, FeeState] = {
            scid: FeeState.from_dict(json.loads(text)) for scid, text in db.load_fee_states().items()}
        self.last_result: Optional[Dict[str, Any]] = None
        self.last_decisions: List[Dict[str, Any]] = []
        # the last decision of every channel: its demand curve and prices, for the rebalancer
        self.outlooks: Dict[str, FeeDecision] = {}
        # peer id -> what other nodes charge into it (gossip), kept between cycles
        self.network: Dict[str, NetworkSummary] = {}

    def run(self, channels: List[Channel], flows: Dict[str, ChannelFlow], plugins: Iterable[str],
            now: float, refills_available: bool = False,
            policies: Optional[Mapping[str, PeerPolicy]] = None) -> Dict[str, Any]:
        """policies: peer id -> its active policy."""
        self._read_network([c.peer_id for c in channels if c.state in MANAGED_STATES], now)
        inputs = self._inputs(channels, flows, now, refills_available, policies or {})
        decisions = decide_all_fees(inputs, self.states, self.config, now)
        self.outlooks = {d.short_channel_id: d for d in decisions}
        if "clboss" in plugins and not self.config.dry_run:
            self._unmanage_clboss(decisions, {c.short_channel_id: c.peer_id for c in channels}, now)
        counts = {action: 0 for action in ACTIONS}
        rows, saved, summary = [], {}, []
        for d in decisions:
            action, applied, error = self._apply(d)
            counts[action] += 1
            detail = d.to_dict()
            if error:
                detail["reasons"].append(error)
            rows.append((d.short_channel_id, action, d.old_fee_ppm, d.new_fee_ppm, applied, json.dumps(detail)))
            summary.append({"short_channel_id": d.short_channel_id, "action": action, "applied": applied,
                            "old_fee_ppm": d.old_fee_ppm, "new_fee_ppm": d.new_fee_ppm,
                            "target_fee_ppm": d.target_fee_ppm, "demand_price_ppm": d.demand_price_ppm,
                            "liquidity_price_ppm": d.liquidity_price_ppm, "scarce": d.scarce,
                            "htlc_max_msat": d.htlc_max_msat, "htlc_max_target_msat": d.htlc_max_target_msat,
                            "new_htlc_max_msat": d.new_htlc_max_msat,
                            "reasons": detail["reasons"]})
            if action != "set_failed" and not (d.action in BROADCASTS and not applied):
                saved[d.short_channel_id] = d.new_state
            elif d.new_state.balance_mark is not None:
                # not applied (dry-run, a failed setchannel): the fee move is not kept, the
                # balance seen is (an observation, not a move)
                before = self.states.get(d.short_channel_id) or FeeState(d.old_fee_ppm, fee_since=now)
                saved[d.short_channel_id] = dataclasses.replace(before, balance_mark=d.new_state.balance_mark)
        self.states.update(saved)
        set_fees = [(d.short_channel_id, d.new_fee_ppm) for d, row in zip(decisions, rows)
                    if row[4] and d.action == A_SET]
        if set_fees:
            self.db.record_fees(set_fees, now)
        removed = self._collect_garbage({c.short_channel_id for c in channels})
        self.db.save_fee_cycle({scid: json.dumps(s.to_dict()) for scid, s in saved.items()}, rows, now)
        self.last_result = {"at": now, "dry_run": self.config.dry_run, "channels": len(decisions),
                            "changed": counts["set"], "held": counts["hold"],
                            "skipped_gossip": counts["skip_gossip"],
                            "skipped_inactive": counts["skip_inactive"],
                            "skipped_policy": counts["skip_policy"],
                            "htlc_max_alone": counts["set_htlc_max"],
                            "htlc_max_changed": sum(1 for d, row in zip(decisions, rows)
                                                    if row[4] and d.new_htlc_max_msat is not None),
                            "failed": counts["set_failed"],
                            "states_pruned": removed}
        self.last_decisions = summary
        return self.last_result

    def demand_outlooks(self) -> Dict[str, DemandOutlook]:
        """What the last cycle learnt of each channel's demand, for valuing refills."""
        return {scid: DemandOutlook(d.curve, d.inflow_msat_per_hour, d.curve.arrivals > 0)
                for scid, d in self.outlooks.items() if d.curve is not None}

    def _inputs(self, channels: List[Channel], flows: Dict[str, ChannelFlow], now: float,
                refills_available: bool, policies: Mapping[str, PeerPolicy]) -> List[FeeInputs]:
        """Each managed channel with its evidence: the hourly rollups and the fees it had
        over the lookback (a fee found changed since the last cycle is recorded first)."""
        managed = [c for c in channels if c.state in MANAGED_STATES]
        since = now - self.config.demand_lookback_days * 86400
        history = self.db.fee_history_since(since)
        changed = fee_changes_to_record([(c.short_channel_id, c.fee_ppm) for c in managed], history)
        if changed:
            self.db.record_fees(changed, now)
            for scid, fee in changed:
                history.setdefault(scid, []).append((now, fee))
        rows = self.db.hourly_flow_since(since)
        costs = self.db.rebalance_cost_ppm()
        refilled = self.db.rebalance_totals()
        from_hour = int(since) // HOUR_SECONDS   # the rollups read cover this hour on, in full
        return [FeeInputs(channel=c, flow=flows.get(c.short_channel_id),
                          evidence=build_evidence(rows.get(c.short_channel_id, ()),
                                                  history.get(c.short_channel_id, ()), c.fee_ppm,
                                                  c.fee_base_msat, now, self.config.demand_lookback_days * 24,
                                                  self.config.demand_half_life_hours),
                          rebalance_cost_ppm=costs.get(c.short_channel_id),
                          refills_available=refills_available,
                          policy=policies.get(c.peer_id),
                          net_forward_by_hour=net_forward_by_hour(rows.get(c.short_channel_id, ())),
                          flows_from_hour=from_hour,
                          refilled_msat=refilled.get(c.short_channel_id, (0, 0))[0] or 0,
                          network=self.network.get(c.peer_id)) for c in managed]

    def _read_network(self, peer_ids: List[str], now: float) -> None:
        """Refresh the network summaries that are due (network_prior.peers_to_read); those of
        peers no longer managed are forgotten. A failed read stops this cycle's reads."""
        for gone in set(self.network) - set(peer_ids):
            del self.network[gone]
        due = network_prior.peers_to_read(peer_ids, self.network, now)
        if not due:
            return
        peer = None
        try:
            our_id = self.node.node_id()
            for peer in due:
                self.network[peer] = network_prior.summarize(self.node.network_fees_ppm(peer), our_id, now)
        except NodeError as e:
            missing = sum(p not in self.network for p in due)
            if peer is not None and peer not in self.network:
                # the peer that failed is read again after the peers never read (an empty,
                # already stale summary: no prior), so one peer that always fails does not
                # keep every peer after it from its first read
                self.network[peer] = NetworkSummary(0, None, now - network_prior.REFRESH_SECONDS)
            self.log(f"Network fees: reading gossip failed ({e}); {missing} "
                     f"peers without a network prior this cycle, retried next cycle", "warn")

    def _apply(self, d: FeeDecision):
        """(action recorded, applied to the node, error text or None)."""
        if d.action not in BROADCASTS:
            return d.action, False, None
        if self.config.dry_run:
            return d.action, False, "dry-run: not applied"
        htlc = "" if d.new_htlc_max_msat is None else f"max-HTLC {d.new_htlc_max_msat} msat"
        try:
            if d.action == A_SET:
                self.node.set_channel_fee(d.short_channel_id, d.new_fee_ppm, d.fee_base_msat, d.new_htlc_max_msat)
            else:
                self.node.set_channel_htlc_max(d.short_channel_id, d.new_htlc_max_msat)
        except NodeError as e:
            what = " ".join(x for x in (f"{d.new_fee_ppm} ppm" if d.action == A_SET else "", htlc) if x)
            self.log(f"setchannel {d.short_channel_id} {what} failed: {e}", "warn")
            return "set_failed", False, f"setchannel failed: {e.message}"
        if d.action == A_SET:
            self.log(f"Fee {d.short_channel_id}: {d.old_fee_ppm} -> {d.new_fee_ppm} ppm"
                     f"{', ' + htlc if htlc else ''} ({'; '.join(d.reasons[-3:])})", "info")
        else:
            self.log(f"Max-HTLC {d.short_channel_id}: {d.htlc_max_msat} -> {d.new_htlc_max_msat} msat "
                     f"({d.reasons[-1]})", "info")
        return d.action, True, None

    def _unmanage_clboss(self, decisions: List[FeeDecision], peer_of: Dict[str, str], now: float) -> None:
        """Before we first set a peer's fee, tell CLBOSS to leave that peer's fees alone."""
        done = self.db.clboss_unmanaged_peers()
        for peer in {peer_of[d.short_channel_id] for d in decisions if d.action == A_SET} - done:
            try:
                self.node.clboss_unmanage_fees(peer)
                self.db.mark_clboss_unmanaged(peer, now)
                self.log(f"CLBOSS: unmanaged lnfee for peer {peer}", "info")
            except NodeError as e:
                self.log(f"CLBOSS: clboss-unmanage {peer} lnfee failed: {e}", "warn")

    def _collect_garbage(self, listed_scids: set) -> int:
        """Spec feature 19: forget the state of channels no longer in listpeerchannels."""
        kept, removed = prune_state(self.states, listed_scids)
        if removed:
            gone = set(self.states) - set(kept)
            self.states = kept
            self.db.delete_fee_states(gone)
            self.db.delete_fee_history(gone)
        self.log(f"Fee controller GC: removed state of {removed} closed channels", "debug" if not removed else "info")
        return removed

    def report(self, scid: Optional[str], channels: List[Channel], flows: Dict[str, ChannelFlow],
               now: float) -> Dict[str, Any]:
        last = self.db.last_fee_decisions()
        rows = []
        for c in channels:
            if scid is not None and c.short_channel_id != scid:
                continue
            decision = last.get(c.short_channel_id)
            detail = json.loads(decision.pop("detail_json")) if decision else None
            state = self.states.get(c.short_channel_id)
            flow = flows.get(c.short_channel_id)
            network = self.network.get(c.peer_id)
            rows.append({
                "short_channel_id": c.short_channel_id, "peer_id": c.peer_id,
                "fee_ppm": c.fee_ppm, "fee_base_msat": c.fee_base_msat,
                "local_ratio": round(c.local_ratio, 3), "flow_state": flow.state if flow else None,
                "spendable_msat": c.spendable_msat, "htlc_maximum_msat": c.htlc_maximum_msat,
                "htlc_minimum_msat": c.htlc_minimum_msat,
                "last_decision": None if decision is None else dict(
                    decision, reasons=detail["reasons"], stages=detail["stages"],
                    target_fee_ppm=detail.get("target_fee_ppm"),
                    demand_price_ppm=detail.get("demand_price_ppm"),
                    liquidity_price_ppm=detail.get("liquidity_price_ppm"),
                    scarce=detail.get("scarce"),
                    htlc_max_target_msat=detail.get("htlc_max_target_msat"),
                    new_htlc_max_msat=detail.get("new_htlc_max_msat")),
                "controller_state": state.to_dict() if state else None,
                "network_prior": None if network is None else network.to_dict(now),
            })
        return {"dry_run": self.config.dry_run, "channels": rows, "last_cycle": self.last_result}
