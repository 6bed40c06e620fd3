"""The projects' upstreams (the registries each may pull through) as rows of `upstreams`."""

from __future__ import annotations

import builtins
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from sqlalchemy import Connection, delete, select

from imagedepot.adapters.db import tables
from imagedepot.adapters.db.statements import upsert
from imagedepot.domain.upstreams import CheckMode, CheckPolicy, Upstream


class SqlUpstreamRepository:
    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    def put(self, upstream: Upstream) -> None:
        values = {
            "project_id": upstream.project_id,
            "registry": upstream.registry,
            "mirrors": list(upstream.mirrors),
            "pull_secret": upstream.pull_secret,
            "plain_http": upstream.plain_http,
            "insecure_skip_verify": upstream.insecure_skip_verify,
            "check_mode": upstream.check.mode.value,
            "check_max_age_seconds": int(upstream.check.max_age.total_seconds()),
            "created_at": upstream.created_at,
        }
        insert = upsert(self._connection, tables.upstreams).values(values)
        replaced = {key: insert.excluded[key] for key in values if key != "created_at"}
        self._connection.execute(
            insert.on_conflict_do_update(index_elements=["project_id", "registry"], set_=replaced)
        )

    def get(self, project_id: str, registry: str) -> Upstream | None:
        c = tables.upstreams.c
        query = select(tables.upstreams).where(c.project_id == project_id, c.registry == registry)
        row = self._connection.execute(query).mappings().first()
        return None if row is None else _upstream_from_row(row)

    def list(self, project_id: str) -> builtins.list[Upstream]:
        c = tables.upstreams.c
        query = select(tables.upstreams).where(c.project_id == project_id).order_by(c.registry)
        return [_upstream_from_row(row) for row in self._connection.execute(query).mappings()]

    def remove(self, project_id: str, registry: str) -> bool:
        c = tables.upstreams.c
        result = self._connection.execute(
            delete(tables.upstreams).where(c.project_id == project_id, c.registry == registry)
        )
        return result.rowcount == 1


def _upstream_from_row(row: Mapping[Any, Any]) -> Upstream:
    return Upstream(
        project_id=row["project_id"],
        registry=row["registry"],
        mirrors=tuple(row["mirrors"]),
        pull_secret=row["pull_secret"],
        plain_http=bool(row["plain_http"]),
        insecure_skip_verify=bool(row["insecure_skip_verify"]),
        check=CheckPolicy(
            CheckMode(row["check_mode"]), timedelta(seconds=row["check_max_age_seconds"])
        ),
        created_at=row["created_at"],
    )
