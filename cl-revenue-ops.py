#!/usr/bin/env python3
"""cl-revenue-ops: a Core Lightning plugin that runs a routing node's economics.

This file is the shell: it registers options, RPC methods and subscriptions with
lightningd and hands every call to the Service. It holds no logic of its own.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.realpath(__file__)))

import sqlite3  # noqa: E402
import threading  # noqa: E402
import traceback  # noqa: E402

from pyln.client import Plugin  # noqa: E402
from pyln.client.plugin import Method, MethodType, RequestState  # noqa: E402

from modules.errors import BUSY, INTERNAL_ERROR, UserError  # noqa: E402
from modules.policy import check_action  # noqa: E402
from modules.rpc_params import (bool_param, check_binding, choice_param, peer_or_scid_param,  # noqa: E402
                                sats_param, scid_param, whole_param)
from modules import report  # noqa: E402
from modules.config import ConfigError, build_config, manifest_options  # noqa: E402
from modules.database import DatabaseRefused  # noqa: E402
from modules.db_file import DatabaseGone  # noqa: E402
from modules.node import NodeAdapter, NodeError  # noqa: E402
from modules.service import Service  # noqa: E402

# pyln parses each message with json.loads and does not catch its errors; Python >= 3.11
# (and its security backports) refuses an integer of more than 4300 digits, so one absurd
# number in a call's params would end the plugin. Parsed, it is refused by the param checks.
if hasattr(sys, "set_int_max_str_digits"):
    sys.set_int_max_str_digits(0)

plugin = Plugin()
plugin.service = None

for option in manifest_options():
    plugin.add_option(option["name"], option["default"], option["description"],
                      opt_type=option["opt_type"], dynamic=option["dynamic"])


def log(message: str, level: str = "info") -> None:
    plugin.log(message, level=level)


@plugin.init()
def init(options, configuration, plugin, **kwargs):
    lightning_dir = configuration["lightning-dir"]
    try:
        config = build_config(options, lightning_dir)
    except ConfigError as e:
        log(f"refusing to start: {e}", "warn")
        return {"disable": f"cl-revenue-ops: {e}"}
    metrics_class = None
    if config.metrics_port:
        try:   # only now: a node without metrics needs no prometheus-client
            from modules.metrics import MetricsServer
        except ImportError as e:
            reason = (f"revenue-ops-metrics-port is {config.metrics_port} but the Python package "
                      f"prometheus-client cannot be imported ({e}); install it "
                      f"(pip install -r requirements.txt) or set revenue-ops-metrics-port=0")
            log(f"refusing to start: {reason}", "warn")
            return {"disable": f"cl-revenue-ops: {reason}"}
        metrics_class = MetricsServer
    node = NodeAdapter(os.path.join(lightning_dir, configuration["rpc-file"]),
                       timeout_seconds=config.rpc_timeout_seconds)
    service = Service(config, node, log)
    try:
        service.open()
    except DatabaseRefused as e:  # not ours, or newer than this code: never run on it
        reason = f"refusing database {config.db_path}: {e}; nothing was written to it"
        log(f"refusing to start: {reason}", "warn")
        return {"disable": f"cl-revenue-ops: {reason}"}
    except Exception as e:  # an unusable database: say so and step aside, lightningd runs on
        log(f"refusing to start: cannot open database {config.db_path}: {e}", "warn")
        return {"disable": f"cl-revenue-ops: cannot open database {config.db_path}: {e}"}
    plugin.service = service
    service.start()
    if metrics_class is not None:
        service.metrics = metrics_class(service, config.metrics_port, log)
        service.metrics.start()
    log(f"cl-revenue-ops started (dry_run={config.dry_run}, db={config.db_path})")
    return None


# Every method also takes `*extra, **unknown`, so pyln's binding of params to the signature
# never fails (it would answer -32600 with a traceback): check_binding answers -32602 instead.
# The named parameters stay in the signature: pyln builds the usage lightningd shows from it.

@plugin.async_method("revenue-status")
def revenue_status(plugin, request, *extra, **unknown):
    """Health: loops, database, hydration, sling, budget, channels."""
    def work():
        check_binding("revenue-status", (), extra, unknown)
        return plugin.service.status()
    answer_in_background(request, work)


def answer_in_background(request, work) -> None:
    """Long work runs off the dispatch thread, so lightningd's other calls are not held up."""
    def run():
        try:
            request.set_result(work())
        except UserError as e:
            answer_error(request, e.code, e.message)
        except NodeError as e:   # the node failed us: say what it said, no bug of ours
            answer_error(request, BUSY, f"{request.method} could not finish: {e}")
        except (DatabaseGone, sqlite3.Error) as e:   # storage, not a bug: revenue-status says more
            answer_error(request, BUSY, f"{request.method} could not finish: the database: "
                                        f"{type(e).__name__}: {e}")
        except Exception:  # a bug of ours: the trace to the log, a plain error to the caller
            log(f"{request.method} failed on an unexpected error:\n{traceback.format_exc()}", "broken")
            answer_error(request, INTERNAL_ERROR,
                         f"{request.method} failed on an internal error; the plugin log has the details")
        finally:
            if plugin.service is not None:
                plugin.service.release_thread()
    threading.Thread(target=run, name="rpc", daemon=True).start()


def answer_error(request, code: int, message: str) -> None:
    """A JSON-RPC error of {code, message} only.

    pyln's Request.set_exception adds a "traceback" field to every error it sends (26.6.6,
    pinned); a refused request is no crash, so the error is written through the request's
    own writer here, and the request marked failed as set_exception would."""
    if request.state != RequestState.PENDING:
        return
    request._write_result({"jsonrpc": "2.0", "id": request.id,
                           "error": {"code": code, "message": message}})
    request.state = RequestState.FAILED
    request.termination_tb = f"answered with error {code}"


@plugin.async_method("revenue-analyze")
def revenue_analyze(plugin, request, *extra, **unknown):
    """Run the flow analysis now and return every channel's flow."""
    def work():
        check_binding("revenue-analyze", (), extra, unknown)
        plugin.service.run_loop_now("flow")
        return plugin.service.flow_report()
    answer_in_background(request, work)


@plugin.async_method("revenue-fees")
def revenue_fees(plugin, request, scid=None, *extra, **unknown):
    """Every channel's fee (or one's): the last decision with its reasons, flow state, controller state."""
    def work():
        check_binding("revenue-fees", ("scid",), extra, unknown)
        return plugin.service.fee_report(scid_param(scid))
    answer_in_background(request, work)


@plugin.async_method("revenue-adjust-fees")
def revenue_adjust_fees(plugin, request, *extra, **unknown):
    """Run the fee controller now and return its decisions (dry-run decides without setting)."""
    def work():
        check_binding("revenue-adjust-fees", (), extra, unknown)
        cycle = plugin.service.run_loop_now("fee")
        return {"cycle": cycle, "decisions": plugin.service.fees.last_decisions}
    answer_in_background(request, work)


@plugin.async_method("revenue-rebalance")
def revenue_rebalance(plugin, request, scid=None, amount_sats=None, force=None, *extra, **unknown):
    """Without scid: run a rebalance pass now. With scid: evaluate it and start a job if it pays
    (force skips the expected-value rule, never the budget, the reserve or the futility breaker)."""
    def work():
        check_binding("revenue-rebalance", ("scid", "amount_sats", "force"), extra, unknown)
        channel = scid_param(scid)
        amount = sats_param(amount_sats, "amount_sats", plugin.service.config.rebalance_max_amount_sats,
                            "revenue-ops-rebalance-max-amount-sats")
        forced = bool_param(force, "force", False)
        if channel is None and amount is not None:
            raise UserError("amount_sats needs a scid: the amount is for one channel")
        if channel is None and forced:
            raise UserError("force needs a scid: it skips the expected-value rule for one channel only")
        plugin.service.require_running()
        return plugin.service.rebalance(channel, amount, forced)
    answer_in_background(request, work)


@plugin.async_method("revenue-policy")
def revenue_policy(plugin, request, action=None, peer_id=None, strategy=None, fee_ppm=None, min_fee_ppm=None,
                   max_fee_ppm=None, rebalance=None, expires_hours=None, *extra, **unknown):
    """Per-peer policy: set <peer_id> [strategy] [fee_ppm] [min_fee_ppm] [max_fee_ppm] [rebalance]
    [expires_hours], get <peer_id>, list, delete <peer_id>."""
    def work():
        check_binding("revenue-policy", ("action", "peer_id", "strategy", "fee_ppm", "min_fee_ppm",
                                         "max_fee_ppm", "rebalance", "expires_hours"), extra, unknown)
        settings = {"strategy": strategy, "fee_ppm": fee_ppm, "min_fee_ppm": min_fee_ppm,
                    "max_fee_ppm": max_fee_ppm, "rebalance": rebalance, "expires_hours": expires_hours}
        verb = check_action(action, peer_id, settings)
        if verb == "set":
            return plugin.service.set_policy(peer_id, **settings)
        if verb == "get":
            return plugin.service.get_policy(peer_id)
        if verb == "delete":
            return plugin.service.delete_policy(peer_id)
        return plugin.service.list_policies()
    answer_in_background(request, work)


def set_config(plugin, request, config=None, val=None, **rest):
    """lightningd's `setconfig` of one of our dynamic options (it refuses the others itself).

    Checked as at start-up; a refused value is answered {code, message}, lightningd passes
    that on and keeps the old value. In place of pyln's own handler, which answers an
    exception from an option's on_change with a traceback and logs it: a refusal is no crash."""
    try:
        if plugin.service is None:
            raise UserError("cl-revenue-ops is not running", BUSY)
        plugin.service.set_option(config, val)
        plugin.options[config].value = val
        request.set_result(None)   # what pyln answers on success
    except UserError as e:
        answer_error(request, e.code, e.message)
    except Exception:  # a bug of ours: the trace to the log, a plain error to the caller
        log(f"setconfig {config} failed on an unexpected error:\n{traceback.format_exc()}", "broken")
        answer_error(request, INTERNAL_ERROR, "setconfig failed on an internal error; the plugin log has the details")


plugin.methods["setconfig"] = Method("setconfig", set_config, MethodType.RPCMETHOD)
plugin.methods["setconfig"].background = True   # answered by set_config itself


@plugin.async_method("revenue-report")
def revenue_report(plugin, request, days=None, id=None, view=None, count=None, *extra, **unknown):
    """Per channel, per peer and for the node over `days` (default 30, 0: the whole history):
    fees earned, volume, rebalance spend, net, earned vs rebalance ppm, unmet demand; sorted
    by net. id: one peer or one channel; view top/bottom: the `count` best or worst."""
    def work():
        check_binding("revenue-report", ("days", "id", "view", "count"), extra, unknown)
        window = whole_param(days, "days", 0, report.MAX_DAYS, report.DEFAULT_DAYS, "0: the whole history")
        target = peer_or_scid_param(id, "id")
        shown = choice_param(view, "view", report.VIEWS, "all")
        limit = whole_param(count, "count", 1, report.MAX_COUNT, None)
        if limit is not None and shown == "all":
            raise UserError("count needs view top or bottom: it says how many channels and peers they show")
        return plugin.service.revenue_report(window, target, shown, limit or report.DEFAULT_COUNT)
    answer_in_background(request, work)


@plugin.subscribe("forward_event")
def on_forward_event(plugin, forward_event=None, **kwargs):
    if plugin.service is None:
        return
    try:
        plugin.service.on_forward_event(forward_event)
    except Exception:  # a bug of ours: logged with its trace, the plugin lives on
        log(f"forward_event failed on an unexpected error:\n{traceback.format_exc()}", "broken")


@plugin.subscribe("shutdown")
def on_shutdown(plugin, **kwargs):
    if plugin.service is not None:
        plugin.service.stop()
    log("cl-revenue-ops stopped")
    sys.exit(0)


if __name__ == "__main__":
    plugin.run()
