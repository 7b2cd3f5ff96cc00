#!/usr/bin/env python3
"""Check the alert queries (infra/queries/alert-*.kql) on the synthetic fixtures, with duckdb-kql.

    .venv/bin/python tests/kql/selfcheck.py

For every fixture under tests/kql/fixtures, each alert query must return rows exactly when the
fixture's fixture.json names it in "fires": none on `healthy`, at least one on its own failing
fixture, none on the others. Each runs twice, with requests.success loaded as a bool and as the
"True"/"False" text Microsoft's classic schema lists. Also: every alert has a fixture that fires it,
the committed fixtures are what make_fixtures.py writes, a run counts once (the copy of the
reconcile line in the timer's Logs is left out), the workbook queries run, and run_query.py exits 2
rather than printing an empty result when duckdb-kql cannot translate a query.

Ends with the line `selfcheck: N passed, N failed`; exits 1 if any failed.
"""

from __future__ import annotations

import filecmp
import json
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
QUERIES = REPO / "infra" / "queries"
FIXTURES = HERE / "fixtures"
sys.path.insert(0, str(HERE))

import make_fixtures  # noqa: E402
import run_query  # noqa: E402

passed = 0
failed = 0


def check(ok: bool, what: str) -> None:
    global passed, failed
    if ok:
        passed += 1
        print(f"ok    {what}")
    else:
        failed += 1
        print(f"FAIL  {what}")


def same_tree(a: Path, b: Path) -> bool:
    cmp = filecmp.dircmp(a, b)
    if cmp.left_only or cmp.right_only or cmp.funny_files:
        return False
    _, mismatch, errors = filecmp.cmpfiles(a, b, cmp.common_files, shallow=False)
    return not mismatch and not errors and all(same_tree(a / d, b / d) for d in cmp.common_dirs)


def main() -> int:
    alerts = {p.stem.removeprefix("alert-"): p for p in sorted(QUERIES.glob("alert-*.kql"))}
    fixtures = sorted(p for p in FIXTURES.iterdir() if (p / "fixture.json").is_file())
    check(len(alerts) == 7, f"7 alert queries in infra/queries (found {len(alerts)})")
    check(any(f.name == "healthy" for f in fixtures), "a healthy fixture")

    with tempfile.TemporaryDirectory() as tmp:
        make_fixtures.main([tmp])
        check(same_tree(Path(tmp), FIXTURES), "tests/kql/fixtures is what make_fixtures.py writes")

    fired_somewhere: set[str] = set()
    for fixture in fixtures:
        fires = set(json.loads((fixture / "fixture.json").read_text())["fires"])
        unknown = fires - set(alerts)
        check(not unknown, f"{fixture.name}: names only existing alerts {sorted(unknown) or ''}")
        fired_somewhere |= fires
        for name, path in alerts.items():
            query = path.read_text()
            for as_string in (False, True):
                label = f"{fixture.name}: alert-{name}" + (" (success as text)" if as_string else "")
                try:
                    rows = run_query.run(fixture, query, success_as_string=as_string)
                except run_query.TranslationError as exc:
                    check(False, f"{label}: duckdb-kql cannot translate it: {exc}")
                    continue
                want = name in fires
                check(bool(rows) == want, f"{label}: {len(rows)} row(s), {'fires' if want else 'quiet'} expected")
    for name in alerts:
        check(name in fired_somewhere, f"alert-{name} has a fixture that fires it")

    # One row per run: the timer's Logs repeat the reconcile line under another category.
    healthy = FIXTURES / "healthy"
    runs = run_query.run(healthy, (QUERIES / "workbook-reconcile-runs.kql").read_text())
    check(len(runs) == 3, f"workbook-reconcile-runs: each of healthy's 3 runs once (got {len(runs)})")
    drift = run_query.run(FIXTURES / "reconcile-drift", (QUERIES / "alert-reconcile-drift.kql").read_text())
    check(len(drift) == 1, f"alert-reconcile-drift: the drifting run once (got {len(drift)})")

    # The workbook queries need only pass the analyser, but these run here too.
    for path in sorted(QUERIES.glob("workbook-*.kql")):
        try:
            rows = run_query.run(healthy, path.read_text())
            check(bool(rows), f"healthy: {path.name} runs: {len(rows)} row(s)")
        except run_query.TranslationError as exc:
            check(False, f"healthy: {path.name}: duckdb-kql cannot translate it: {exc}")

    # The command line: rows as one JSON array; a query duckdb-kql refuses is exit 2, not [].
    cli = [sys.executable, str(HERE / "run_query.py")]
    out = subprocess.run(cli + [str(FIXTURES / "store-down"), str(alerts["store-unavailable"])],
                         capture_output=True, text=True)
    rows = json.loads(out.stdout) if out.returncode == 0 else None
    check(isinstance(rows, list) and rows and rows[0].get("failures") == 3,
          f"run_query.py prints the rows as a JSON array (exit {out.returncode})")
    with tempfile.NamedTemporaryFile("w", suffix=".kql", delete=False) as refused:
        refused.write("// percentiles() has no DuckDB mapping\nrequests | summarize percentiles(duration, 50, 99)\n")
    out = subprocess.run(cli + [str(healthy), refused.name], capture_output=True, text=True)
    Path(refused.name).unlink()
    check(out.returncode == 2 and out.stdout == "" and "cannot translate" in out.stderr,
          f"run_query.py exits 2 with a message on a query it cannot translate (exit {out.returncode}: {out.stderr.strip()})")

    print(f"selfcheck: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
