"""The install: `pip install .` is the library alone (torch, numba, numpy), the harness comes with extras,
`import attention` loads none of it; the version, license, citation and type-marker files agree with pyproject."""

import ast
import importlib.metadata
import inspect
import shutil
import subprocess
import sys
import tomllib
import typing
import zipfile
from pathlib import Path

import pytest

import attention

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]
# what the harness, the report and the tests use, never the library
HARNESS = ("hydra", "omegaconf", "submitit", "wandb", "sacrebleu", "rouge_score", "sacremoses", "matplotlib",
           "transformers", "tasks", "cvxpy", "entmax", "pytest")


def distribution(requirement: str) -> str:
    """'numba-cuda[cu12]==0.30.4; sys_platform == "linux"' -> 'numba-cuda'"""
    for stop in "[=<>;! ~":
        requirement = requirement.split(stop)[0]
    return requirement.strip().lower().replace("_", "-")


def run(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip()


def test_import_attention_loads_no_harness_module():
    """In a fresh process (here the test session has imported everything already): attention, its plot module
    (matplotlib is imported inside its functions) and its losses."""
    loaded = run(f"import sys, attention, attention.plot, attention.losses; "
                 f"print(sorted(m for m in {HARNESS!r} if m in sys.modules))")
    assert loaded == "[]", loaded


def test_library_dependencies_are_torch_numba_numpy():
    assert sorted(distribution(r) for r in PROJECT["dependencies"]) == ["numba", "numpy", "torch"]
    extras = PROJECT["optional-dependencies"]
    assert {"experiments", "plot", "test", "cuda", "huggingface"} <= set(extras)
    itself = [r for r in extras["test"] if distribution(r) == "structured-attention"]
    assert len(itself) == 1 and {"experiments", "plot"} <= set(itself[0].split("[")[1].split("]")[0].split(","))
    assert PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"] == ["attention*"]


def _third_party_imports(folder: str) -> set[str]:
    names = set()
    for path in (ROOT / folder).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names and n not in ("attention", "tasks")}


def test_every_import_of_the_code_is_declared():
    """Each third-party module that attention/ and tasks/ import belongs to a distribution that pyproject declares
    where it is needed: attention/ in the dependencies (matplotlib: plot, numba-cuda: cuda), tasks/ in
    dependencies + experiments + plot."""
    provided = importlib.metadata.packages_distributions()
    extras = PROJECT["optional-dependencies"]
    core = {distribution(r) for r in PROJECT["dependencies"]}

    def declared(module, allowed):
        dists = {d.lower().replace("_", "-") for d in provided.get(module, [])}
        return bool(dists & allowed)

    library = core | {distribution(r) for r in extras["plot"] + extras["cuda"] + extras["huggingface"]}
    missing = [m for m in _third_party_imports("attention") if not declared(m, library)]
    assert not missing, f"attention/ imports {missing}, which pyproject does not declare"
    harness = core | {distribution(r) for r in extras["experiments"] + extras["plot"]}
    missing = [m for m in _third_party_imports("tasks") if not declared(m, harness)]
    assert not missing, f"tasks/ imports {missing}, which [experiments] does not declare"


def test_version_matches_pyproject_with_and_without_metadata():
    assert attention.__version__ == PROJECT["version"]
    # a checkout that was never installed: the fallback
    fallback = run("import importlib.metadata as m\n"
                   "def missing(name): raise m.PackageNotFoundError(name)\n"
                   "m.version = missing\n"
                   "import attention; print(attention.__version__)")
    assert fallback == PROJECT["version"]


def test_license_and_citation_files():
    assert PROJECT["license"] == "MIT" and PROJECT["license-files"] == ["LICENSE"]
    license_text = (ROOT / "LICENSE").read_text()
    assert license_text.startswith("MIT License") and "the structured-attention authors" in license_text
    yaml = pytest.importorskip("yaml")
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0" and str(cff["version"]) == PROJECT["version"] and cff["license"] == "MIT"
    paper = cff["preferred-citation"]
    assert paper["title"] == "A Regularized Framework for Sparse and Structured Neural Attention"
    assert [a["family-names"] for a in paper["authors"]] == ["Niculae", "Blondel"] and paper["year"] == 2017
    assert (ROOT / "attention" / "py.typed").is_file()


def test_wheel_is_the_library_alone(tmp_path):
    """Build the wheel (from a copy: setuptools writes build/ next to the sources) and read what it ships."""
    setuptools = pytest.importorskip("setuptools")
    if int(setuptools.__version__.split(".")[0]) < 77:
        pytest.skip("needs setuptools >= 77 (license-files) in this environment")
    source = tmp_path / "src"
    shutil.copytree(ROOT / "attention", source / "attention", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                           str(tmp_path / "dist"), str(source)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "deprecated" not in done.stderr.lower(), done.stderr  # setuptools' license-table warning is gone
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        metadata = archive.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert "attention/py.typed" in names and "attention/losses.py" in names
    assert {n.split("/")[0] for n in names} == {"attention", wheel.name.split("-")[0] + "-" +
                                                 wheel.name.split("-")[1] + ".dist-info"}
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert "License-Expression: MIT" in metadata
    required = [line.split(":", 1)[1].strip() for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    unconditional = sorted(distribution(r) for r in required if "extra ==" not in r)
    assert unconditional == ["numba", "numpy", "torch"], required


def _unannotated(function) -> list[str]:
    hints = typing.get_type_hints(function)  # also checks that every annotation evaluates
    missing = [p.name for p in inspect.signature(function).parameters.values()
               if p.name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL) and p.name not in hints]
    return missing + ([] if "return" in hints or function.__name__ == "__init__" else ["return"])


def test_public_functions_have_type_hints():
    missing = {}
    for name in attention.__all__:
        obj = getattr(attention, name)
        if inspect.isfunction(obj):
            functions = {name: obj}
        elif inspect.isclass(obj):
            functions = {f"{name}.{m}": getattr(obj, m) for m in ("__init__", "forward") if m in vars(obj)}
        else:
            continue
        missing.update({f: gap for f, function in functions.items() if (gap := _unannotated(function))})
    assert not missing, f"public functions without type hints: {missing}"
