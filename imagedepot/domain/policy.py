"""Who may do what: roles map to actions named as the clouds name them.

Every route of every dialect declares exactly one action (`cce:imageCache:delete`,
`cci:imagesnapshot:list`, `registry:pull`, …); a role allows an action when one of
its patterns matches it (`*` matches within and across segments, as IAM policies
write `cce:*:list`). The operator can replace the default mapping with a file.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass

from imagedepot.domain.errors import InvalidInput
from imagedepot.domain.identity import Role

READ_ACTIONS = ("*:list", "*:get", "*:watch", "*:download", "registry:pull")
UNAUDITED_ACTIONS = (*READ_ACTIONS, "cimg:result")
"""Actions that only read, whatever HTTP method carries them (DiDi lists with a POST;
`cimg:result` polls a job): the audit log records every other action."""


def is_read(action: str) -> bool:
    """Whether `action` only reads (and so stays out of the audit log)."""
    return any(fnmatch.fnmatchcase(action, pattern) for pattern in UNAUDITED_ACTIONS)


DEFAULT_RULES: Mapping[Role, tuple[str, ...]] = {
    Role.ADMIN: ("*",),
    Role.MEMBER: (
        "cce:*",
        "cci:*",
        "ims:*",
        "cimg:*",
        "registry:*",
        "secrets:list",
        "secrets:create",
        "secrets:delete",
    ),
    Role.READER: READ_ACTIONS,
}
"""Members change everything but cannot read secret data back (as RBAC on secrets does);
readers only look."""


@dataclass(frozen=True)
class Policy:
    rules: Mapping[Role, tuple[str, ...]]

    def allows(self, role: Role, action: str) -> bool:
        return any(fnmatch.fnmatchcase(action, pattern) for pattern in self.rules.get(role, ()))

    @classmethod
    def default(cls) -> Policy:
        return cls(DEFAULT_RULES)

    @classmethod
    def from_document(cls, document: object) -> Policy:
        """`{"roles": {"reader": ["*:list", …], …}}`; roles left out keep their defaults."""
        if not isinstance(document, dict) or not isinstance(document.get("roles"), dict):
            raise InvalidInput('policy must be {"roles": {ROLE: [ACTION PATTERN, …]}}')
        rules = dict(DEFAULT_RULES)
        for name, patterns in document["roles"].items():
            try:
                role = Role(name)
            except ValueError:
                raise InvalidInput(f"policy names an unknown role {name!r}") from None
            if not isinstance(patterns, list) or not all(isinstance(p, str) for p in patterns):
                raise InvalidInput(f"policy for role {name!r} must be a list of strings")
            rules[role] = tuple(patterns)
        return cls(rules)
