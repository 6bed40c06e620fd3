"""`imagedepot caches …`: image caches on a running server, through its CCE v5 API.

Unlike the admin commands these never open the data dir; they are API calls made with a
token, so they live apart from them. The `cli` package adds this group to `main`."""

from __future__ import annotations

import json
import time
from typing import Any

import click

from imagedepot.cli.client import Api, server_option, token_option

TERMINAL = {"Available", "Failed", "Unavailable"}


@click.group()
def caches() -> None:
    """Image caches on a running server (the CCE v5 API)."""


@caches.command("create")
@server_option
@token_option
@click.argument("name")
@click.option("--image", "images", multiple=True, required=True, help="Image reference (repeat).")
@click.option("--size", type=int, default=20, show_default=True, help="Size budget in GiB.")
@click.option("--retention-days", type=int, default=0, show_default=True)
@click.option("--pull-secret", "pull_secrets", multiple=True, help="namespace:name (repeat).")
@click.option("--wait", is_flag=True, help="Wait for Available or Failed, showing progress.")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="With --wait: give up after this many seconds (exit 1; the build goes on).",
)
def caches_create(
    server: str,
    token: str | None,
    name: str,
    images: tuple[str, ...],
    size: int,
    retention_days: int,
    pull_secrets: tuple[str, ...],
    wait: bool,
    timeout: float | None,
) -> None:
    """Create the cache NAME of the given images."""
    api = Api(server, token)
    body = {
        "name": name,
        "images": list(images),
        "image_cache_size": size,
        "retention_days": retention_days,
        "building_config": {"image_pull_secrets": list(pull_secrets)},
    }
    cache = api.call("POST", "/v5/imagecaches", body, ok=(201,))["image_cache"]
    click.echo(f"{cache['id']} {cache['name']} {cache['status']}")
    if wait:
        _wait_built(api, cache["id"], timeout)


@caches.command("list")
@server_option
@token_option
@click.option("--name", default=None, help="Exact name.")
@click.option("--json", "as_json", is_flag=True)
def caches_list(server: str, token: str | None, name: str | None, as_json: bool) -> None:
    """List the project's caches."""
    path = "/v5/imagecaches" + (f"?name={name}" if name else "")
    items = Api(server, token).call("GET", path)["image_caches"]
    if as_json:
        click.echo(json.dumps(items, indent=2))
        return
    for item in items:
        click.echo(
            f"{item['id']}  {item['name']:<30} {item['status']:<10} {len(item['images'])} images"
        )


@caches.command("get")
@server_option
@token_option
@click.argument("cache_id")
def caches_get(server: str, token: str | None, cache_id: str) -> None:
    """Show one cache, with per-image digests and sizes."""
    api = Api(server, token)
    cache = api.call("GET", f"/v5/imagecaches/{cache_id}")["image_cache"]
    cache["progress"] = api.call("GET", f"/v5/imagecaches/{cache_id}/progress")["images"]
    click.echo(json.dumps(cache, indent=2))


@caches.command("delete")
@server_option
@token_option
@click.argument("cache_id")
@click.option("--wait", is_flag=True, help="Wait until the cache is gone.")
def caches_delete(server: str, token: str | None, cache_id: str, wait: bool) -> None:
    """Delete a cache (its blobs are released once no other cache uses them)."""
    api = Api(server, token)
    cache = api.call("DELETE", f"/v5/imagecaches/{cache_id}", ok=(202,))["image_cache"]
    click.echo(f"{cache['id']} {cache['status']}")
    while wait:
        try:
            api.call("GET", f"/v5/imagecaches/{cache_id}")
        except click.ClickException as error:
            if str(error.message).startswith("404"):
                click.echo(f"{cache_id} deleted")
                return
            raise
        time.sleep(0.5)


def _wait_built(api: Api, cache_id: str, timeout: float | None) -> None:
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    deadline = None if timeout is None else time.monotonic() + timeout
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        transient=False,
    ) as bars:
        tasks: dict[str, Any] = {}
        while True:
            state = api.call("GET", f"/v5/imagecaches/{cache_id}/progress")
            for image in state["images"]:
                total = image["size_bytes"] or None
                if image["image"] not in tasks:
                    tasks[image["image"]] = bars.add_task(image["image"], total=total)
                bars.update(tasks[image["image"]], completed=image["pulled_bytes"], total=total)
            if state["status"] in TERMINAL:
                break
            if deadline is not None and time.monotonic() >= deadline:
                raise click.ClickException(
                    f"cache {cache_id} is still {state['status']} after {timeout:g} s "
                    f"(the build goes on; see: imagedepot caches get {cache_id})"
                )
            time.sleep(0.5)
    if state["status"] != "Available":
        raise click.ClickException(f"cache {cache_id} is {state['status']}: {state['message']}")
    click.echo(f"{cache_id} Available")
