import os

from rlsd._record import record


def ingest(cfg, *, manuals, tickets):
    if os.environ.get("RLSD_STUB_FAIL") == "ingest":
        raise RuntimeError("planted ingest failure")
    os.makedirs(cfg.store.root, exist_ok=True)
    record("ingest", manuals=manuals, tickets=tickets, store_root=cfg.store.root, perimeter=cfg.platform.perimeter)
    return {"snapshot_id": "snap-0001", "new_verified_tickets": len(tickets), "untrained_verified_tickets": len(tickets)}
