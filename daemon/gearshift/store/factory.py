"""Open the journal the settings ask for: memory, SQLite (default) or PostgreSQL."""

from __future__ import annotations

from gearshift.errors import ConfigError
from gearshift.records import Journal
from gearshift.settings import JournalSettings
from gearshift.store.journal import MemoryJournal


async def open_journal(settings: JournalSettings) -> Journal:
    """The journal store named by ``settings.kind``, opened and migrated."""
    if settings.kind == "memory":
        return MemoryJournal()
    if settings.kind == "sqlite":
        from gearshift.store.sqlite import SqliteJournal  # noqa: PLC0415

        return await SqliteJournal.open(settings.path)
    if settings.dsn is not None and settings.dsn_file is not None:
        raise ConfigError(["journal: set dsn or dsn_file, not both"])
    try:
        dsn = settings.secret_dsn()
    except ValueError as exc:
        raise ConfigError([f"journal.dsn_file: {exc}"]) from exc
    if dsn is None:
        raise ConfigError(["journal: kind postgres needs dsn (GEARSHIFT_JOURNAL__DSN) or "
                           "dsn_file"])
    from gearshift.store.postgres import PostgresJournal  # noqa: PLC0415

    return await PostgresJournal.open(dsn.get_secret_value())
