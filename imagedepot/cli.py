"""The `imagedepot` command: the server, the offline admin commands that work on a data dir,
and API commands (`caches …`) that talk to a running server."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import time
from dataclasses import asdict
from datetime import timedelta
from pathlib import Path
from typing import Any

import click

from imagedepot import bootstrap, config
from imagedepot.cli_http import Api, server_option, token_option
from imagedepot.cli_images import images as images_group
from imagedepot.domain.errors import DomainError
from imagedepot.domain.identity import Role

TERMINAL = {"Available", "Failed", "Unavailable"}


def _settings(data_dir: str | None, **overrides: Any) -> config.Settings:
    return config.from_env(data_dir=data_dir, **overrides)


data_dir_option = click.option(
    "--data-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Data directory (default ./data or IMAGEDEPOT_DATA_DIR).",
)


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="Log debug messages.")
def main(verbose: bool) -> None:
    """imagedepot: image caches and VM images behind the cloud APIs you already script against."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("alembic").setLevel(logging.DEBUG if verbose else logging.WARNING)


@main.command()
@click.option("--host", default=None, help="Listen address (default 127.0.0.1).")
@click.option("--port", type=int, default=None, help="API port (default 8080).")
@click.option("--registry-port", type=int, default=None, help="OCI registry port (default 5050).")
@data_dir_option
@click.option(
    "--no-worker", is_flag=True, help="Serve the APIs only; run `imagedepot worker` apart."
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
    tls_cert: str | None,
    tls_key: str | None,
) -> None:
    """Run the API port, the OCI registry port and the build worker in one process."""
    settings = _settings(
        data_dir,
        host=host,
        port=port,
        registry_port=registry_port,
        run_worker=False if no_worker else None,
        tls_cert=Path(tls_cert) if tls_cert else None,
        tls_key=Path(tls_key) if tls_key else None,
    )
    if (settings.tls_cert is None) != (settings.tls_key is None):
        raise click.UsageError("--tls-cert and --tls-key go together")
    asyncio.run(bootstrap.serve(settings))


@main.command()
@data_dir_option
def worker(data_dir: str | None) -> None:
    """Run only the build worker (for a deployment with several processes)."""
    asyncio.run(bootstrap.serve(_settings(data_dir), with_api=False))


@main.group()
def credentials() -> None:
    """Project credentials (works directly on the data dir)."""


@credentials.command("create")
@data_dir_option
@click.option("--project", required=True, help="Project name; created when missing.")
@click.option("--role", type=click.Choice([r.value for r in Role]), default=Role.MEMBER.value)
@click.option(
    "--aksk", is_flag=True, help="An access key pair (SDK-HMAC-SHA256) instead of a token."
)
@click.option(
    "--expires-in-days",
    type=click.IntRange(min=1),
    default=None,
    help="Expire after this many days (default: never).",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print {project_id, token} (or {project_id, access_key, secret_key}) as JSON.",
)
def credentials_create(
    data_dir: str | None,
    project: str,
    role: str,
    aksk: bool,
    expires_in_days: int | None,
    as_json: bool,
) -> None:
    """Create a credential for PROJECT with ROLE; its secret is shown only now."""
    expires_in = timedelta(days=expires_in_days) if expires_in_days else None
    core = _open(data_dir)
    try:
        issue = core.identity.issue_access_key if aksk else core.identity.issue_token
        issued = issue(project, Role(role), expires_in)
    except DomainError as error:
        raise click.ClickException(error.message) from None
    finally:
        core.close()
    secret = (
        {"access_key": issued.access_key, "secret_key": issued.secret_key}
        if aksk
        else {"token": issued.token}
    )
    if as_json:
        click.echo(json.dumps({"project_id": issued.project_id, **secret}))
        return
    click.echo(
        f"project {issued.project_name} ({issued.project_id}), role {issued.role}, "
        f"credential {issued.credential_id}"
    )
    for key, value in secret.items():
        click.echo(f"{key}: {value}")


@credentials.command("list")
@data_dir_option
@click.option("--project", default=None, help="Only this project's credentials.")
@click.option("--json", "as_json", is_flag=True)
def credentials_list(data_dir: str | None, project: str | None, as_json: bool) -> None:
    """List credentials (never their secrets)."""
    core = _open(data_dir)
    try:
        listed = core.identity.list_credentials(project)
    except DomainError as error:
        raise click.ClickException(error.message) from None
    finally:
        core.close()
    rows = [
        {
            "id": c.id,
            "project": name,
            "project_id": c.project_id,
            "role": c.role.value,
            "kind": c.kind.value,
            "access_key": c.access_key,
            "created_at": c.created_at.isoformat(),
            "expires_at": c.expires_at.isoformat() if c.expires_at else None,
            "revoked_at": c.revoked_at.isoformat() if c.revoked_at else None,
        }
        for c, name in listed
    ]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        state = "revoked" if row["revoked_at"] else "active"
        click.echo(
            f"{row['id']}  {row['project']:<20} {row['role']:<7} {row['kind']:<6} "
            f"{row['access_key'] or '-':<20} {state}"
        )


@credentials.command("revoke")
@data_dir_option
@click.argument("credential_id")
def credentials_revoke(data_dir: str | None, credential_id: str) -> None:
    """Revoke a credential at once."""
    core = _open(data_dir)
    try:
        core.identity.revoke(credential_id)
    except DomainError as error:
        raise click.ClickException(error.message) from None
    finally:
        core.close()
    click.echo(f"{credential_id} revoked")


@main.command()
@data_dir_option
@click.option("--project", default=None, help="Project name: only its events.")
@click.option("--limit", type=click.IntRange(1, 100000), default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def audit(data_dir: str | None, project: str | None, limit: int, as_json: bool) -> None:
    """Show the newest state-changing calls: who, project, action, object, result, time."""
    core = _open(data_dir)
    try:
        project_id = None if project is None else core.identity.project_named(project).id
        events = core.audit.recent(project_id, limit)
    except DomainError as error:
        raise click.ClickException(error.message) from None
    finally:
        core.close()
    rows = [{**asdict(event), "at": event.at.isoformat()} for event in events]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        click.echo(
            f"{row['at']}  {row['status']}  {row['action']:<26} {row['target']}  "
            f"credential={row['credential_id'] or '-'} project={row['project_id'] or '-'}"
        )


@main.group()
def secrets() -> None:
    """Registry pull secrets (works directly on the data dir); stored encrypted."""


@secrets.command("create-docker-registry")
@data_dir_option
@click.option("--project", required=True)
@click.option("--namespace", default="default", show_default=True)
@click.option("--name", required=True)
@click.option("--docker-server", required=True)
@click.option("--docker-username", required=True)
@click.option(
    "--docker-password",
    default=None,
    help="Password; read from IMAGEDEPOT_DOCKER_PASSWORD or prompted when omitted.",
)
def secrets_create(
    data_dir: str | None,
    project: str,
    namespace: str,
    name: str,
    docker_server: str,
    docker_username: str,
    docker_password: str | None,
) -> None:
    """Create or replace the secret NAMESPACE:NAME that `image_pull_secrets` can name."""
    password = (
        docker_password
        or os.environ.get("IMAGEDEPOT_DOCKER_PASSWORD")
        or click.prompt("password", hide_input=True)
    )
    core = _open(data_dir)
    try:
        project_row = core.identity.ensure_project(project)
        summary = core.secrets.put_docker_registry(
            project_row.id, namespace, name, docker_server, docker_username, password
        )
    finally:
        core.close()
    click.echo(
        f"secret {summary.namespace}:{summary.name} ({summary.type}) for {', '.join(summary.servers)}"
    )


@secrets.command("rotate-key")
@data_dir_option
def secrets_rotate_key(data_dir: str | None) -> None:
    """Re-encrypt every secret under a new key (see the README for IMAGEDEPOT_SECRET_KEY)."""
    count = bootstrap.rotate_secret_key(_settings(data_dir))
    click.echo(f"re-sealed {count} secrets under the new key")


@main.command()
@data_dir_option
@click.option("--json", "as_json", is_flag=True)
def fsck(data_dir: str | None, as_json: bool) -> None:
    """Re-hash every blob and report damage; exit 1 when any blob is damaged or missing."""
    core = _open(data_dir)
    try:
        report = core.blob_service.fsck()
    finally:
        core.close()
    if as_json:
        click.echo(
            json.dumps(
                {
                    "checked": report.checked,
                    "damaged": report.damaged,
                    "missing": report.missing,
                    "unreferenced": report.unreferenced,
                    "pending": report.pending,
                }
            )
        )
    else:
        click.echo(f"checked {report.checked} blobs")
        for label, digests in (
            ("damaged", report.damaged),
            ("missing", report.missing),
            ("unreferenced", report.unreferenced),
            ("pending (a build in progress is fetching it)", report.pending),
        ):
            for digest in digests:
                click.echo(f"{label}: {digest}")
    sys.exit(0 if report.healthy else 1)


@main.command()
@data_dir_option
def gc(data_dir: str | None) -> None:
    """Remove blobs that no cache references."""
    core = _open(data_dir)
    try:
        removed = core.blob_service.collect()
    finally:
        core.close()
    click.echo(f"removed {len(removed)} unreferenced blobs")


@main.group()
def projects() -> None:
    """Project settings (works directly on the data dir)."""


@projects.command("set-anonymous-pull")
@data_dir_option
@click.option("--project", required=True, help="Project name.")
@click.option("--on/--off", "allowed", required=True, help="Allow pulls without credentials.")
def projects_set_anonymous_pull(data_dir: str | None, project: str, allowed: bool) -> None:
    """Let anyone pull PROJECT's caches from the registry port (node mirrors), or stop that."""
    core = _open(data_dir)
    try:
        core.serving.set_anonymous_pull(project, allowed)
    except DomainError as error:
        raise click.ClickException(error.message) from None
    finally:
        core.close()
    click.echo(f"project {project}: anonymous pull {'on' if allowed else 'off'}")


layout_option = click.option(
    "--oci-layout",
    "layout",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="An OCI image layout directory.",
)
archive_option = click.option(
    "--oci-archive",
    "archive",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="An OCI image layout in a tar file.",
)


def _one_target(layout: Path | None, archive: Path | None) -> Path:
    if (layout is None) == (archive is None):
        raise click.UsageError("give exactly one of --oci-layout and --oci-archive")
    return layout or archive  # type: ignore[return-value]


@main.command("export")
@data_dir_option
@click.argument("cache")
@click.option("--project", default=None, help="Find CACHE by name in this project.")
@layout_option
@archive_option
def export_cache(
    data_dir: str | None,
    cache: str,
    project: str | None,
    layout: Path | None,
    archive: Path | None,
) -> None:
    """Write everything the cache CACHE (an id, or a name with --project) holds as an OCI image
    layout, readable by `skopeo copy oci:DIR:IMAGE …`, for air-gapped transfer."""
    target = _one_target(layout, archive)
    core = _open(data_dir)
    try:
        found = core.layouts.find(cache, project)
        if archive is not None:
            count = core.layouts.export_archive(found, target)
        else:
            count = core.layouts.export_layout(found, target)
    except DomainError as error:
        raise click.ClickException(error.message) from None
    finally:
        core.close()
    click.echo(f"cache {found.spec.name} ({found.id}): {count} blobs written to {target}")
    for image in found.images:
        click.echo(f"  {image.image} {image.digest}")


@main.command("import")
@data_dir_option
@click.option("--project", required=True, help="Project of the new cache.")
@click.option("--name", required=True, help="Name of the new cache.")
@layout_option
@archive_option
def import_cache(
    data_dir: str | None, project: str, name: str, layout: Path | None, archive: Path | None
) -> None:
    """Read an OCI image layout (as `export` writes it) into a new Available cache."""
    source = _one_target(layout, archive)
    core = _open(data_dir)
    try:
        cache = core.layouts.import_layout(source, project, name)
    except DomainError as error:
        raise click.ClickException(error.message) from None
    finally:
        core.close()
    click.echo(f"{cache.id} {cache.spec.name} {cache.status}")


def _open(data_dir: str | None) -> bootstrap.Core:
    try:
        return bootstrap.open_core(_settings(data_dir))
    except DomainError as error:
        raise click.ClickException(error.message) from None


# --- API commands ---------------------------------------------------------------------------


@main.group()
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


main.add_command(images_group)

if __name__ == "__main__":  # pragma: no cover
    main()
