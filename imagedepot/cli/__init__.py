"""The `imagedepot` command: the click group `main`, the server (`serve`, `worker`), and the
registration of the other commands, which live in submodules by kind: `admin` (offline, on a
data dir), `caches` and `images` (API calls to a running server, through `client`).

`main` is the console script (`imagedepot = imagedepot.cli:main`); `python -m imagedepot.cli`
runs it through `__main__.py`."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import click

from imagedepot import bootstrap
from imagedepot.cli import admin, supervisor, upstreams
from imagedepot.cli.caches import caches
from imagedepot.cli.common import data_dir_option, settings_for
from imagedepot.cli.images import images

QUIET_UNLESS_VERBOSE = ("alembic", "httpx", "httpcore", "botocore", "boto3", "s3transfer")
"""Libraries whose INFO lines (a migration step, every HTTP request the CLI makes) are noise
on a command's stderr; `--verbose` shows them."""


@click.group()
@click.version_option(package_name="imagedepot", message="imagedepot %(version)s")
@click.option("-v", "--verbose", is_flag=True, help="Log debug messages, HTTP requests included.")
def main(verbose: bool) -> None:
    """imagedepot: image caches and VM images behind the cloud APIs you already script against."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for name in QUIET_UNLESS_VERBOSE:
        logging.getLogger(name).setLevel(logging.DEBUG if verbose else logging.WARNING)


@main.command()
@click.option("--host", default=None, help="Listen address (default 127.0.0.1).")
@click.option("--port", type=int, default=None, help="API port (default 8080).")
@click.option("--registry-port", type=int, default=None, help="OCI registry port (default 5050).")
@data_dir_option
@click.option(
    "--no-worker", is_flag=True, help="Serve the APIs only; run `imagedepot worker` apart."
)
@click.option(
    "--processes",
    type=int,
    default=None,
    help="API processes sharing the ports, plus a worker process (or IMAGEDEPOT_API_PROCESSES; "
    "default 1: everything in one process).",
)
@click.option(
    "--tls-cert",
    type=click.Path(dir_okay=False),
    default=None,
    help="PEM certificate: serve both ports over HTTPS (or IMAGEDEPOT_TLS_CERT).",
)
@click.option(
    "--tls-key",
    type=click.Path(dir_okay=False),
    default=None,
    help="PEM private key of --tls-cert (or IMAGEDEPOT_TLS_KEY).",
)
def serve(
    host: str | None,
    port: int | None,
    registry_port: int | None,
    data_dir: str | None,
    no_worker: bool,
    processes: int | None,
    tls_cert: str | None,
    tls_key: str | None,
) -> None:
    """Run the API port, the OCI registry port and the build worker: in one process, or with
    --processes N in N API processes and a worker process under a supervisor."""
    settings = settings_for(
        data_dir,
        host=host,
        port=port,
        registry_port=registry_port,
        run_worker=False if no_worker else None,
        api_processes=processes,
        tls_cert=Path(tls_cert) if tls_cert else None,
        tls_key=Path(tls_key) if tls_key else None,
    )
    if (settings.tls_cert is None) != (settings.tls_key is None):
        raise click.UsageError("--tls-cert and --tls-key go together")
    if settings.api_processes > 1:
        supervisor.supervise(settings)
    else:
        asyncio.run(bootstrap.serve(settings))


@main.command()
@data_dir_option
def worker(data_dir: str | None) -> None:
    """Run only the build worker (for a deployment with several processes)."""
    asyncio.run(bootstrap.serve(settings_for(data_dir), with_api=False))


for command in (*admin.COMMANDS, *upstreams.COMMANDS, caches, images):
    main.add_command(command)

__all__ = ["main"]
