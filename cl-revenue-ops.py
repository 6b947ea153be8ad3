#!/usr/bin/env python3
"""cl-revenue-ops: a Core Lightning plugin that runs a routing node's economics.

This file is the shell: it registers options, RPC methods and subscriptions with
lightningd and hands every call to the Service. It holds no logic of its own.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.realpath(__file__)))

import threading  # noqa: E402

from pyln.client import Plugin, RpcException  # noqa: E402

from modules.errors import UserError  # noqa: E402
from modules.config import ConfigError, build_config, manifest_options  # noqa: E402
from modules.database import DatabaseRefused  # noqa: E402
from modules.node import NodeAdapter  # noqa: E402
from modules.service import Service  # noqa: E402

plugin = Plugin()
plugin.service = None

for option in manifest_options():
    plugin.add_option(option["name"], option["default"], option["description"],
                      opt_type=option["opt_type"])


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
    log(f"cl-revenue-ops started (dry_run={config.dry_run}, db={config.db_path})")
    return None


@plugin.async_method("revenue-status")
def revenue_status(plugin, request):
    """Health: loops, database, hydration, sling, budget, channels."""
    answer_in_background(request, plugin.service.status)


def answer_in_background(request, work) -> None:
    """Long work runs off the dispatch thread, so lightningd's other calls are not held up."""
    def run():
        try:
            request.set_result(work())
        except UserError as e:
            request.set_exception(RpcException(e.message, e.code))
        except Exception as e:  # report, never crash the plugin
            request.set_exception(RpcException(f"{type(e).__name__}: {e}"))
        finally:
            plugin.service.release_thread()
    threading.Thread(target=run, name="rpc", daemon=True).start()


@plugin.async_method("revenue-analyze")
def revenue_analyze(plugin, request):
    """Run the flow analysis now and return every channel's flow."""
    def work():
        plugin.service.run_loop_now("flow")
        return plugin.service.flow_report()
    answer_in_background(request, work)


@plugin.async_method("revenue-fees")
def revenue_fees(plugin, request, scid=None):
    """Every channel's fee (or one's): the last decision with its reasons, flow state, controller state."""
    answer_in_background(request, lambda: plugin.service.fee_report(scid))


@plugin.async_method("revenue-adjust-fees")
def revenue_adjust_fees(plugin, request):
    """Run the fee controller now and return its decisions (dry-run decides without setting)."""
    def work():
        cycle = plugin.service.run_loop_now("fee")
        return {"cycle": cycle, "decisions": plugin.service.fees.last_decisions}
    answer_in_background(request, work)


@plugin.async_method("revenue-rebalance")
def revenue_rebalance(plugin, request, scid=None, amount_sats=None, force=False):
    """Without scid: run a rebalance pass now. With scid: evaluate it and start a job if it pays
    (force skips the expected-value rule, never the budget, the reserve or the futility breaker)."""
    def work():
        if not isinstance(force, bool):
            raise UserError(f"force must be true or false, got {force!r}")
        if scid is None and amount_sats is not None:
            raise UserError("amount_sats needs a scid: the amount is for one channel")
        if scid is None and force:
            raise UserError("force needs a scid: it skips the expected-value rule for one channel only")
        plugin.service.require_running()
        return plugin.service.rebalance(scid, amount_sats, force)
    answer_in_background(request, work)


@plugin.subscribe("forward_event")
def on_forward_event(plugin, forward_event, **kwargs):
    if plugin.service is not None:
        plugin.service.on_forward_event(forward_event)


@plugin.subscribe("shutdown")
def on_shutdown(plugin, **kwargs):
    if plugin.service is not None:
        plugin.service.stop()
    log("cl-revenue-ops stopped")
    sys.exit(0)


if __name__ == "__main__":
    plugin.run()
