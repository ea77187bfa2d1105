"""Who may do what, as rules in an oslo.policy file with the rule names Glance uses.

`Policy.enforce(ctx, action, target)` is the one call the core makes before an action;
oslo.policy's `Enforcer` evaluates it. The defaults (`DEFAULTS`) allow what the service
allowed before there was a policy file: ownership and visibility are still decided by the
service, the policy only adds gates an operator writes (``"delete_image": "role:admin"``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from osimage.server.errors import Forbidden

if TYPE_CHECKING:
    from osimage.server.auth import Context
    from osimage.server.db.catalog import ImageRow


@dataclass(frozen=True)
class Rule:
    """A default rule: its name, its oslo.policy check string, and what it guards."""

    name: str
    check: str
    description: str


# `is_admin` in the credentials is the caller's admin status as osimage decides it (the
# --admin-role role; every caller under noauth), so this default matches the service's.
DEFAULTS: Final = (
    Rule("context_is_admin", "is_admin:True", "Who is an admin (the --admin-role role)."),
    Rule("default", "", "The rule for an action that names no rule of its own."),
    Rule("add_image", "", "Create an image (v1 POST /images)."),
    Rule("get_image", "", "Show an image or its metadata (v1 GET/HEAD /images/{id})."),
    Rule("get_images", "", "List images (v1 GET /images, /images/detail)."),
    Rule("modify_image", "", "Update an image (v1 PUT /images/{id})."),
    Rule("delete_image", "", "Delete an image (v1 DELETE /images/{id})."),
    Rule("publicize_image", "rule:context_is_admin", "Make an image public."),
    Rule("communitize_image", "", "Give an image community visibility (v2)."),
    Rule("download_image", "", "Download image data (v1 GET /images/{id})."),
    Rule("upload_image", "", "Upload image data (v1 POST/PUT with a body)."),
    Rule("copy_from", "", "Have the service copy image data from a URL (x-glance-api-copy-from)."),
    Rule("set_image_location", "", "Register an external location (x-image-meta-location)."),
    Rule("add_member", "", "Share an image with a project (v1 PUT /images/{id}/members/{m})."),
    Rule("get_member", "", "Show one membership."),
    Rule("get_members", "", "List an image's members (v1 GET /images/{id}/members)."),
    Rule("modify_member", "", "Replace the member list (v1 PUT /images/{id}/members)."),
    Rule("delete_member", "", "Stop sharing with a project (v1 DELETE .../members/{m})."),
    Rule("deactivate", "", "Deactivate an image (v2)."),
    Rule("reactivate", "", "Reactivate an image (v2)."),
    Rule("cache_list", "rule:context_is_admin", "List the image cache (v2 GET /v2/cache)."),
    Rule("cache_delete", "rule:context_is_admin", "Delete cache entries (v2 DELETE /v2/cache)."),
    Rule("cache_image", "rule:context_is_admin", "Queue an image for caching (v2 PUT)."),
)

ACTIONS: Final = frozenset(rule.name for rule in DEFAULTS) - {"context_is_admin", "default"}


def defaults_yaml() -> str:
    """The default rules in oslo.policy's YAML format, each with its description."""
    lines = ["# osimage default policy (oslo.policy YAML); Glance's rule names."]
    for rule in DEFAULTS:
        lines += ["", f"# {rule.description}", f'"{rule.name}": "{rule.check}"']
    return "\n".join(lines) + "\n"


def credentials(ctx: Context) -> dict[str, Any]:
    """What a rule's left side (``role:``, ``project_id:``, ``is_admin:``) reads."""
    return {
        "user_id": ctx.user_id,
        "project_id": ctx.project_id,
        "tenant": ctx.project_id,  # older Glance policy files say %(tenant)s
        "roles": sorted(ctx.roles),
        "is_admin": ctx.is_admin,
    }


# What a rule reads about its object, or a function that builds it when a rule needs it
Target = Mapping[str, Any] | Callable[[], Mapping[str, Any]]


def image_target(row: ImageRow | None = None, **extra: Any) -> dict[str, Any]:
    """What a rule's right side (``%(owner)s``, ``%(visibility)s``...) reads about an image."""
    target: dict[str, Any] = {}
    if row is not None:
        target.update({key: str(value) for key, value in row.properties.items()})
        target.update(
            id=row.id,
            name=row.name,
            owner=row.owner,
            project_id=row.owner,
            status=row.status,
            visibility="public" if row.is_public else "private",
            is_public=row.is_public,
            protected=row.protected,
            disk_format=row.disk_format,
            container_format=row.container_format,
        )
    target.update(extra)
    return target


class Policy:
    """An oslo.policy `Enforcer` over `DEFAULTS` and, if given, an operator's policy file.

    The file is read at start (a bad file stops the server, naming it) and re-read by
    oslo.policy when it changes, so an operator can edit it without a restart.
    """

    def __init__(self, policy_file: Path | None = None) -> None:
        from oslo_config import cfg
        from oslo_policy import policy

        conf = cfg.ConfigOpts()
        # no config files or directories: every option is set here
        conf([], project="osimage", default_config_files=[], default_config_dirs=[])
        self._enforcer = policy.Enforcer(
            conf,
            policy_file=str(policy_file) if policy_file is not None else None,
            use_conf=True,
            default_rule="default",
        )
        conf.set_override("policy_dirs", [], "oslo_policy")
        self._enforcer.register_defaults([policy.RuleDefault(r.name, r.check) for r in DEFAULTS])
        self.policy_file = policy_file
        # Rules that allow anyone, known not to change: answered without oslo.policy,
        # whose every check also inspects the check's signature (issue 14).
        self._open: frozenset[str] = frozenset()
        if policy_file is not None:
            if not policy_file.is_file():
                raise ValueError(f"--policy-file: no such file: {policy_file}")
            try:
                self._enforcer.load_rules(force_reload=True)
            except Exception as error:
                raise ValueError(f"--policy-file {policy_file}: {error}") from None
        else:
            self._enforcer.load_rules()
            # No file to watch: without this, every check searches the configuration
            # directories for a policy.yaml (a sixth of a HEAD's time, issue 14).
            self._enforcer.use_conf = False
            always = "@"  # how oslo.policy writes a check that allows anyone ("" in a rule)
            self._open = frozenset(
                name for name, rule in self._enforcer.rules.items() if str(rule) == always
            )

    def is_open(self, action: str) -> bool:
        """Whether the rule named `action` allows anyone, whatever the target."""
        return action in self._open

    def allowed(self, ctx: Context, action: str, target: Target | None = None) -> bool:
        """Whether the rule named `action` lets `ctx` act on `target`: what the rule reads,
        or a function that builds it, called only when a rule is evaluated."""
        if action in self._open:
            return True
        if callable(target):
            target = target()
        return bool(self._enforcer.enforce(action, dict(target or {}), credentials(ctx)))

    def enforce(
        self,
        ctx: Context,
        action: str,
        target: Target | None = None,
        *,
        message: str | None = None,
    ) -> None:
        """Raise `Forbidden` (403) unless the rule named `action` lets `ctx` act on `target`
        (as `allowed` takes it)."""
        if not self.allowed(ctx, action, target):
            raise Forbidden(message or f"You are not authorized to complete {action} action.")
