"""Advisory lock keys shared by ingestion and the rollup."""

INGEST_NAMESPACE = 7_800_000_000  # apart from the rollup's own key (usage.rollups.ADVISORY_NAMESPACE)


def ingest_lock_key(company_id: int) -> int:
    """Ingestion holds this key shared until its insert commits; the rollup takes it exclusively for
    the instant it reads the newest heartbeat number handed out, so every number up to it belongs to a
    committed heartbeat or to none. Anything that inserts heartbeats beside a running rollup must hold it."""
    return INGEST_NAMESPACE + company_id
