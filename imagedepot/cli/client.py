"""The CLI's HTTP client: what every command that talks to a running server shares, the
`--server`/`--token`/`--ca-bundle` options (`connection_options`), an authenticated client
(`Api`), and turning an error answer of any dialect, or a connection that fails, into a
one-line message that says what to do. Kept apart from the offline commands, which never
touch the network."""

from __future__ import annotations

import functools
import socket
import ssl
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import click
import httpx

DEFAULT_SERVER = "http://127.0.0.1:8080"
TLS_PROBE_SECONDS = 3.0
Result = TypeVar("Result")


@dataclass(frozen=True)
class Connection:
    """Where the server is and how to talk to it, as the options gave it."""

    server: str
    token: str | None
    ca_bundle: str | None = None
    project: str | None = None
    """Sent as X-Project-Id: the admin token must name the project it acts in."""


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
ca_bundle_option = click.option(
    "--ca-bundle",
    envvar="IMAGEDEPOT_CA_BUNDLE",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="PEM file of the CA certificates to trust for an https:// server, such as a "
    "self-signed server certificate (or IMAGEDEPOT_CA_BUNDLE).",
)


project_option = click.option(
    "--project",
    "project",
    envvar="IMAGEDEPOT_PROJECT",
    default=None,
    help="Project name or id to act in, for the admin token (or IMAGEDEPOT_PROJECT); "
    "a project's own credential needs none.",
)


def connection_options(command: Callable[..., Result]) -> Callable[..., Result]:
    """Add --server, --token, --ca-bundle and --project to a command, which receives them as
    one `connection` keyword argument."""

    @functools.wraps(command)
    def with_connection(
        *args: Any,
        server: str,
        token: str | None,
        ca_bundle: str | None,
        project: str | None,
        **kwargs: Any,
    ) -> Result:
        connection = Connection(server, token, ca_bundle, project)
        return command(*args, connection=connection, **kwargs)

    return server_option(token_option(ca_bundle_option(project_option(with_connection))))


def tls_verification(ca_bundle: str | None) -> ssl.SSLContext | bool:
    """What httpx's `verify=` gets: the system's CAs, or those of the bundle alone."""
    if ca_bundle is None:
        return True
    try:
        return ssl.create_default_context(cafile=ca_bundle)
    except (OSError, ssl.SSLError) as error:
        raise click.ClickException(
            f"cannot read the CA bundle {ca_bundle}: {error} (it must hold PEM certificates)"
        ) from None


def api_client(connection: Connection, timeout: float) -> httpx.Client:
    if not connection.token:
        raise click.UsageError("a token is needed: --token or IMAGEDEPOT_TOKEN")
    headers = {"X-Auth-Token": connection.token}
    if connection.project:
        headers["X-Project-Id"] = connection.project
    return httpx.Client(
        base_url=connection.server,
        headers=headers,
        timeout=timeout,
        verify=tls_verification(connection.ca_bundle),
    )


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


def speaks_tls(host: str, port: int) -> bool:
    """Whether a TLS handshake with host:port succeeds (the certificate is not checked: this
    only tells which protocol the port speaks)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with (
            socket.create_connection((host, port), timeout=TLS_PROBE_SECONDS) as raw,
            context.wrap_socket(raw, server_hostname=host),
        ):
            return True
    except OSError:
        return False


def unreachable_message(server: str, error: httpx.HTTPError) -> str:
    """What to tell the user when no answer came. A TLS port hangs up on a plain HTTP request
    without a word (httpx: "Server disconnected"), so an http:// URL that fails that way is
    probed with a handshake, and a port that speaks TLS is named as such."""
    url = httpx.URL(server)
    if (
        url.scheme == "http"
        and isinstance(error, httpx.RemoteProtocolError | httpx.ReadError | httpx.WriteError)
        and speaks_tls(url.host, url.port or 80)
    ):
        https = str(url.copy_with(scheme="https", port=url.port or 80)).rstrip("/")
        return (
            f"the server at {server} speaks HTTPS; use {https} "
            "(and --ca-bundle FILE when its certificate is not signed by a CA this machine trusts)"
        )
    reason = str(error) or type(error).__name__
    if isinstance(error, httpx.ConnectError) and "CERTIFICATE_VERIFY_FAILED" in reason:
        return (
            f"cannot reach the server: {reason} (give the CA that signed the server's "
            "certificate with --ca-bundle FILE or IMAGEDEPOT_CA_BUNDLE)"
        )
    return f"cannot reach the server: {reason}"


@contextmanager
def reaching_server(server: str) -> Iterator[None]:
    """A connection that fails (refused, reset, timed out, wrong protocol) becomes a
    one-line message."""
    try:
        yield
    except httpx.HTTPError as error:
        raise click.ClickException(unreachable_message(server, error)) from None


class Api:
    """JSON calls to a running server; any answer but the expected ones is a ClickException."""

    def __init__(self, connection: Connection, timeout: float = 30) -> None:
        self._server = connection.server
        self._client = api_client(connection, timeout=timeout)

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        ok: tuple[int, ...] = (200,),
        params: dict[str, str] | None = None,
    ) -> Any:
        with reaching_server(self._server):
            response = self._client.request(method, path, json=body, params=params)
        return checked(response, ok)
