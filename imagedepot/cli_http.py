"""What every CLI command that talks to a running server shares: the `--server`/`--token`
options, an authenticated HTTP client, and turning an error answer of any dialect into a
one-line message."""

from __future__ import annotations

from typing import Any

import click
import httpx

DEFAULT_SERVER = "http://127.0.0.1:8080"

server_option = click.option(
    "--server",
    envvar="IMAGEDEPOT_SERVER",
    default=DEFAULT_SERVER,
    show_default=True,
    help="API URL (or IMAGEDEPOT_SERVER).",
)
token_option = click.option(
    "--token", envvar="IMAGEDEPOT_TOKEN", default=None, help="Token (or IMAGEDEPOT_TOKEN)."
)


def api_client(server: str, token: str | None, timeout: float) -> httpx.Client:
    if not token:
        raise click.UsageError("a token is needed: --token or IMAGEDEPOT_TOKEN")
    return httpx.Client(base_url=server, headers={"X-Auth-Token": token}, timeout=timeout)


def error_message(response: httpx.Response) -> str:
    """The message of a CCE (`error_msg`) or Glance (`error.message`) error body, else the text."""
    try:
        body = response.json()
    except ValueError:
        return response.text
    if isinstance(body, dict):
        error = body.get("error")
        for message in (
            body.get("error_msg"),
            error.get("message") if isinstance(error, dict) else None,
        ):
            if isinstance(message, str):
                return message
    return response.text


def checked(response: httpx.Response, ok: tuple[int, ...]) -> Any:
    """The JSON of an expected answer (None when empty); a ClickException for any other."""
    if response.status_code not in ok:
        raise click.ClickException(f"{response.status_code}: {error_message(response)}")
    return response.json() if response.content else None
