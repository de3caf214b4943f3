"""scripts/ run as `python scripts/x.py`, which puts scripts/ first on sys.path: a script named like a standard
library module (select.py, socket.py, ...) would shadow it for every other script (`make tables` broke that way)."""

import sys
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def test_no_script_shadows_a_standard_library_module():
    names = {p.stem for p in SCRIPTS.glob("*.py")}
    assert names, "no scripts found"
    assert not names & set(sys.stdlib_module_names), names & set(sys.stdlib_module_names)


def test_scripts_import_the_installed_project_without_path_hacks():
    """Every make target installs the project (editable): a script imports it as any user code would."""
    for path in SCRIPTS.glob("*.py"):
        text = path.read_text()
        assert "parents[1]))" not in text and "noqa: E402" not in text, path.name
