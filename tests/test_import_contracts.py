"""The import contracts in pyproject.toml hold, and each one fails when broken on purpose.

`lint-imports` runs in CI over the package as it is; a contract that could never fail
(a typo in a module name, a layer that names nothing) would pass there too. Here each
contract is shown able to fail: a copy of the package gets one forbidden import at a
time, and `lint-imports` must name exactly that contract as broken.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

# (contract name's start, module to edit, the import it gains)
BREAKS = [
    ("decide/ is pure", "decide/dear.py", "import asyncio"),
    ("arrows point one way", "observe/edges.py", "import gearshift.api"),
    ("layers:", "policy/loader.py", "import gearshift.decide"),
    ("siblings:", "act/retire.py", "import gearshift.store"),
    ("SDKs stay in their driver", "store/sqlite.py", "import asyncpg"),
    ("forecast/ is pure", "forecast/seasonal.py", "import time"),
]


def lint(tree: Path) -> subprocess.CompletedProcess[str]:
    binary = Path(sys.executable).with_name("lint-imports")
    return subprocess.run([str(binary), str(tree / "pyproject.toml"), "--no-cache"],
                          cwd=tree, capture_output=True, text=True, timeout=300, check=False,
                          env={**os.environ, "PYTHONPATH": str(tree / "src")})


def broken(output: str) -> set[str]:
    return set(re.findall(r"^(.+?) BROKEN\b", output, flags=re.MULTILINE))


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tree = tmp_path_factory.mktemp("contracts")
    shutil.copytree(ROOT / "daemon" / "gearshift", tree / "src" / "gearshift",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tree / "pyproject.toml")
    return tree


def test_the_contracts_hold_and_each_fails_when_broken(tree: Path) -> None:
    clean = lint(tree)
    assert clean.returncode == 0, clean.stdout[-3000:]
    kept = re.findall(r"^(.+?) KEPT\b", clean.stdout, flags=re.MULTILINE)
    assert len(kept) == len(BREAKS), clean.stdout
    for start, module, line in BREAKS:
        path = tree / "src" / "gearshift" / module
        original = path.read_text()
        # After the module docstring and the __future__ import: the import is real code.
        path.write_text(original.replace("from __future__ import annotations\n",
                                         f"from __future__ import annotations\n{line}\n", 1))
        try:
            result = lint(tree)
        finally:
            path.write_text(original)
        names = broken(result.stdout)
        assert result.returncode != 0, (module, line)
        assert any(name.startswith(start) for name in names), (start, names)
