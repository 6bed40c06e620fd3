"""What the CLI's commands that work on a data dir share: the `--data-dir` and `--config`
options, the settings they lead to, and `opened_core`, the one way such a command opens the
core, so that a domain error becomes a one-line message and the core is always closed. A
module of its own so that `cli/__init__.py` and the submodules can all import it without an
import cycle."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import click

from imagedepot import bootstrap, config
from imagedepot.domain.errors import DomainError

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


@contextmanager
def opened_core(data_dir: str | None) -> Iterator[bootstrap.Core]:
    """The core over `data_dir`, closed when the block ends however it ends. A DomainError,
    while opening or inside the block, becomes a `click.ClickException` with its message."""
    try:
        core = bootstrap.open_core(settings_for(data_dir))
    except DomainError as error:
        raise click.ClickException(error.message) from None
    try:
        yield core
    except DomainError as error:
        raise click.ClickException(error.message) from None
    finally:
        core.close()
