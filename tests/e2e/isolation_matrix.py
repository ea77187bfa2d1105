"""The tenant-isolation matrix as data: actor x image kind x operation -> expected answer.

Image kinds (all built fresh by the test, each holding data unless noted):
  private    owned by p-alice, not public; members p-carol (can_share) and p-dave (not)
  public     owned by p-alice, public (an admin creates it: only admins may publicize);
             the same two members
  ownerless  no owner, not public (created by an admin with an empty owner); same members

Actors (identities of the tokens file the test writes):
  admin      role admin, project p-admin         owner      alice, project p-alice
  sharer     carol, a member with can_share       member     dave, a member without it
  other      bob, a tenant with no relation       noproject  a non-admin without a project

Operations:
  HEAD, GET (data of the active image), PUT-META (name change), PUT-DATA (upload to a
  queued image of the kind), DELETE, LIST (in the caller's default /v1/images/detail),
  LIST-ALL (the same with is_public=none: only admins may widen), GET-MEMBERS,
  PUT-MEMBER (add p-zed), DELETE-MEMBER (remove p-extra, added beforehand),
  SHARED (does the image appear in GET /v1/shared-images/p-carol for this caller).

Answers are status codes, or `yes`/`no` for presence. Sources: spec §9.5, §9.6, §9.7, §10.
"""

from __future__ import annotations

ACTORS = ("admin", "owner", "sharer", "member", "other", "noproject")
KINDS = ("private", "public", "ownerless")

# The table. A `#` starts a comment; each row: operation, kind, then one answer per actor.
TABLE = """
# operation    kind       admin owner sharer member other noproject
HEAD           private    200   200   200    200    404   404
HEAD           public     200   200   200    200    200   200
HEAD           ownerless  200   200   200    200    200   200    # no owner: visible to all
GET            private    200   200   200    200    404   404
GET            public     200   200   200    200    200   200
GET            ownerless  200   200   200    200    200   200

# Mutation (PUT, DELETE) needs admin or the owner. A caller who can see but not modify
# a non-public image (a member, anyone on an ownerless image) gets 500 from queens
# (spec §19); osimage answers 404: the image is not visible *for modification*.
# Public images give 403 to non-owners (spec §9.5, §9.6).
PUT-META       private    200   200   404    404    404   404
PUT-META       public     200   200   403    403    403   403
PUT-META       ownerless  200   404   404    404    404   404
PUT-DATA       private    200   200   404    404    404   404
PUT-DATA       public     200   200   403    403    403   403
PUT-DATA       ownerless  200   404   404    404    404   404
DELETE         private    200   200   404    404    404   404
DELETE         public     200   200   403    403    403   403
DELETE         ownerless  200   404   404    404    404   404

# Default lists: public + own + shared-with-me; an admin by default sees what a non-admin
# of its project would (so not alice's private image); ownerless private images are
# never listed to non-admins (spec §10.2).
LIST           private    no    yes   yes    yes    no    no
LIST           public     yes   yes   yes    yes    yes   yes
LIST           ownerless  no    no    no     no     no    no
LIST-ALL       private    yes   yes   yes    yes    no    no     # is_public ignored for non-admins
LIST-ALL       public     yes   yes   yes    yes    yes   yes
LIST-ALL       ownerless  yes   no    no     no     no    no

# Members: visible image -> 200 (a non-owner sees only their own entry).
GET-MEMBERS    private    200   200   200    200    404   404
GET-MEMBERS    public     200   200   200    200    200   200
GET-MEMBERS    ownerless  200   200   200    200    200   200

# Changing members: a project-less non-admin -> 401 first; then sharers only (admin, owner,
# a member with can_share); anyone else -> 404 (spec §9.7).
PUT-MEMBER     private    204   204   204    404    404   401
PUT-MEMBER     public     204   204   204    404    404   401
PUT-MEMBER     ownerless  204   404   204    404    404   401
DELETE-MEMBER  private    204   204   204    404    404   401
DELETE-MEMBER  public     204   204   204    404    404   401
DELETE-MEMBER  ownerless  204   404   204    404    404   401

# shared-images/p-carol: admins see all; others see memberships on images they own and
# their own memberships. A project-less caller owns nothing, not even ownerless images
# (queens' "owner IS NULL" match would leak those; osimage must not).
SHARED         private    yes   yes   yes    no     no    no
SHARED         public     yes   yes   yes    no     no    no
SHARED         ownerless  yes   no    yes    no     no    no
"""

Answer = int | str


def _parse(table: str) -> dict[tuple[str, str, str], Answer]:
    out: dict[tuple[str, str, str], Answer] = {}
    for line in table.splitlines():
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        operation, kind, *answers = words
        assert kind in KINDS, line
        assert len(answers) == len(ACTORS), line
        for actor, answer in zip(ACTORS, answers, strict=True):
            out[(operation, kind, actor)] = int(answer) if answer.isdigit() else answer
    return out


EXPECTED = _parse(TABLE)
OPERATIONS = tuple(dict.fromkeys(op for op, _, _ in EXPECTED))
