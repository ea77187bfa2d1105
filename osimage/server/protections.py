"""Property protections (§13.2): which roles may create, read, update or delete a property.

Rules come from an INI file whose section names are regular expressions over property
keys; the first section whose expression matches a key (``re.search``) decides, and a
key that no section matches is protected from everyone. Each section names the roles
allowed per operation, ``@`` for every caller and ``!`` for none.
"""

from __future__ import annotations

import configparser
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from osimage.server.errors import Forbidden

OPERATIONS: Final = ("create", "read", "update", "delete")
EVERYONE: Final = "@"
NOBODY: Final = "!"


@dataclass(frozen=True)
class Rule:
    """One section: the keys it covers and, per operation, the roles allowed (None: all)."""

    pattern: re.Pattern[str]
    allowed: Mapping[str, frozenset[str] | None]


def _roles(path: Path, section: str, operation: str, text: str) -> frozenset[str] | None:
    roles = frozenset(role.strip() for role in text.split(",") if role.strip())
    where = f"{path}: [{section}] {operation}"
    if EVERYONE in roles and NOBODY in roles:
        raise ValueError(f"{where}: '@' and '!' cannot both be given")
    if EVERYONE in roles:
        return None
    return frozenset() if NOBODY in roles else roles


@dataclass(frozen=True)
class Protections:
    """The rules of one property protection file, in file order."""

    rules: tuple[Rule, ...]

    @classmethod
    def load(cls, path: Path) -> Protections:
        """Read `path`; raises ValueError naming the file and section for anything unusable."""
        parser = configparser.ConfigParser(interpolation=None, default_section="\x00")
        try:
            with path.open(encoding="utf-8") as handle:
                parser.read_file(handle)
        except OSError as exc:
            raise ValueError(f"cannot read the property protection file {path}: {exc}") from None
        except configparser.Error as exc:
            raise ValueError(f"{path}: {exc.message}") from None
        rules: list[Rule] = []
        for section in parser.sections():
            try:
                pattern = re.compile(section)
            except re.error as exc:
                raise ValueError(
                    f"{path}: [{section}] is not a regular expression: {exc}"
                ) from None
            options = parser[section]
            unknown = set(options) - set(OPERATIONS)
            if unknown:
                raise ValueError(
                    f"{path}: [{section}] has unknown keys: {', '.join(sorted(unknown))}"
                )
            missing = [op for op in OPERATIONS if op not in options]
            if missing:
                raise ValueError(f"{path}: [{section}] needs {', '.join(missing)}")
            allowed = {op: _roles(path, section, op, options[op]) for op in OPERATIONS}
            rules.append(Rule(pattern, allowed))
        return cls(tuple(rules))

    def allows(self, roles: frozenset[str], key: str, operation: str) -> bool:
        """Whether a caller with `roles` may do `operation` on the property `key`."""
        for rule in self.rules:
            if rule.pattern.search(key):
                allowed = rule.allowed[operation]
                return allowed is None or not allowed.isdisjoint(roles)
        return False

    def readable(
        self, roles: frozenset[str], properties: Mapping[str, str | None]
    ) -> dict[str, str | None]:
        """The properties a caller with `roles` may see."""
        return {k: v for k, v in properties.items() if self.allows(roles, k, "read")}

    def check_create(self, roles: frozenset[str], given: Mapping[str, str | None]) -> None:
        """Raise Forbidden (403) for the first key of a new image the caller may not create."""
        for key in given:
            if not self.allows(roles, key, "create"):
                raise Forbidden(f"Property '{key}' is protected")

    def check_update(
        self,
        roles: frozenset[str],
        current: Mapping[str, str | None],
        given: Mapping[str, str | None],
        *,
        purge: bool,
    ) -> dict[str, str | None]:
        """Check a PUT's properties against the image's; return what to write.

        A key already set needs read, and update unless its value stays the same; a new
        key needs create. A purge removes only keys the caller can read, and needs
        delete for those; keys it cannot read are kept, so they are added to the result.
        """
        for key, value in given.items():
            if key in current:
                readable = self.allows(roles, key, "read")
                changed = current[key] != value
                if not readable or (changed and not self.allows(roles, key, "update")):
                    raise Forbidden(f"Property '{key}' is protected")
            elif not self.allows(roles, key, "create"):
                raise Forbidden(f"Property '{key}' is protected")
        result = dict(given)
        if purge:
            for key, value in current.items():
                if key in given:
                    continue
                if not self.allows(roles, key, "read"):
                    result[key] = value
                elif not self.allows(roles, key, "delete"):
                    raise Forbidden(f"Property '{key}' is protected")
        return result
