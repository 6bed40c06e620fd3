"""What the CLI's commands that work on a data dir share: the `--data-dir` option, the settings
it leads to, and `opened_core`, the one way such a command opens the core, so that a domain
error becomes a one-line message and the core is always closed. A module of its own so that
`cli/__init__.py` and the submodules can all import it without an import cycle."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click

from imagedepot import bootstrap, config
from imagedepot.domain.errors import DomainError

data_dir_option = click.option(
    "--data-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Data directory (default ./data or IMAGEDEPOT_DATA_DIR).",
)


def settings_for(data_dir: str | None, **overrides: Any) -> config.Settings:
    """The settings from the environment, with `data_dir` and `overrides` given precedence."""
    return config.from_env(data_dir=data_dir, **overrides)


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
