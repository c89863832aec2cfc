"""The per-module report of a mutation run (`scripts/mutants`).

mutmut keeps each module's results in `mutants/<path>.meta` (JSON: mutant name -> the
exit code of its test run). This reads them, takes away the mutants listed as equivalent
in `tests/mutants-equivalent.txt` (no test can tell them from the original; each listed
with a reason), and prints killed / survived / equivalent / total per module with the
share of non-equivalent mutants killed and the run time. Survivors are named so that
`mutmut show NAME` shows each.

Usage: python -m tests.support.mutation MODULE [MODULE ...]   (exit 1 under the target)
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent
EQUIVALENT_FILE = REPO / "tests" / "mutants-equivalent.txt"
TARGET = 90.0  # % of non-equivalent mutants killed, per module (issue 15)

# mutmut's exit codes (mutmut/stats.py): a failing test run, a timeout, a crash and a
# type-check rejection all mean a test told the mutant apart; 0 and "no tests" did not.
KILLED_CODES = frozenset({1, 3, 36, 37, 24, -24, 152, 255, -11, -9})
SURVIVED_CODES = frozenset({0, 5, 33})


class EquivalentListError(ValueError):
    """A line of the equivalent-mutant list without a reason."""


def read_equivalents(text: str) -> dict[str, str]:
    """`NAME  reason` per line; blank lines and `#` comments are ignored. A name without
    a reason is refused: the list is only worth reading if each entry says why."""
    found: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, _, reason = line.partition(" ")
        if not reason.strip():
            raise EquivalentListError(f"line {number}: {name} has no reason")
        found[name] = reason.strip()
    return found


@dataclass
class ModuleReport:
    module: str
    killed: int = 0
    survived: int = 0
    equivalent: int = 0
    unchecked: int = 0
    seconds: int | None = None
    survivors: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return self.killed + self.survived + self.equivalent + self.unchecked

    @property
    def score(self) -> float:
        """% of the non-equivalent mutants killed (an unchecked mutant counts against)."""
        judged = self.total - self.equivalent
        return 100.0 if judged == 0 else 100.0 * self.killed / judged


def tally(
    module: str, exit_codes: dict[str, int | None], equivalents: dict[str, str]
) -> ModuleReport:
    report = ModuleReport(module)
    for name, code in sorted(exit_codes.items()):
        if name in equivalents:
            report.equivalent += 1
        elif code in KILLED_CODES:
            report.killed += 1
        elif code in SURVIVED_CODES:
            report.survived += 1
            report.survivors.append(name)
        else:
            report.unchecked += 1
            report.survivors.append(name)
    return report


def meta_path(module: str, root: Path = REPO) -> Path:
    return root / "mutants" / (module.replace(".", "/") + ".py.meta")


def load_report(module: str, equivalents: dict[str, str], root: Path = REPO) -> ModuleReport:
    data = json.loads(meta_path(module, root).read_text())
    report = tally(module, data["exit_code_by_key"], equivalents)
    seconds_file = root / "mutants" / ".times" / f"{module}.seconds"
    if seconds_file.exists():
        report.seconds = int(seconds_file.read_text().strip())
    return report


def render(reports: list[ModuleReport]) -> str:
    width = max(len("module"), *(len(r.module) for r in reports))
    lines = [
        f"{'module':<{width}}  killed  survived  equivalent  total  killed %  time",
    ]
    for r in reports:
        seconds = "-" if r.seconds is None else f"{r.seconds} s"
        lines.append(
            f"{r.module:<{width}}  {r.killed:>6}  {r.survived + r.unchecked:>8}  "
            f"{r.equivalent:>10}  {r.total:>5}  {r.score:>7.1f}%  {seconds}"
        )
    survivors = [name for r in reports for name in r.survivors]
    if survivors:
        lines.append("")
        lines.append(f"survivors ({len(survivors)}; `.venv/bin/mutmut show NAME`):")
        lines.extend(f"  {name}" for name in survivors)
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    equivalents = read_equivalents(EQUIVALENT_FILE.read_text()) if EQUIVALENT_FILE.exists() else {}
    reports = [load_report(module, equivalents) for module in argv]
    print(render(reports))
    under = [r.module for r in reports if r.score < TARGET]
    if under:
        print(f"\nunder {TARGET:.0f} %: {', '.join(under)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
