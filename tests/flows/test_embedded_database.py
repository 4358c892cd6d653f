"""The embedded API's template database: the first new database is kept, later ones copy it."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from flows import embedded


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _migrated(db: Path) -> sqlite3.Connection:
    """A database as a server leaves it once it answers: WAL mode, rows still in the WAL."""
    db.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE alembic_version (version_num TEXT)")
    conn.execute("INSERT INTO alembic_version VALUES ('head')")
    conn.commit()
    return conn  # left open: the server still holds it


def _rows(db: Path) -> list[tuple]:
    with closing(sqlite3.connect(db)) as conn:
        return conn.execute("SELECT version_num FROM alembic_version").fetchall()


def test_the_first_new_database_becomes_the_template_and_later_ones_start_from_it(
    tmp_path, cache
) -> None:
    first = tmp_path / "work-a" / "prefect" / "prefect.db"
    assert embedded.seed_database(first) is True  # no template yet: the server creates it
    assert not first.exists()
    server = _migrated(first)
    embedded.save_template(first)  # while the server still has it open
    server.close()
    template = embedded.template_path()
    assert template.is_relative_to(cache / "colorfeat") and "prefect-" in template.parent.name
    assert _rows(template) == [("head",)]
    assert [p.name for p in template.parent.iterdir()] == ["prefect.db"]  # no part file left

    second = tmp_path / "work-b" / "prefect" / "prefect.db"
    second.parent.mkdir(parents=True)
    assert embedded.seed_database(second) is False
    assert _rows(second) == [("head",)]


def test_an_existing_database_is_never_replaced_and_a_template_never_overwritten(
    tmp_path, cache
) -> None:
    _migrated(tmp_path / "a" / "prefect.db").close()
    embedded.save_template(tmp_path / "a" / "prefect.db")
    template = embedded.template_path().read_bytes()
    other = _migrated(tmp_path / "b" / "prefect.db")
    other.execute("UPDATE alembic_version SET version_num = 'other'")
    other.commit()
    other.close()
    embedded.save_template(tmp_path / "b" / "prefect.db")
    assert embedded.template_path().read_bytes() == template
    assert embedded.seed_database(tmp_path / "b" / "prefect.db") is False
    assert _rows(tmp_path / "b" / "prefect.db") == [("other",)]


def test_a_cache_that_cannot_be_written_only_costs_the_migrations(tmp_path, monkeypatch) -> None:
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "file"))  # a file, not a folder
    _migrated(tmp_path / "a" / "prefect.db").close()
    embedded.save_template(tmp_path / "a" / "prefect.db")  # no error
    assert not embedded.template_path().exists()
    assert embedded.seed_database(tmp_path / "b" / "prefect.db") is True


def test_a_damaged_template_is_not_copied_and_is_made_again(tmp_path, cache) -> None:
    _migrated(tmp_path / "a" / "prefect.db").close()
    embedded.save_template(tmp_path / "a" / "prefect.db")
    embedded.template_path().write_bytes(b"SQLite format 3\x00" + b"\xff" * 500)  # damaged
    fresh = tmp_path / "b" / "prefect.db"
    fresh.parent.mkdir()
    assert embedded.seed_database(fresh) is True and not fresh.exists()  # the server migrates
    _migrated(fresh).close()
    embedded.save_template(fresh)
    assert _rows(embedded.template_path()) == [("head",)]
