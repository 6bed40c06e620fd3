"""The CLI's HTTP client: what every command that talks to a running server shares, the
`--server`/`--token` options, an authenticated client (`Api`), and turning an error answer of
any dialect into a one-line message. Kept apart from the offline commands, which never touch
the network."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
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


@contextmanager
def reaching_server() -> Iterator[None]:
    """A connection that fails (refused, reset, timed out) becomes a one-line message."""
    try:
        yield
    except httpx.HTTPError as error:
        raise click.ClickException(f"cannot reach the server: {error}") from None


class Api:
    """JSON calls to a running server; any answer but the expected ones is a ClickException."""

    def __init__(self, server: str, token: str | None, timeout: float = 30) -> None:
        self._client = api_client(server, token, timeout=timeout)

    def call(self, method: str, path: str, body: Any = None, ok: tuple[int, ...] = (200,)) -> Any:
        with reaching_server():
            response = self._client.request(method, path, json=body)
        return checked(response, ok)
