"""`imagedepot images …`: VM images on a running server, through its Glance v2 API.

Kept in its own module so the image commands can grow without crowding the rest; the `cli`
package adds this group to `main`. Uploads stream the file from disk with a progress bar;
nothing is read whole.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from imagedepot.cli.client import (
    Api,
    Connection,
    api_client,
    checked,
    connection_options,
    reaching_server,
)
from imagedepot.cli.output import echo_json, echo_table, human_bytes, json_option

CHUNK = 1 << 20
FORMATS_BY_SUFFIX = {
    ".qcow2": "qcow2",
    ".img": "raw",
    ".raw": "raw",
    ".vmdk": "vmdk",
    ".vhd": "vhd",
    ".vhdx": "vhdx",
    ".vdi": "vdi",
    ".iso": "iso",
}


@click.group()
def images() -> None:
    """VM images and snapshots on a running server (the Glance v2 API)."""


@images.command("snapshot")
@connection_options
@click.option(
    "--from",
    "source",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    required=True,
    help="The disk image file to upload.",
)
@click.option("--name", required=True, help="The snapshot's name.")
@click.option("--disk-format", default=None, help="qcow2, raw, vmdk, … (default: from the suffix).")
@click.option("--container-format", default="bare", show_default=True)
@click.option("--instance-uuid", default=None, help="The server the snapshot was taken from.")
@json_option
def snapshot(
    connection: Connection,
    source: Path,
    name: str,
    disk_format: str | None,
    container_format: str,
    instance_uuid: str | None,
    as_json: bool,
) -> None:
    """Upload a disk file as a snapshot (`image_type=snapshot`), showing progress."""
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

    disk_format = disk_format or FORMATS_BY_SUFFIX.get(source.suffix.lower(), "raw")
    body: dict[str, Any] = {
        "name": name,
        "disk_format": disk_format,
        "container_format": container_format,
        "image_type": "snapshot",
    }
    if instance_uuid:
        body["instance_uuid"] = instance_uuid
    size = source.stat().st_size
    with api_client(connection, timeout=300) as client, reaching_server(connection.server):
        image = checked(client.post("/v2/images", json=body), (201,))
        # The bar goes to stderr, so stdout stays the one line scripts read.
        bars_console = Console(stderr=True)
        columns = (BarColumn(), DownloadColumn(), TransferSpeedColumn())
        with Progress(*columns, console=bars_console) as bars:
            task = bars.add_task(name, total=size)

            def chunks() -> Iterator[bytes]:
                with source.open("rb") as handle:
                    while chunk := handle.read(CHUNK):
                        bars.advance(task, len(chunk))
                        yield chunk

            response = client.put(
                f"/v2/images/{image['id']}/file",
                content=chunks(),
                headers={
                    "Content-Type": "application/octet-stream",
                    "X-OpenStack-Image-Size": str(size),
                },
            )
        checked(response, (204,))
        shown = checked(client.get(f"/v2/images/{image['id']}"), (200,))
    if as_json:
        echo_json(shown)
        return
    click.echo(f"{shown['id']} {shown['name']} {shown['status']} {shown['size']} bytes")


@images.command("list")
@connection_options
@click.option(
    "--type", "image_type", type=click.Choice(["snapshot", "image", "all"]), default="all"
)
@json_option
def list_images(connection: Connection, image_type: str, as_json: bool) -> None:
    """List the project's images (every page)."""
    found: list[dict[str, Any]] = []
    api = Api(connection, timeout=300)
    url: str | None = f"/v2/images?type={image_type}&sort_key=name&sort_dir=asc&limit=200"
    while url:
        page = api.call("GET", url)
        found += page["images"]
        url = page.get("next")
    if as_json:
        echo_json(found)
        return
    echo_table(
        ("ID", "NAME", "STATUS", "TYPE", "DISK FORMAT", "VISIBILITY", "SIZE"),
        [
            (
                item["id"],
                item["name"],
                item["status"],
                item.get("image_type", "image"),
                item["disk_format"],
                item["visibility"],
                human_bytes(item["size"]),
            )
            for item in found
        ],
    )


@images.command("delete")
@connection_options
@click.argument("image_id")
def delete_image(connection: Connection, image_id: str) -> None:
    """Delete an image (its bytes are released once no other image or cache uses them)."""
    Api(connection, timeout=300).call("DELETE", f"/v2/images/{image_id}", ok=(204,))
    click.echo(f"{image_id} deleted")
