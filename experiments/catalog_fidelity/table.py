"""Write experiments/catalog_fidelity/README.md: one row per catalog row (S01-S78)
with the paper's claim, the test that checks it, and that test's result now.

    python experiments/catalog_fidelity/table.py            # runs the claim tests (pytest), then writes the README
    python experiments/catalog_fidelity/table.py --no-run   # the table without results

The claims and test ids come from archgram/catalog_fidelity.tsv (kept by hand
after reading each paper); fidelity is the same column `archgram catalog` shows.
"""
from __future__ import annotations

import argparse
import datetime
import json
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from archgram.catalog import rows  # noqa: E402

HEADER = """# Catalog fidelity: each seed paper's claim and the test that checks it

Every catalog row (S01-S78, `archgram catalog`) was read against its paper. The
implementing class's docstring says what the paper's defining mechanism is,
what archgram does, and what differs; the fidelity column is one of
`faithful`, `simplified: <what, why it is forced in a grammar op, what a user
loses>` or `n/a`. Each row names one behavioural test of the paper's claim
(an equivalence to a reference formula, an invariance, a complexity bound
measured across sizes, or a small reproduction), never a shape- or
gradient-only check. The source of this table is `archgram/catalog_fidelity.tsv`;
`tests/cli/test_catalog.py` fails when a row lacks an entry or names a test
that does not exist.

Reproduce (2-core CPU machine, a few minutes):

```
python experiments/catalog_fidelity/table.py
```
"""


def run_tests(ids: list[str]) -> dict[str, str]:
    """Test id -> 'passed' / 'failed' / 'skipped' / 'error', from one pytest run."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.jsonl"
        plugin = Path(tmp) / "outcomes.py"
        plugin.write_text(
            "import json\n"
            f"OUT = {str(report)!r}\n"
            "def pytest_runtest_logreport(report):\n"
            "    if report.when == 'call' or report.outcome != 'passed':\n"
            "        with open(OUT, 'a') as fh:\n"
            "            fh.write(json.dumps([report.nodeid, report.outcome]) + '\\n')\n"
        )
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "outcomes", "-o", "addopts=", "-m", "",
               "-n", "2", *sorted(set(ids))]
        subprocess.run(cmd, cwd=ROOT, env={**__import__("os").environ, "PYTHONPATH": f"{tmp}:{ROOT}"})
        outcomes: dict[str, str] = {}
        if report.exists():
            for line in report.read_text().splitlines():
                nodeid, outcome = json.loads(line)
                base = nodeid.split("[")[0]
                if outcomes.get(base) != "failed":  # a parametrised test fails if any case fails
                    outcomes[base] = outcome
    return outcomes


def cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--no-run", action="store_true", help="write the table without running the tests")
    args = ap.parse_args()
    table = rows()
    results = {} if args.no_run else run_tests([r.claim_test for r in table if r.claim_test])
    counts: dict[str, int] = {}
    lines = ["| row | paper | fidelity | paper claim | test that checks it | result |", "|---|---|---|---|---|---|"]
    for r in table:
        kind = r.fidelity.split(":")[0]
        counts[kind] = counts.get(kind, 0) + 1
        result = results.get(r.claim_test, "not run" if args.no_run else "missing") if r.claim_test else "-"
        lines.append(f"| {r.id} | {cell(r.paper)} | {cell(r.fidelity)} | {cell(r.claim) or '-'} | "
                     f"`{r.claim_test}` | {result} |" if r.claim_test else
                     f"| {r.id} | {cell(r.paper)} | {cell(r.fidelity)} | {cell(r.claim) or '-'} | - | - |")
    passed = sum(v == "passed" for v in results.values())
    stamp = (f"Results of {datetime.date.today()} on {platform.machine()} / Python {platform.python_version()}: "
             f"{passed} of {len(results)} claim tests passed. Fidelity: "
             + ", ".join(f"{n} {k}" for k, n in sorted(counts.items())) + ".")
    out = Path(__file__).with_name("README.md")
    out.write_text(HEADER + "\n" + ("" if args.no_run else stamp + "\n\n") + "\n".join(lines) + "\n")
    print(f"wrote {out}" + ("" if args.no_run else f" ({stamp})"))


if __name__ == "__main__":
    main()
