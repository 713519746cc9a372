"""Run Alembic from code on an async engine, so `apotheca migrate` needs no alembic.ini."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy.ext.asyncio import create_async_engine

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


def alembic_config(connection: Any = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    return config


async def _run(url: str, action: str, *args: Any, **kwargs: Any) -> None:
    engine = create_async_engine(url)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(
                lambda sync_conn: getattr(command, action)(
                    alembic_config(sync_conn), *args, **kwargs
                )
            )
    finally:
        await engine.dispose()


async def upgrade(url: str, revision: str = "head") -> None:
    await _run(url, "upgrade", revision)


async def autogenerate(url: str, message: str) -> None:
    """Developers: write a new revision from the difference between models and database."""
    await _run(url, "revision", message=message, autogenerate=True)
