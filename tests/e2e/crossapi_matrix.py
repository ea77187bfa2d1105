"""The v1 <-> v2 matrix as data: what was done through one API x what the other API shows.

Each scenario builds one fresh image on a tokens server (alice of p-alice owns it unless
noted; bob of p-bob is the other project; admin has the admin role), through the API its
name starts with. Each probe reads it through the other API, as the identity it names.
Sources: spec §18 (queens' one catalogue) and the osimage decisions in docs/protocol.md.

Scenarios (DATA is 14 bytes; "with data" means uploaded through the scenario's API):
  v1-private        v1 POST, is_public False, with data, property os_distro=ubuntu and an
                    empty property `note`; then a v1 PUT (purge-props false) sending the
                    header X-Image-Meta-Property-OS-Type: linux
  v1-default        v1 POST without is_public, without data (a reservation)
  v1-public         v1 POST by admin, owner p-alice, is_public True, with data
  v1-member         v1-private, then v1 PUT members/p-bob (no body)
  v1-member-acc     v1-member, then bob accepts through v2
  v1-deleted        v1-private, then v1 DELETE
  v1-shares-private v2 POST visibility private, then v1 PUT is_public False
  v1-purges         v2 POST with property keep=1, then v1 PUT with property other=2 (no
                    x-glance-registry-purge-props: false)
  v1-uploads        v2 POST (a reservation), then the data through v1 PUT
  v1-publishes      v2 POST visibility private, then admin's v1 PUT is_public True
  v1-replaces       v2-member-acc, then v1 PUT members [p-bob, p-carol] (replace-all)
  v2-uploads        v1 POST without data, then the data through v2 PUT /file
  v2-private        v2 POST visibility private, os_distro=ubuntu, then data through v2
  v2-shared         v2 POST (default visibility), no data
  v2-public         v2 POST by admin, owner p-alice, visibility public, with data
  v2-community      v2 POST visibility community, with data
  v2-member         v2-shared, then v2 POST members p-bob (pending)
  v2-member-rej     v2-member, then bob rejects through v2
  v2-member-acc     v2-member, then bob accepts through v2
  v2-tagged         v2-private, then v2 PUT tags/blue
  v2-hidden         v2 POST os_hidden true, no data
  v2-deleted        v2-private, then v2 DELETE
  v2-deactivated    v2-private, then v2 POST actions/deactivate

Probes answer a short string: a field's value (`none` for null or absent), `yes`/`no`
for presence in a list, a status code, or for checksums `md5`/`sha512` when the value is
that digest of DATA.
"""

from __future__ import annotations

# A `#` starts a comment; each row: scenario, probe, expected answer.
TABLE = """
# --- written through v1, read through v2 -------------------------------------------
v1-private         v2:visibility           shared    # is_public False -> shared (§18.2)
v1-private         v2:status               active
v1-private         v2:size                 14
v1-private         v2:checksum             md5
v1-private         v2:os_hash_algo         sha512    # v1 uploads compute the multihash (§18.6)
v1-private         v2:os_hash_value        sha512
v1-private         v2:owner                p-alice
v1-private         v2:os_distro            ubuntu    # properties are top-level keys in v2
v1-private         v2:note                 ""        # an empty v1 property reads "" (§18.4)
v1-private         v2:os_type              linux     # header name lower-cased, - -> _ (§18.4)
v1-private         v2:data                 200
v1-private         v2-bob:show             404
v1-default         v2:visibility           shared    # no is_public -> shared
v1-default         v2:status               queued
v1-default         v2:data                 204       # no data yet
v1-public          v2:visibility           public
v1-public          v2-bob:show             200
v1-public          v2-bob:list             yes
v1-member          v2:members              p-bob=pending   # v1 members are pending (§18.5)
v1-member          v2-bob:show             200       # any member status may read
v1-member          v2-bob:data             200
v1-member          v2-bob:list             no        # pending: not in the default list
v1-member          v2-bob:list-pending     yes
v1-member-acc      v2-bob:list             yes
v1-member-acc      v2:members              p-bob=accepted
v1-member-acc      v1-bob:list             yes
v1-deleted         v2:show                 404       # deleted images are 404 in v2
v1-deleted         v2:list                 no
v1-deleted         v2-admin:show           404
v1-shares-private  v2:visibility           shared    # is_public False turns private into shared
v1-purges          v2:keep                 none      # a v1 PUT replaces every property
v1-purges          v2:other                2
v1-uploads         v2:status               active    # either API fills the other's reservation
v1-uploads         v2:size                 14
v1-uploads         v2:checksum             md5
v1-uploads         v2:os_hash_value        sha512
v1-uploads         v2:data                 200
v1-publishes       v2:visibility           public
v1-publishes       v2-bob:show             200
v1-replaces        v2:members              p-bob=accepted,p-carol=pending  # kept rows keep status

# --- written through v2, read through v1 -------------------------------------------
v2-uploads         v1:status               active
v2-uploads         v1:size                 14
v2-uploads         v1:checksum             md5
v2-uploads         v1:data                 200
v2-private         v1:is_public            False
v2-private         v1:status               active
v2-private         v1:size                 14
v2-private         v1:checksum             md5
v2-private         v1:os_distro            ubuntu
v2-private         v1:data                 200
v2-private         v1-bob:head             404
v2-private         v1-bob:list             no
v2-shared          v1:is_public            False
v2-shared          v1:status               queued
v2-shared          v1:size                 none      # null in v2 -> no size header (§18.6)
v2-public          v1:is_public            True
v2-public          v1-bob:head             200
v2-public          v1-bob:list             yes
v2-community       v1:is_public            False
v2-community       v1-bob:head             200       # readable by everyone (§18.3)
v2-community       v1-bob:list             no        # listed to the owner only
v2-community       v1:list                 yes
v2-member          v1:members              p-bob     # a v2 member shows in v1 (no status there)
v2-member          v1-bob:head             200
v2-member          v1-bob:list             yes       # v1 ignores member status (§18.3)
v2-member-rej      v1-bob:list             yes
v2-member-rej      v1-bob:head             200
v2-member-acc      v1-bob:list             yes
v2-tagged          v1:tags                 none      # tags are invisible in v1
v2-tagged          v1:list                 yes
v2-hidden          v1:list                 yes       # v1 neither filters nor shows os_hidden
v2-hidden          v1:os_hidden            none
v2-deleted         v1:head                 404
v2-deleted         v1-admin:status         deleted   # admins still HEAD a deleted record in v1
v2-deleted         v1:list                 no
v2-deactivated     v1:status               deactivated
v2-deactivated     v1:data                 403       # 403 for everyone in v1 (§18.7)
v2-deactivated     v1-admin:data           403
"""


def _parse(table: str) -> list[tuple[str, str, str]]:
    rows: list[tuple[str, str, str]] = []
    for line in table.splitlines():
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        scenario, probe, expected = words
        rows.append((scenario, probe, "" if expected == '""' else expected))
    return rows


CELLS = _parse(TABLE)
SCENARIOS = tuple(dict.fromkeys(scenario for scenario, _, _ in CELLS))
