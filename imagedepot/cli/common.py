"""What the CLI's commands that work on a data dir share: the `--data-dir` and `--config`
options, the settings they lead to, `opened_core`, the one way such a command opens the core
(so that a domain error becomes a one-line message, the core is always closed, and a data dir
holding no store is refused rather than quietly made), and `audited`, which records what an
offline command changed in the audit log beside the API's calls. A module of its own so that
`cli/__init__.py` and the submodules can all import it without an import cycle."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click
from sqlalchemy.engine import make_url

from imagedepot import bootstrap, config
from imagedepot.api.errors import http_status
from imagedepot.domain.errors import DomainError
from imagedepot.ports import AuditEvent

log = logging.getLogger("imagedepot.cli")

OFFLINE_DONE = 200
"""The audit status of an offline change that went through. One that a domain error refused
gets the HTTP status the API gives that error (400, 403, 404, 409, …), so `status >= 400`
means refused in API and CLI rows alike."""

Command = TypeVar("Command", bound=Callable[..., Any])
_CONFIG_FILE = "imagedepot.config_file"


def _remember_config_file(context: click.Context, _: click.Parameter, value: str | None) -> None:
    if value is not None:
        context.meta[_CONFIG_FILE] = value


# Kept out of the commands' parameters (the context carries it to `settings_for`), so that
# every command with --data-dir takes --config without a change to its signature.
_config_option = click.option(
    "--config",
    type=click.Path(dir_okay=False),
    default=None,
    expose_value=False,
    callback=_remember_config_file,
    help="TOML settings file (or IMAGEDEPOT_CONFIG); variables and flags override it.",
)
_data_dir_option = click.option(
    "--data-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Data directory (default ./data or IMAGEDEPOT_DATA_DIR).",
)


def data_dir_option(command: Command) -> Command:
    """`--data-dir` and `--config`, the options every command that reads settings takes."""
    return _data_dir_option(_config_option(command))


def settings_for(data_dir: str | None, **overrides: Any) -> config.Settings:
    """The settings from the config file (`--config` or IMAGEDEPOT_CONFIG) and the environment,
    with `data_dir` and `overrides` given precedence. A bad setting is a one-line usage error."""
    context = click.get_current_context(silent=True)
    config_file = context.meta.get(_CONFIG_FILE) if context else None
    try:
        return config.from_env(config_file=config_file, data_dir=data_dir, **overrides)
    except config.ConfigError as error:
        raise click.ClickException(str(error)) from None


def missing_store(settings: config.Settings) -> str | None:
    """Why `settings` lead to no store yet, or None when they lead to one. An SQLite store is
    its database file; a server database (IMAGEDEPOT_DATABASE_URL=postgresql://…) is taken to
    exist, since the data dir on this machine may rightly hold nothing."""
    url = make_url(settings.resolved_database_url)
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    if Path(url.database).is_file():
        return None
    data_dir = settings.data_dir
    where = (
        f"in {data_dir}"
        if settings.database_url is None
        else f"at {url.database} (IMAGEDEPOT_DATABASE_URL)"
    )
    return (
        f"no imagedepot data {where} (start 'imagedepot serve --data-dir {data_dir}' or "
        f"'imagedepot credentials create --data-dir {data_dir} …' first)"
    )


def require_store(settings: config.Settings) -> None:
    """A ClickException, before anything is written, when `settings` lead to no store."""
    reason = missing_store(settings)
    if reason is not None:
        raise click.ClickException(reason)


@contextmanager
def opened_core(data_dir: str | None, *, initialise: bool = False) -> Iterator[bootstrap.Core]:
    """The core over `data_dir`, closed when the block ends however it ends. Unless
    `initialise`, a data dir holding no store is refused (a mistyped --data-dir must not
    report a healthy empty store). A DomainError, while opening or inside the block, becomes
    a `click.ClickException` with its message."""
    settings = settings_for(data_dir)
    if not initialise:
        require_store(settings)
    try:
        core = bootstrap.open_core(settings)
    except DomainError as error:
        raise click.ClickException(error.message) from None
    try:
        yield core
    except DomainError as error:
        raise click.ClickException(error.message) from None
    finally:
        core.close()


@dataclass
class Change:
    """What an offline command changes, for its audit row; the command fills in what it
    learns on the way (the new credential's id, the project it belongs to)."""

    target: str
    project_id: str | None = None


@contextmanager
def audited(
    core: bootstrap.Core, action: str, target: str, project_id: str | None = None
) -> Iterator[Change]:
    """Record the block as one audit event `action` (e.g. `cli:credential:create`): status
    OFFLINE_DONE when it ends, the error's HTTP status when a domain error refuses it. An
    offline command has no credential, no remote address and no request, so each event gets
    a fresh request id."""
    change = Change(target, project_id)
    try:
        yield change
    except DomainError as error:
        _record(core, action, change, http_status(error))
        raise
    _record(core, action, change, OFFLINE_DONE)


def _record(core: bootstrap.Core, action: str, change: Change, status: int) -> None:
    event = AuditEvent(
        at=core.clock.now(),
        credential_id=None,
        project_id=change.project_id,
        action=action,
        target=change.target,
        status=status,
        request_id=uuid.uuid4().hex,
        remote=None,
    )
    try:
        core.audit.record(event)
    except Exception:
        # As the API does: the change is made; a lost audit row must not undo or hide it.
        log.exception("could not record audit event for %s %s", action, change.target)
