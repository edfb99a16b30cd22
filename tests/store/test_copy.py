"""`python -m core store copy --to postgresql://...`: a team's SQLite history moved into Postgres,
checked by count and checksum, idempotent, all or nothing."""
from __future__ import annotations

import psycopg
import pytest

from core import export
from core.cli import main
from core.config import load_settings
from core.store import open_store
from core.store.copy import TABLES
from tests.review_support import completed_batch

SCHNELL = "fal-ai/flux/schnell"
EDIT = "fal-ai/flux-2/lora/edit"


def _counts(url: str) -> dict[str, int]:
    with psycopg.connect(url) as conn:
        return {t: conn.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t, _ in TABLES}


@pytest.fixture
def history(isolated_env):
    """A SQLite store with what a team has after a while: two batches (one with a reference
    photo), a re-run, votes, an audit line and a limit."""
    batch, groups, by_group = completed_batch("first")
    completed_batch("second", models=(SCHNELL,))
    settings = load_settings()
    with open_store(settings) as st:
        first = by_group[groups[0].id]
        st.add_vote(group_id=groups[0].id, rater="ana@example.com", left_request_id=first[SCHNELL].id,
                    right_request_id=first[EDIT].id, verdict="left", winner=SCHNELL, note=None)
        st.rerun_request(first[SCHNELL].id, created_by="ana@example.com")
        st.set_limit("DASHBOARD_BUDGET_USD_PER_DAY", 12.5, by="admin@example.com")
    return settings


def test_a_copy_moves_every_table_and_the_postgres_store_exports_the_same_file(history, pg_url, capsys):
    assert main(["store", "copy", "--to", pg_url]) == 0
    out = capsys.readouterr().out
    assert out.count(" ok") == len(TABLES) and "every table checked" in out
    with open_store(history) as lite, open_store(pg_url) as team:
        for table, _ in TABLES:
            n = lite.db.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0]
            assert team.db.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0] == n + (table == "audit")
        assert export.to_csv_bytes(team) == export.to_csv_bytes(lite)
        assert [v.id for v in team.list_votes()] == [v.id for v in lite.list_votes()]
        assert [b.id for b in team.list_batches()] == [b.id for b in lite.list_batches()]
        assert [r.id for r in team.list_references()] == [r.id for r in lite.list_references()]
        copied = team.audit_entries(action="store.")
        assert len(copied) == 1 and "requests" in copied[0].detail
    # the password of --to is never printed
    assert "postgres@" not in out


def test_a_second_copy_writes_nothing_and_a_later_one_brings_changed_rows_up_to_date(history, pg_url, capsys):
    assert main(["store", "copy", "--to", pg_url]) == 0
    first = _counts(pg_url)
    capsys.readouterr()
    assert main(["store", "copy", "--to", pg_url]) == 0
    again = capsys.readouterr().out
    assert _counts(pg_url) == {**first, "audit": first["audit"] + 1}   # only the copy's own line
    assert all(" 0 added" in line and " 0 updated" in line for line in again.splitlines() if " ok" in line)
    with open_store(history) as lite:
        planned = [r for r in lite.batch_requests(lite.list_batches()[-1].id) if r.status == "planned"] or \
            [r for b in lite.list_batches() for r in lite.batch_requests(b.id) if r.status == "planned"]
        lite.mark_cancelled(planned[0].id)
    assert main(["store", "copy", "--to", pg_url]) == 0
    later = capsys.readouterr().out
    assert any(line.startswith("requests") and " 1 updated" in line for line in later.splitlines()), later
    with open_store(pg_url) as team:
        assert team.get_request(planned[0].id).status == "cancelled"


def test_a_row_postgres_refuses_writes_nothing_and_says_which_table(history, pg_url, capsys):
    with open_store(history) as lite:   # SQLite keeps any value in any column; Postgres does not
        lite.db.execute("UPDATE result_images SET width = 'wide' WHERE rowid = (SELECT min(rowid) FROM result_images)")
    before = _counts(pg_url)
    assert main(["store", "copy", "--to", pg_url]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: the result_images table could not be copied") and "nothing was written" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert _counts(pg_url) == before


@pytest.mark.parametrize("argv,says", [
    (["store", "copy", "--to", "mysql://x@y/z"], "--to must be a Postgres URL"),
    (["store", "copy", "--to", "postgresql://127.0.0.1:9/nope", "--from", "/nonexistent/dashboard.db"],
     "there is no SQLite store"),
])
def test_bad_arguments_get_one_line(isolated_env, argv, says, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert says in err and len(err.strip().splitlines()) == 1
