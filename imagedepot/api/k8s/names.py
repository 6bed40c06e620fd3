"""The names the CCI v2 dialect is known by: its API group and version, the ImageSnapshot
kind and its plural. They sit in a module of their own because nearly every other module of
the dialect spells them (Status details, rendered objects, discovery, OpenAPI, route paths),
and keeping them apart lets the error and object modules share them without importing each
other.
"""

from __future__ import annotations

GROUP, VERSION = "cci", "v2"
API_VERSION = f"{GROUP}/{VERSION}"
KIND, LIST_KIND = "ImageSnapshot", "ImageSnapshotList"
PLURAL, SINGULAR = "imagesnapshots", "imagesnapshot"
