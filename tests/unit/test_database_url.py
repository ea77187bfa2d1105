"""`--database` URLs: which names mean which driver, and what a bad one says."""

from __future__ import annotations

import pytest

from osimage.server.db.engine import DatabaseConfigError, database_url


@pytest.mark.parametrize(
    ("given", "driver"),
    [
        ("postgresql://u:pw@db.example/images", "postgresql+asyncpg"),
        ("postgres://u:pw@db.example/images", "postgresql+asyncpg"),
        ("postgresql+asyncpg://u@db.example/images", "postgresql+asyncpg"),
        ("sqlite:///var/lib/osimage/osimage.db", "sqlite+aiosqlite"),
        ("sqlite+aiosqlite:///osimage.db", "sqlite+aiosqlite"),
    ],
)
def test_each_spelling_maps_to_the_driver_osimage_speaks(given: str, driver: str) -> None:
    url = database_url(given)
    assert url.drivername == driver
    assert url.database is not None
    assert url.database == given.rpartition("/")[2] or url.database.endswith(".db")


def test_the_rest_of_the_url_is_kept() -> None:
    url = database_url("postgres://user:s3cret@db.example:6543/images?ssl=require")
    assert (url.username, url.password, url.host, url.port) == (
        "user",
        "s3cret",
        "db.example",
        6543,
    )
    assert (url.database, dict(url.query)) == ("images", {"ssl": "require"})


@pytest.mark.parametrize(
    ("given", "says"),
    [
        ("mysql://u@db/images", "unknown database 'mysql' (known: sqlite://, postgresql://)"),
        ("postgresql+psycopg2://u@db/images", "speaks postgresql through asyncpg, not psycopg2"),
        ("not a url", "not a URL"),
    ],
)
def test_a_url_that_cannot_work_is_refused_saying_why(given: str, says: str) -> None:
    with pytest.raises(DatabaseConfigError, match=says.replace("(", r"\(").replace(")", r"\)")):
        database_url(given)


def test_a_refused_url_never_shows_its_password() -> None:
    with pytest.raises(DatabaseConfigError) as caught:
        database_url("oracle://user:s3cret@db/images")
    assert "s3cret" not in str(caught.value)
    with pytest.raises(DatabaseConfigError) as caught:
        database_url("user:s3cret@db")
    assert "s3cret" not in str(caught.value)
