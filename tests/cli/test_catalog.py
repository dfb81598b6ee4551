"""`archgram catalog` reads row status from the registries and the test suite."""
from __future__ import annotations

import json
import textwrap

from archgram.catalog import catalog, rows
from archgram.catalog import tests_by_ref as refs_in_tests
from archgram.cli import run


def test_the_catalog_has_all_78_rows():
    ids = [r.id for r in rows()]
    assert ids == [f"S{i:02d}" for i in range(1, 79)]


def test_status_comes_from_registries_and_tests(tmp_path):
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_x.py").write_text(textwrap.dedent('''
        def test_sigmoid_bias():
            """Sigmoid attention (S06) matches its formula."""

        def test_unrelated():
            pass
    '''))
    found = refs_in_tests(tmp_path / "tests")
    assert found == {"S06": ["tests/test_x.py::test_sigmoid_bias"]}
    table = {r.id: r for r in catalog(tmp_path / "tests")}
    assert table["S06"].status == "implemented" and "score:sigmoid" in table["S06"].implementations
    assert table["S57"].status == "partial"  # registered ops, but no test in this folder names S57
    unimplemented = [r for r in table.values() if not r.implementations]  # rows nobody registers yet
    assert all(r.status == "missing" for r in unimplemented)  # and no test in this folder names them


def test_catalog_json_lists_objects(capsys):
    assert run(["catalog", "--json", "--status", "implemented"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data and all(set(r) >= {"id", "status", "ops", "tests"} for r in data)
    assert all(r["status"] == "implemented" for r in data)
    assert any(r["id"] == "S57" for r in data)


def test_unknown_status_is_a_one_line_error(capsys):
    assert run(["catalog", "--status", "done"]) == 2
    assert "unknown status 'done'" in capsys.readouterr().err


def test_every_row_has_a_well_formed_fidelity_entry():
    from archgram.catalog import FIDELITY, fidelity_entries

    entries = fidelity_entries()
    assert sorted(entries) == [f"S{i:02d}" for i in range(1, 79)]
    bad = {k: e["fidelity"] for k, e in entries.items() if not FIDELITY.match(e["fidelity"] or "")}
    assert not bad, f"fidelity must be faithful, n/a or 'simplified: <reason>': {bad}"


def test_each_reviewed_row_names_a_claim_test_that_exists():
    """A reviewed row's claim test is a real test function in the suite, and names its row."""
    from archgram.catalog import default_tests_dir

    folder = default_tests_dir()
    found = refs_in_tests(folder)
    for row in rows():
        if row.fidelity in ("unreviewed", "n/a"):
            continue
        assert row.claim and row.claim_test, f"{row.id}: reviewed row without a claim and its test"
        assert row.claim_test in found.get(row.id, []), f"{row.id}: {row.claim_test} does not exist or does not name {row.id}"
