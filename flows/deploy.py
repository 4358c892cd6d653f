"""Serve the rebuild flow as a scheduled deployment of a Prefect server (`colorfeat schedule`)."""

from __future__ import annotations

from typing import Any

from colorfeat.errors import UserError

DEPLOYMENT = "weekly-rebuild"
WEEKLY = "0 3 * * 1"  # Mondays 03:00, as in flows/prefect.yaml


def require_server() -> str:
    """The configured Prefect API URL; a UserError when there is none (serving needs a server)."""
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    if not url:
        raise UserError(
            "scheduling needs a Prefect server: start one with `prefect server start` and "
            "set PREFECT_API_URL=http://127.0.0.1:4200/api (see docs/operations.md)"
        )
    return url


def check_cron(cron: str, timezone: str | None = None) -> None:
    """A UserError unless `cron` is a valid cron expression."""
    from prefect.client.schemas.schedules import CronSchedule

    try:
        CronSchedule(cron=cron, timezone=timezone)
    except ValueError as exc:
        raise UserError(f"--cron {cron!r} is not a valid cron expression") from exc


def schedule_command(
    cron: str,
    options: dict[str, Any],
    name: str = DEPLOYMENT,
    timezone: str | None = None,
    retention: dict[str, Any] | None = None,
) -> None:
    """`colorfeat schedule`: check the options and the cron expression, then serve the rebuild."""
    from flows.local import checked_config

    config = checked_config(options)
    serve_rebuild(cron, config.to_options(), name=name, timezone=timezone, retention=retention)


def serve_rebuild(
    cron: str,
    options: dict[str, Any],
    name: str = DEPLOYMENT,
    timezone: str | None = None,
    retention: dict[str, Any] | None = None,
) -> None:
    """Register `rebuild/<name>` with the cron schedule and run its flow runs until interrupted.

    `options` (the `colorfeat run` options by name) become the deployment's `config` parameter.
    """
    check_cron(cron, timezone)
    require_server()
    from prefect.schedules import Cron

    from flows.pipeline import rebuild

    rebuild.serve(
        name=name,
        schedules=[Cron(cron, timezone=timezone)],
        parameters={"config": options, **_retention(retention)},
        description="Weekly incremental rebuild of the colorfeat feature store.",
        tags=["colorfeat"],
        pause_on_shutdown=False,
    )


def _retention(retention: dict[str, Any] | None) -> dict[str, Any]:
    """The flow's retention parameters that were given (`keep_last`, `keep_days`)."""
    return {k: v for k, v in (retention or {}).items() if v is not None}
