"""The offline admin commands: credentials, secrets, projects, audit, fsck, gc, export and
import. They work directly on a data dir (no server needed, no token asked), each opening the
core through `opened_core`; the `cli` package adds them to `main`."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict
from datetime import timedelta
from pathlib import Path

import click

from imagedepot import bootstrap
from imagedepot.cli.common import data_dir_option, opened_core, settings_for
from imagedepot.domain.identity import Role

# --- credentials ----------------------------------------------------------------------------


@click.group()
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
    with opened_core(data_dir) as core:
        issue = core.identity.issue_access_key if aksk else core.identity.issue_token
        issued = issue(project, Role(role), expires_in)
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
    with opened_core(data_dir) as core:
        listed = core.identity.list_credentials(project)
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
    with opened_core(data_dir) as core:
        core.identity.revoke(credential_id)
    click.echo(f"{credential_id} revoked")


# --- audit ----------------------------------------------------------------------------------


@click.command()
@data_dir_option
@click.option("--project", default=None, help="Project name: only its events.")
@click.option("--limit", type=click.IntRange(1, 100000), default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def audit(data_dir: str | None, project: str | None, limit: int, as_json: bool) -> None:
    """Show the newest state-changing calls: who, project, action, object, result, time."""
    with opened_core(data_dir) as core:
        project_id = None if project is None else core.identity.project_named(project).id
        events = core.audit.recent(project_id, limit)
    rows = [{**asdict(event), "at": event.at.isoformat()} for event in events]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        click.echo(
            f"{row['at']}  {row['status']}  {row['action']:<26} {row['target']}  "
            f"credential={row['credential_id'] or '-'} project={row['project_id'] or '-'}"
        )


# --- secrets --------------------------------------------------------------------------------


@click.group()
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
    with opened_core(data_dir) as core:
        project_row = core.identity.ensure_project(project)
        summary = core.secrets.put_docker_registry(
            project_row.id, namespace, name, docker_server, docker_username, password
        )
    click.echo(
        f"secret {summary.namespace}:{summary.name} ({summary.type}) for {', '.join(summary.servers)}"
    )


@secrets.command("rotate-key")
@data_dir_option
def secrets_rotate_key(data_dir: str | None) -> None:
    """Re-encrypt every secret under a new key (see the README for IMAGEDEPOT_SECRET_KEY)."""
    count = bootstrap.rotate_secret_key(settings_for(data_dir))
    click.echo(f"re-sealed {count} secrets under the new key")


# --- blobs ----------------------------------------------------------------------------------


@click.command()
@data_dir_option
@click.option("--json", "as_json", is_flag=True)
def fsck(data_dir: str | None, as_json: bool) -> None:
    """Re-hash every blob and report damage; exit 1 when any blob is damaged or missing."""
    with opened_core(data_dir) as core:
        report = core.blob_service.fsck()
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


@click.command()
@data_dir_option
def gc(data_dir: str | None) -> None:
    """Remove blobs that no cache references."""
    with opened_core(data_dir) as core:
        removed = core.blob_service.collect()
    click.echo(f"removed {len(removed)} unreferenced blobs")


# --- projects -------------------------------------------------------------------------------


@click.group()
def projects() -> None:
    """Project settings (works directly on the data dir)."""


@projects.command("set-anonymous-pull")
@data_dir_option
@click.option("--project", required=True, help="Project name.")
@click.option("--on/--off", "allowed", required=True, help="Allow pulls without credentials.")
def projects_set_anonymous_pull(data_dir: str | None, project: str, allowed: bool) -> None:
    """Let anyone pull PROJECT's caches from the registry port (node mirrors), or stop that."""
    with opened_core(data_dir) as core:
        core.identity.set_anonymous_pull(project, allowed)
    click.echo(f"project {project}: anonymous pull {'on' if allowed else 'off'}")


# --- export / import ------------------------------------------------------------------------

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


@click.command("export")
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
    with opened_core(data_dir) as core:
        found = core.layouts.find(cache, project)
        if archive is not None:
            count = core.layouts.export_archive(found, target)
        else:
            count = core.layouts.export_layout(found, target)
    click.echo(f"cache {found.spec.name} ({found.id}): {count} blobs written to {target}")
    for image in found.images:
        click.echo(f"  {image.image} {image.digest}")


@click.command("import")
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
    with opened_core(data_dir) as core:
        cache = core.layouts.import_layout(source, project, name)
    click.echo(f"{cache.id} {cache.spec.name} {cache.status}")


COMMANDS: tuple[click.Command, ...] = (
    credentials,
    audit,
    secrets,
    fsck,
    gc,
    projects,
    export_cache,
    import_cache,
)
