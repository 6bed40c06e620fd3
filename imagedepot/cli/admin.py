"""The offline admin commands: credentials, secrets, projects, audit, fsck, gc, export and
import. They work directly on a data dir (no server needed, no token asked), each opening the
core through `opened_core`, and each that changes state records it in the audit log through
`audited`; the `cli` package adds them to `main`.

Only `credentials create` makes a store in a data dir that holds none (it is how the first
project and credential come to be, before or without `serve`); every other command refuses
such a dir, so that a mistyped --data-dir is said to be one."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict
from datetime import timedelta
from pathlib import Path

import click

from imagedepot import bootstrap
from imagedepot.cli.common import audited, data_dir_option, opened_core
from imagedepot.cli.output import echo_json, echo_table, json_option, short_time
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
    help="Print {project_id, project, credential_id, role, token} (with --aksk: access_key "
    "and secret_key instead of token) as JSON.",
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
    with (
        opened_core(data_dir, initialise=True) as core,
        audited(core, "cli:credential:create", "credentials") as change,
    ):
        issue = core.identity.issue_access_key if aksk else core.identity.issue_token
        issued = issue(project, Role(role), expires_in)
        change.target = f"credentials/{issued.credential_id}"
        change.project_id = issued.project_id
    secret = (
        {"access_key": issued.access_key, "secret_key": issued.secret_key}
        if aksk
        else {"token": issued.token}
    )
    if as_json:
        identity = {
            "project_id": issued.project_id,
            "project": issued.project_name,
            "credential_id": issued.credential_id,
            "role": issued.role.value,
        }
        click.echo(json.dumps({**identity, **secret}))
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
@json_option
def credentials_list(data_dir: str | None, project: str | None, as_json: bool) -> None:
    """List credentials (never their secrets)."""
    with opened_core(data_dir) as core:
        listed = core.identity.list_credentials(project)
        now = core.clock.now()
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
            "state": "revoked" if c.revoked_at else "active" if c.usable(now) else "expired",
        }
        for c, name in listed
    ]
    if as_json:
        echo_json(rows)
        return
    echo_table(
        ("ID", "PROJECT", "ROLE", "KIND", "ACCESS KEY", "STATE", "CREATED", "EXPIRES"),
        [
            (
                row["id"],
                row["project"],
                row["role"],
                row["kind"],
                row["access_key"],
                row["state"],
                short_time(credential.created_at),
                short_time(credential.expires_at),
            )
            for row, (credential, _) in zip(rows, listed, strict=True)
        ],
    )


@credentials.command("revoke")
@data_dir_option
@click.argument("credential_id")
def credentials_revoke(data_dir: str | None, credential_id: str) -> None:
    """Revoke a credential at once."""
    with (
        opened_core(data_dir) as core,
        audited(core, "cli:credential:revoke", f"credentials/{credential_id}") as change,
    ):
        change.project_id = next(
            (c.project_id for c, _ in core.identity.list_credentials() if c.id == credential_id),
            None,
        )
        core.identity.revoke(credential_id)
    click.echo(f"{credential_id} revoked")


# --- audit ----------------------------------------------------------------------------------


@click.command()
@data_dir_option
@click.option("--project", default=None, help="Project name: only its events.")
@click.option("--limit", type=click.IntRange(1, 100000), default=100, show_default=True)
@json_option
def audit(data_dir: str | None, project: str | None, limit: int, as_json: bool) -> None:
    """Show the newest state-changing calls, the API's and this CLI's (actions `cli:…`, with
    no credential): time, result, action, object, credential, project."""
    with opened_core(data_dir) as core:
        project_id = None if project is None else core.identity.project_named(project).id
        events = core.audit.recent(project_id, limit)
        names = core.identity.project_names(e.project_id for e in events if e.project_id)
    rows = [
        {
            **asdict(event),
            "at": event.at.isoformat(),
            "project": names.get(event.project_id) if event.project_id else None,
        }
        for event in events
    ]
    if as_json:
        echo_json(rows)
        return
    echo_table(
        ("AT", "STATUS", "ACTION", "TARGET", "CREDENTIAL", "PROJECT", "PROJECT ID"),
        [
            (
                short_time(event.at),
                row["status"],
                row["action"],
                row["target"],
                row["credential_id"],
                row["project"],
                row["project_id"],
            )
            for row, event in zip(rows, events, strict=True)
        ],
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
    with (
        opened_core(data_dir) as core,
        audited(core, "cli:secret:create", f"secrets/{namespace}/{name}") as change,
    ):
        project_row = core.identity.ensure_project(project)
        change.project_id = project_row.id
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
    with opened_core(data_dir) as core, audited(core, "cli:secret:rotateKey", "secrets"):
        count = bootstrap.rotate_secret_key(core.settings)
    click.echo(f"re-sealed {count} secrets under the new key")


# --- blobs ----------------------------------------------------------------------------------


@click.command()
@data_dir_option
@json_option
@click.option(
    "--quick",
    is_flag=True,
    help="Compare each blob's size with the recorded one instead of re-hashing its bytes.",
)
def fsck(data_dir: str | None, as_json: bool, quick: bool) -> None:
    """Re-hash every blob and report damage; exit 1 when any blob is damaged or missing."""
    with opened_core(data_dir) as core:
        report = core.blob_service.fsck(quick=quick)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "checked": report.checked,
                    "damaged": report.damaged,
                    "missing": report.missing,
                    "unreferenced": report.unreferenced,
                    "pending": report.pending,
                    "leftovers": report.leftovers,
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
            ("leftover (a dead writer's; the worker or gc removes it)", report.leftovers),
        ):
            for digest in digests:
                click.echo(f"{label}: {digest}")
    sys.exit(0 if report.healthy else 1)


@click.command()
@data_dir_option
@click.option(
    "--grace",
    type=click.FloatRange(min=0),
    default=None,
    metavar="SECONDS",
    help="Remove blobs unreferenced at least this long (default: IMAGEDEPOT_GC_GRACE_SECONDS, "
    "an hour); 0 removes every unreferenced blob now.",
)
def gc(data_dir: str | None, grace: float | None) -> None:
    """Remove blobs that no cache or image has referenced for the grace period."""
    with opened_core(data_dir) as core, audited(core, "cli:blob:gc", "blobs") as change:
        removed = core.blob_service.collect(
            grace=None if grace is None else timedelta(seconds=grace)
        )
        swept = core.blobs.clean_temporary()
        change.target = f"blobs?removed={len(removed)}&leftovers={swept}"
    click.echo(f"removed {len(removed)} unreferenced blobs and {swept} leftovers of dead writers")


@click.command("migrate-store")
@data_dir_option
@click.option(
    "--to-database",
    metavar="URL",
    help="An empty database (postgresql://…) to copy every table into.",
)
@click.option(
    "--to-blob-store",
    metavar="s3://BUCKET[/PREFIX]",
    help="A bucket to copy every blob into (endpoint and credentials as AWS tools read them).",
)
def migrate_store(data_dir: str | None, to_database: str | None, to_blob_store: str | None) -> None:
    """Copy this store (stop the server first) to PostgreSQL and/or S3, for running on
    several machines; the source is left as it was."""
    if to_database is None and to_blob_store is None:
        raise click.UsageError("give --to-database, --to-blob-store or both")
    with opened_core(data_dir) as core:
        moved = bootstrap.move_store(core, to_database, to_blob_store)
    if to_blob_store is not None:
        click.echo(f"copied {moved.blobs} blobs to {to_blob_store}")
    if to_database is not None:
        click.echo(f"copied {sum(moved.rows.values())} rows in {len(moved.rows)} tables")
    click.echo(
        "start every replica with the same IMAGEDEPOT_SECRET_KEY as this data dir's "
        "secret.key (and IMAGEDEPOT_ADMIN_TOKEN, if you use the admin token)"
    )


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
    target = f"projects/{project}?anonymous_pull={'on' if allowed else 'off'}"
    with (
        opened_core(data_dir) as core,
        audited(core, "cli:project:setAnonymousPull", target) as change,
    ):
        change.project_id = core.identity.project_named(project).id
        core.identity.set_anonymous_pull(project, allowed)
    click.echo(f"project {project}: anonymous pull {'on' if allowed else 'off'}")


@projects.command("set-quota")
@data_dir_option
@click.option("--project", required=True, help="Project name.")
@click.option(
    "--stored-gib",
    type=click.FloatRange(min=0),
    default=None,
    help="Most GiB the project's caches may store, each blob counted once.",
)
@click.option("--unlimited", is_flag=True, help="Lift the quota.")
def projects_set_quota(
    data_dir: str | None, project: str, stored_gib: float | None, unlimited: bool
) -> None:
    """Cap PROJECT's stored bytes: a build or pull-through that would go over it evicts the
    least recently pulled caches first (never pinned or building ones), or fails saying so."""
    if (stored_gib is None) == (not unlimited):
        raise click.UsageError("give exactly one of --stored-gib and --unlimited")
    quota = None if unlimited or stored_gib is None else int(stored_gib * 1024**3)
    shown = "unlimited" if quota is None else f"{quota} bytes"
    with (
        opened_core(data_dir) as core,
        audited(core, "cli:project:setQuota", f"projects/{project}?stored_bytes={shown}") as change,
    ):
        change.project_id = core.identity.project_named(project).id
        core.identity.set_stored_bytes_quota(project, quota)
    click.echo(f"project {project}: stored bytes quota {shown}")


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
    with (
        opened_core(data_dir) as core,
        audited(core, "cli:imageCache:import", f"imagecaches?name={name}") as change,
    ):
        change.project_id = core.identity.project_named(project).id
        cache = core.layouts.import_layout(source, project, name)
        change.target = f"imagecaches/{cache.id}"
    click.echo(f"{cache.id} {cache.spec.name} {cache.status}")


COMMANDS: tuple[click.Command, ...] = (
    credentials,
    audit,
    secrets,
    fsck,
    gc,
    migrate_store,
    projects,
    export_cache,
    import_cache,
)
