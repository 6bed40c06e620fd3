"""`imagedepot caches …`: image caches on a running server, through its CCE v5 API.

Unlike the admin commands these never open the data dir; they are API calls made with a
token, so they live apart from them. The `cli` package adds this group to `main`."""

from __future__ import annotations

import re
import time
from typing import Any

import click

from imagedepot.cli.client import Api, Connection, connection_options
from imagedepot.cli.output import echo_json, echo_table, human_bytes, json_option

TERMINAL = {"Available", "Failed", "Unavailable"}
CACHE_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.I)
"""A cache id is a UUID; anything else a command is given is taken for a cache's name."""


@click.group()
def caches() -> None:
    """Image caches on a running server (the CCE v5 API)."""


@caches.command("create")
@connection_options
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
@json_option
def caches_create(
    connection: Connection,
    name: str,
    images: tuple[str, ...],
    size: int,
    retention_days: int,
    pull_secrets: tuple[str, ...],
    wait: bool,
    timeout: float | None,
    as_json: bool,
) -> None:
    """Create the cache NAME of the given images."""
    api = Api(connection)
    body = {
        "name": name,
        "images": list(images),
        "image_cache_size": size,
        "retention_days": retention_days,
        "building_config": {"image_pull_secrets": list(pull_secrets)},
    }
    cache = api.call("POST", "/v5/imagecaches", body, ok=(201,))["image_cache"]
    if not as_json:
        click.echo(f"{cache['id']} {cache['name']} {cache['status']}")
    if wait:
        _wait_built(api, cache["id"], timeout, quiet=as_json)
    if as_json:
        echo_json(_shown(api, cache["id"]) if wait else cache)


@caches.command("list")
@connection_options
@click.option("--name", default=None, help="Exact name.")
@json_option
def caches_list(connection: Connection, name: str | None, as_json: bool) -> None:
    """List the project's caches."""
    params = {"name": name} if name else None
    items = Api(connection).call("GET", "/v5/imagecaches", params=params)["image_caches"]
    if as_json:
        echo_json(items)
        return
    echo_table(
        ("ID", "NAME", "STATUS", "IMAGES", "SIZE", "CREATED"),
        [
            (
                item["id"],
                item["name"],
                item["status"],
                len(item["images"]),
                f"{item['image_cache_size']} GiB",
                item["created_at"],
            )
            for item in items
        ],
    )


@caches.command("get")
@connection_options
@click.argument("cache")
@json_option
def caches_get(connection: Connection, cache: str, as_json: bool) -> None:
    """Show the cache CACHE (an id, or the name of one of the project's caches), with
    per-image digests and sizes."""
    api = Api(connection)
    shown = _shown(api, cache_id_for(api, cache))
    if as_json:
        echo_json(shown)
        return
    secrets = shown["building_config"].get("image_pull_secrets") or []
    fields = [
        ("id", shown["id"]),
        ("name", shown["name"]),
        ("status", shown["status"]),
        ("message", shown.get("message")),
        ("created", shown["created_at"]),
        ("size budget", f"{shown['image_cache_size']} GiB"),
        ("retention", f"{shown['retention_days']} days" if shown["retention_days"] else "forever"),
        ("pull secrets", ", ".join(secrets) or None),
    ]
    width = max(len(label) for label, _ in fields) + 1
    for label, value in fields:
        if value is not None:
            click.echo(f"{label + ':':<{width}} {value}")
    click.echo()
    echo_table(
        ("IMAGE", "DIGEST", "SIZE", "PULLED"),
        [
            (
                image["image"],
                image["digest"],
                human_bytes(image["size_bytes"]),
                human_bytes(image["pulled_bytes"]),
            )
            for image in shown["progress"]
        ],
    )


@caches.command("delete")
@connection_options
@click.argument("cache_id")
@click.option("--wait", is_flag=True, help="Wait until the cache is gone.")
def caches_delete(connection: Connection, cache_id: str, wait: bool) -> None:
    """Delete a cache (its blobs are released once no other cache uses them)."""
    api = Api(connection)
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


def cache_id_for(api: Api, cache: str) -> str:
    """The id of CACHE: itself when it is a UUID, else that of the project's cache so named."""
    if CACHE_ID.match(cache):
        return cache
    found = api.call("GET", "/v5/imagecaches", params={"name": cache})["image_caches"]
    if not found:
        raise click.ClickException(f"no cache named {cache!r} in this project")
    if len(found) > 1:
        ids = ", ".join(item["id"] for item in found)
        raise click.ClickException(f"{len(found)} caches are named {cache!r}; give an id: {ids}")
    cache_id: str = found[0]["id"]
    return cache_id


def _shown(api: Api, cache_id: str) -> dict[str, Any]:
    """The cache's CCE detail with imagedepot's per-image `progress`."""
    cache: dict[str, Any] = api.call("GET", f"/v5/imagecaches/{cache_id}")["image_cache"]
    cache["progress"] = api.call("GET", f"/v5/imagecaches/{cache_id}/progress")["images"]
    return cache


def _wait_built(api: Api, cache_id: str, timeout: float | None, *, quiet: bool) -> None:
    """Show bytes pulled per image (on stderr, so stdout stays what scripts read) until the
    build ends; a ClickException unless it ends Available."""
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    deadline = None if timeout is None else time.monotonic() + timeout
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=Console(stderr=True),
        transient=False,
        disable=quiet,
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
    if not quiet:
        click.echo(f"{cache_id} Available")
