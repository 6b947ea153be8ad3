"""Sling job lifecycle: start-up hygiene (spec feature 15) and, later, the jobs we run."""
import dataclasses
from typing import Callable, Optional

from modules.node import NodeAdapter, NodeError

Log = Callable[[str, str], None]


@dataclasses.dataclass
class HygieneResult:
    sling_loaded: bool
    orphans_found: int = 0
    orphans_deleted: int = 0
    error: Optional[str] = None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def cleanup_orphans(node: NodeAdapter, sling_loaded: bool, log: Log) -> HygieneResult:
    """Deletes every sling job left from an earlier run, so no old job spends behind our back."""
    if not sling_loaded:
        log("sling plugin not loaded: rebalancing is disabled (fees and flow analysis carry on)", "warn")
        return HygieneResult(sling_loaded=False)
    result = HygieneResult(sling_loaded=True)
    try:
        jobs = node.sling_jobs()
        result.orphans_found = len(jobs)
        for scid in jobs:
            try:
                node.sling_delete_job(scid)
                result.orphans_deleted += 1
            except NodeError as e:
                result.error = str(e)
                log(f"Startup Hygiene: could not delete sling job {scid}: {e}", "warn")
    except NodeError as e:
        result.error = str(e)
        log(f"Startup Hygiene: could not list sling jobs: {e}", "warn")
    log(f"Startup Hygiene: Terminated {result.orphans_deleted} orphan sling jobs.", "info")
    return result
