"""The VM image repository of the SQL metadata store: rows, tags, properties, and the
keyset-paginated list that every image dialect's filters and sorts translate into.

Kept apart from `store.py` so the image listing (the largest query the store makes) can be
read on its own; `SqlUnitOfWork` hands it the transaction's connection.
"""

from __future__ import annotations

import builtins
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    RowMapping,
    and_,
    delete,
    exists,
    false,
    func,
    literal_column,
    or_,
    select,
    tuple_,
    union,
    update,
)
from sqlalchemy.sql.base import ReadOnlyColumnCollection

from imagedepot.adapters.db import tables
from imagedepot.adapters.db.statements import chunks, insert_or_conflict, update_if_version
from imagedepot.domain.errors import Conflict, InvalidInput
from imagedepot.domain.sharing import ImageMember, MemberStatus
from imagedepot.domain.vmimages import (
    ImageJob,
    ImageQuery,
    ImageStatus,
    ImageType,
    JobType,
    SortKey,
    Visibility,
    VmImage,
)

_NULLABLE_TEXT_KEYS = ("name", "disk_format", "container_format")


def _member_values(member: ImageMember) -> dict[str, Any]:
    return {
        "image_id": member.image_id,
        "member_id": member.member_id,
        "status": member.status.value,
        "created_at": member.created_at,
        "updated_at": member.updated_at,
    }


def _member_from_row(row: RowMapping) -> ImageMember:
    return ImageMember(
        image_id=row["image_id"],
        member_id=row["member_id"],
        status=MemberStatus(row["status"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def _values(image: VmImage) -> dict[str, Any]:
    return {
        "id": image.id,
        "project_id": image.project_id,
        "name": image.name,
        "status": image.status.value,
        "visibility": image.visibility.value,
        "protected": image.protected,
        "os_hidden": image.os_hidden,
        "disk_format": image.disk_format,
        "container_format": image.container_format,
        "min_disk": image.min_disk,
        "min_ram": image.min_ram,
        "size": image.size,
        "virtual_size": image.virtual_size,
        "checksum": image.checksum,
        "os_hash_algo": image.os_hash_algo,
        "os_hash_value": image.os_hash_value,
        "blob_digest": image.blob_digest,
        "image_type": image.image_type.value,
        "region": image.region,
        "description": image.description,
        "version": image.version,
        "created_at": image.created_at,
        "updated_at": image.updated_at,
        "deleted_at": image.deleted_at,
        "upload_holder": image.upload_holder,
    }


def _from_row(row: RowMapping, tags: list[str], properties: dict[str, str]) -> VmImage:
    return VmImage(
        id=row["id"],
        project_id=row["project_id"],
        name=row["name"],
        status=ImageStatus(row["status"]),
        visibility=Visibility(row["visibility"]),
        protected=bool(row["protected"]),
        os_hidden=bool(row["os_hidden"]),
        disk_format=row["disk_format"],
        container_format=row["container_format"],
        min_disk=row["min_disk"],
        min_ram=row["min_ram"],
        size=row["size"],
        virtual_size=row["virtual_size"],
        checksum=row["checksum"],
        os_hash_algo=row["os_hash_algo"],
        os_hash_value=row["os_hash_value"],
        blob_digest=row["blob_digest"],
        image_type=ImageType(row["image_type"]),
        region=row["region"],
        description=row["description"],
        version=row["version"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        deleted_at=row["deleted_at"],
        upload_holder=row["upload_holder"],
        tags=tags,
        properties=properties,
    )


_EMPTY_TEXT: ColumnElement[str] = literal_column("''")
_NO_SIZE: ColumnElement[int] = literal_column("-1")


def _sort_expression(columns: ReadOnlyColumnCollection[str, Any], key: str) -> ColumnElement[Any]:
    """The column a sort key orders by; NULLs folded into the lowest value so that keyset
    comparisons (which NULL would defeat) stay exact. Literals, not bound parameters, so the
    planners match the expression indexes on them."""
    column: ColumnElement[Any] = columns[key]
    if key in _NULLABLE_TEXT_KEYS:
        return func.coalesce(column, _EMPTY_TEXT)
    if key == "size":
        return func.coalesce(column, _NO_SIZE)
    return column


def _after_marker(
    expressions: list[tuple[ColumnElement[Any], bool]], marker: tuple[Any, ...]
) -> ColumnElement[bool]:
    """Rows strictly after the marker's values in the sort order. One direction throughout
    (the usual case) is a row-value comparison, a range an index serves; mixed directions
    need the expanded OR."""
    directions = {descending for _, descending in expressions}
    if len(directions) == 1:
        row = tuple_(*[expression for expression, _ in expressions])
        first = expressions[0][0]
        # The first key's own bound is what an index range starts from (SQLite does not
        # start one from a row value over an expression); the row value is then exact.
        if directions.pop():
            return and_(first <= marker[0], row < tuple_(*marker))
        return and_(first >= marker[0], row > tuple_(*marker))
    alternatives: list[ColumnElement[bool]] = []
    for index, (expression, descending) in enumerate(expressions):
        equal_before = [expressions[j][0] == marker[j] for j in range(index)]
        beyond = expression < marker[index] if descending else expression > marker[index]
        alternatives.append(and_(*equal_before, beyond))
    return or_(*alternatives)


def _member_of(project_id: str, status: str | None) -> ColumnElement[bool]:
    """The image has `project_id` as a member (with `status`; any when "all")."""
    c, m = tables.vm_images.c, tables.vm_image_members.c
    wanted = [m.member_id == project_id]
    if status != "all":
        wanted.append(m.status == (status or MemberStatus.ACCEPTED.value))
    return c.id.in_(select(m.image_id).where(*wanted))


def _visible_to(project_id: str) -> ColumnElement[bool]:
    """Readable by id: owned, public, community, or shared with the project (any status)."""
    c = tables.vm_images.c
    return or_(
        c.project_id == project_id,
        c.visibility.in_([Visibility.PUBLIC.value, Visibility.COMMUNITY.value]),
        and_(c.visibility == Visibility.SHARED.value, _member_of(project_id, "all")),
    )


def _sources(query: ImageQuery, *, disjoint: bool = False) -> list[ColumnElement[bool]]:
    """The images a list may show, as sources that an index each serves: the project's own
    (by project_id), public or community ones (by visibility), and those shared with it
    (through its memberships). One OR of the three, which no index serves, made every page
    scan and sort the whole table; each source is read in order up to the page's end and
    the pages merged.

    The sources overlap (a project's own public images are in two of them) unless
    `disjoint`, which a count needs. A list takes them overlapping and merges with UNION:
    leaving the project's own images out of the public source would walk the visibility
    index past all of them (a project owning a public catalogue would wait for each page)."""
    c = tables.vm_images.c
    chosen = query.visibility
    owned = c.project_id == query.project_id
    if not query.include_visible:
        return [owned if chosen in (None, "all") else and_(owned, c.visibility == chosen)]

    def anyones(visibility: Visibility) -> ColumnElement[bool]:
        if disjoint:
            return and_(c.visibility == visibility.value, c.project_id != query.project_id)
        return c.visibility == visibility.value

    # Read through the memberships, never by walking the visibility index: the project's
    # own shared images (Glance's default visibility) may be most of the table. Wrapped so
    # that no index on visibility matches (visibility is never NULL; SQLite, without
    # statistics, would otherwise walk that index in the sort order).
    shared_with = and_(
        func.coalesce(c.visibility, _EMPTY_TEXT) == Visibility.SHARED.value,
        _member_of(query.project_id, query.member_status),
    )
    if chosen is None:
        return [owned, anyones(Visibility.PUBLIC), shared_with]
    if chosen == "all":
        return [owned, anyones(Visibility.PUBLIC), anyones(Visibility.COMMUNITY), shared_with]
    if chosen == Visibility.SHARED.value:
        return [and_(owned, c.visibility == chosen), shared_with]
    if chosen in (Visibility.PUBLIC.value, Visibility.COMMUNITY.value):
        return [c.visibility == chosen]
    return [and_(owned, c.visibility == chosen)]


def _filters(query: ImageQuery) -> list[ColumnElement[bool]]:
    """What a list asks of its images beyond where they come from (`_sources`)."""
    c = tables.vm_images.c
    conditions: list[ColumnElement[bool]] = []
    if query.include_visible and query.owner is not None:
        conditions.append(c.project_id == query.owner)
    if query.changes_since is not None:
        conditions.append(c.updated_at >= query.changes_since)
    else:
        conditions.append(c.status != ImageStatus.DELETED.value)
    for column, wanted in (
        (c.id, query.ids),
        (c.name, query.names),
        (c.status, query.statuses),
        (c.disk_format, query.disk_formats),
        (c.container_format, query.container_formats),
    ):
        if wanted:
            conditions.append(column.in_(list(wanted)))
    if query.protected is not None:
        conditions.append(c.protected.is_(query.protected))
    if query.os_hidden is not None:
        conditions.append(c.os_hidden.is_(query.os_hidden))
    if query.region is not None:
        conditions.append(c.region == query.region)
    if query.image_type is not None:
        conditions.append(c.image_type == query.image_type.value)
    tags = tables.vm_image_tags.c
    for tag in query.tags:
        conditions.append(exists().where(tags.image_id == c.id, tags.tag == tag))
    properties = tables.vm_image_properties.c
    for name, value in query.properties:
        conditions.append(
            exists().where(
                properties.image_id == c.id, properties.name == name, properties.value == value
            )
        )
    if query.size_min is not None:
        conditions.append(c.size >= query.size_min)
    if query.size_max is not None:
        conditions.append(c.size <= query.size_max)
    for time_filter in query.times:
        column = c[time_filter.field]
        moment = time_filter.value
        conditions.append(
            {
                "gt": column > moment,
                "gte": column >= moment,
                "eq": column == moment,
                "neq": column != moment,
                "lt": column < moment,
                "lte": column <= moment,
            }[time_filter.operator]
        )
    return conditions


class SqlVmImageRepository:
    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    def add(self, image: VmImage) -> None:
        c = tables.vm_images.c
        if self._connection.execute(select(c.id).where(c.id == image.id)).first() is not None:
            raise Conflict(f"an image with id {image.id} already exists", field="id")
        insert_or_conflict(
            self._connection,
            tables.vm_images.insert().values(_values(image)),
            f"an image with id {image.id} already exists",
            field="id",
        )
        self._write_children(image)

    def _write_children(self, image: VmImage) -> None:
        if image.tags:
            self._connection.execute(
                tables.vm_image_tags.insert(),
                [{"image_id": image.id, "tag": tag} for tag in image.tags],
            )
        if image.properties:
            self._connection.execute(
                tables.vm_image_properties.insert(),
                [
                    {"image_id": image.id, "name": name, "value": value}
                    for name, value in image.properties.items()
                ],
            )

    def get(
        self, image_id: str, project_id: str | None = None, *, include_deleted: bool = False
    ) -> VmImage | None:
        c = tables.vm_images.c
        query = select(tables.vm_images).where(c.id == image_id)
        if project_id is not None:
            query = query.where(c.project_id == project_id)
        if not include_deleted:
            query = query.where(c.status != ImageStatus.DELETED.value)
        row = self._connection.execute(query).mappings().first()
        if row is None:
            return None
        return self._hydrate([row])[0]

    def count_by_status(self) -> dict[str, int]:
        c = tables.vm_images.c
        rows = self._connection.execute(
            select(c.status, func.count())
            .where(c.status != ImageStatus.DELETED.value)
            .group_by(c.status)
        )
        return {status: int(count) for status, count in rows}

    def get_visible(self, image_id: str, project_id: str) -> VmImage | None:
        c = tables.vm_images.c
        row = (
            self._connection.execute(
                select(tables.vm_images).where(
                    c.id == image_id,
                    c.status != ImageStatus.DELETED.value,
                    _visible_to(project_id),
                )
            )
            .mappings()
            .first()
        )
        return None if row is None else self._hydrate([row])[0]

    # --- members ---

    def add_member(self, member: ImageMember) -> None:
        insert_or_conflict(
            self._connection,
            tables.vm_image_members.insert().values(_member_values(member)),
            f"{member.member_id} is already a member of image {member.image_id}",
            field="member",
        )

    def member(self, image_id: str, member_id: str) -> ImageMember | None:
        m = tables.vm_image_members.c
        row = (
            self._connection.execute(
                select(tables.vm_image_members).where(
                    m.image_id == image_id, m.member_id == member_id
                )
            )
            .mappings()
            .first()
        )
        return None if row is None else _member_from_row(row)

    def members(self, image_id: str) -> builtins.list[ImageMember]:
        m = tables.vm_image_members.c
        rows = self._connection.execute(
            select(tables.vm_image_members)
            .where(m.image_id == image_id)
            .order_by(m.created_at, m.member_id)
        ).mappings()
        return [_member_from_row(row) for row in rows]

    def save_member(self, member: ImageMember) -> None:
        m = tables.vm_image_members.c
        self._connection.execute(
            update(tables.vm_image_members)
            .where(m.image_id == member.image_id, m.member_id == member.member_id)
            .values(status=member.status.value, updated_at=member.updated_at)
        )

    def remove_member(self, image_id: str, member_id: str) -> bool:
        m = tables.vm_image_members.c
        result = self._connection.execute(
            delete(tables.vm_image_members).where(m.image_id == image_id, m.member_id == member_id)
        )
        return result.rowcount == 1

    def save(self, image: VmImage, expected_version: int) -> bool:
        c = tables.vm_images.c
        values = _values(image)
        del values["id"]
        if not update_if_version(
            self._connection, tables.vm_images, image.id, c.version, expected_version, values
        ):
            return False
        self._connection.execute(
            delete(tables.vm_image_tags).where(tables.vm_image_tags.c.image_id == image.id)
        )
        self._connection.execute(
            delete(tables.vm_image_properties).where(
                tables.vm_image_properties.c.image_id == image.id
            )
        )
        self._write_children(image)
        return True

    def upload_holders(self) -> builtins.list[str]:
        c = tables.vm_images.c
        query = select(c.upload_holder).where(c.upload_holder.is_not(None)).distinct()
        return [holder for holder in self._connection.execute(query).scalars()]

    def saving_held_by(self, holders: Sequence[str]) -> builtins.list[VmImage]:
        if not holders:
            return []
        c = tables.vm_images.c
        query = select(tables.vm_images).where(
            c.status.in_([ImageStatus.SAVING.value, ImageStatus.UPLOADING.value]),
            c.upload_holder.in_(list(holders)),
        )
        return self._hydrate(builtins.list(self._connection.execute(query).mappings()))

    def list(self, query: ImageQuery) -> builtins.list[VmImage]:
        images = tables.vm_images
        sort = [*query.sort]
        if not any(key.key == "id" for key in sort):
            sort.append(SortKey("id", sort[-1].descending if sort else False))

        def order(columns: ReadOnlyColumnCollection[str, Any]) -> list[ColumnElement[Any]]:
            return [
                _sort_expression(columns, key.key).desc()
                if key.descending
                else _sort_expression(columns, key.key).asc()
                for key in sort
            ]

        sources = _sources(query)
        conditions = _filters(query)
        if query.marker is not None:
            expressions = [(_sort_expression(images.c, key.key), key.descending) for key in sort]
            marker = self._connection.execute(
                select(*[expression for expression, _ in expressions]).where(
                    images.c.id == query.marker, or_(*sources), *conditions
                )
            ).first()
            if marker is None:
                raise InvalidInput(f"marker {query.marker} could not be found", field="marker")
            conditions.append(_after_marker(expressions, tuple(marker)))
        if len(sources) == 1:
            statement = select(images).where(sources[0], *conditions).order_by(*order(images.c))
        else:
            # Each source's page carries only the sort keys (id among them); UNION drops an
            # image two sources gave; the merged page is joined back to its rows: SQLAlchemy builds a proxy of every selected column for
            # each subquery and for the union, which for whole rows cost ~3 ms of CPU per list
            # (most of a Glance list's time on the server, under load the GIL's).
            page_end = query.limit + query.offset
            keys = [
                _sort_expression(images.c, key.key).label(f"k{index}")
                for index, key in enumerate(sort)
            ]
            merged = union(
                *[
                    select(
                        select(*keys)
                        .where(source, *conditions)
                        .order_by(*order(images.c))
                        .limit(page_end)
                        .subquery()
                    )
                    for source in sources
                ]
            ).subquery()
            merged_keys = [merged.c[f"k{index}"] for index in range(len(sort))]
            merged_id = merged_keys[next(i for i, key in enumerate(sort) if key.key == "id")]
            statement = (
                select(images)
                .join_from(images, merged, images.c.id == merged_id)
                .order_by(
                    *[
                        column.desc() if key.descending else column.asc()
                        for column, key in zip(merged_keys, sort, strict=True)
                    ]
                )
            )
        rows = builtins.list(
            self._connection.execute(statement.limit(query.limit).offset(query.offset)).mappings()
        )
        return self._hydrate(rows) if rows else []

    def count(self, query: ImageQuery) -> int:
        conditions = _filters(query)
        return sum(
            int(
                self._connection.execute(
                    select(func.count()).select_from(tables.vm_images).where(source, *conditions)
                ).scalar_one()
            )
            for source in _sources(query, disjoint=True)
        )

    def add_job(self, job: ImageJob) -> None:
        self._connection.execute(
            tables.vm_image_jobs.insert().values(
                id=job.id,
                project_id=job.project_id,
                region=job.region,
                type=job.type.value,
                resource_id=job.resource_id,
                progress=job.progress,
                done=job.done,
                success=job.success,
                status=job.status,
                result=job.result,
                created_at=job.created_at,
            )
        )

    def jobs(self, project_id: str, job_ids: Sequence[str]) -> builtins.list[ImageJob]:
        c = tables.vm_image_jobs.c
        found: builtins.list[ImageJob] = []
        for chunk in chunks(sorted(set(job_ids))):
            rows = self._connection.execute(
                select(tables.vm_image_jobs).where(c.project_id == project_id, c.id.in_(chunk))
            ).mappings()
            found.extend(
                ImageJob(
                    id=row["id"],
                    project_id=row["project_id"],
                    region=row["region"],
                    type=JobType(row["type"]),
                    resource_id=row["resource_id"],
                    created_at=row["created_at"],
                    progress=row["progress"],
                    done=bool(row["done"]),
                    success=bool(row["success"]),
                    status=row["status"],
                    result=row["result"],
                )
                for row in rows
            )
        order = {job_id: index for index, job_id in enumerate(job_ids)}
        return sorted(found, key=lambda job: order[job.id])

    def _hydrate(self, rows: builtins.list[RowMapping]) -> builtins.list[VmImage]:
        ids = [row["id"] for row in rows]
        tags: dict[str, builtins.list[str]] = defaultdict(builtins.list)
        properties: dict[str, dict[str, str]] = defaultdict(dict)
        tag_c, property_c = tables.vm_image_tags.c, tables.vm_image_properties.c
        for chunk in chunks(ids):
            for image_id, tag in self._connection.execute(
                select(tag_c.image_id, tag_c.tag)
                .where(tag_c.image_id.in_(chunk))
                .order_by(tag_c.image_id, tag_c.tag)
            ):
                tags[image_id].append(tag)
            for image_id, name, value in self._connection.execute(
                select(property_c.image_id, property_c.name, property_c.value).where(
                    property_c.image_id.in_(chunk) if chunk else false()
                )
            ):
                properties[image_id][name] = value
        return [_from_row(row, tags[row["id"]], properties[row["id"]]) for row in rows]
