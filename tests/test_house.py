"""The house rules a test can hold: the import layering (import-linter's
contracts in pyproject.toml), a light ``happysad.edge.errors``, modules and
functions short enough to read, and a README a newcomer reads in minutes."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("edge", "train", "export", "benchmarks")
MAX_MODULE_LINES = 350
MAX_FUNCTION_LINES = 60
README_MAX_BYTES = 10 * 1024


def _sources():
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            if "_vendor" not in path.parts:  # third-party code, unmodified
                yield path


def test_import_contracts_hold(tmp_path):
    # import-linter reads the packages from disk; the editable install maps
    # happysad.edge & co. onto the repository's folders through an import
    # hook it cannot follow, so it is shown the same folders as a plain tree.
    tree = tmp_path / "happysad"
    tree.mkdir()
    for package in PACKAGES:
        (tree / package).symlink_to(REPO / package, target_is_directory=True)
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    lint = Path(sys.executable).parent / "lint-imports"
    res = subprocess.run(
        [str(lint), "--no-cache", "--config", str(REPO / "pyproject.toml")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    kept = re.search(r"Contracts: (\d+) kept, (\d+) broken", res.stdout)
    assert kept and int(kept.group(1)) >= 5 and kept.group(2) == "0", res.stdout


def _loaded_after(imports: str) -> list[str]:
    heavy = ("cv2", "numpy", "ai_edge_litert", "tflite_runtime", "onnxruntime", "tensorflow")
    code = f"import sys\n{imports}\nprint(sorted({{m.split('.')[0] for m in sys.modules}} & set({heavy!r})))\n"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    return ast.literal_eval(res.stdout.strip())


def test_errors_load_neither_opencv_nor_an_interpreter():
    # What train, export and the benchmarks share loads nothing heavy: the
    # package's __init__ is lazy (PEP 562).
    assert (
        _loaded_after("import happysad.edge, happysad.edge.errors, happysad.edge.fileio, happysad.edge.console") == []
    )
    assert _loaded_after("import happysad.edge.votes, happysad.edge.metrics") == ["numpy"]
    assert "cv2" in _loaded_after("from happysad.edge import load_image")  # the lazy name still loads


def test_the_public_api_is_still_one_import_away():
    code = (
        "from happysad.edge import Classifier, HappysadError, ModelMetadata, Prediction, __version__, "
        "find_images, load_image, preprocess, read_metadata\n"
        "import happysad.edge as e\n"
        "assert set(e.__all__) <= set(dir(e)), set(e.__all__) - set(dir(e))\n"
        "try:\n"
        "    e.no_such_name\n"
        "except AttributeError as exc:\n"
        "    print(exc)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "has no attribute 'no_such_name'" in res.stdout


def test_modules_and_functions_stay_short():
    long_modules, long_functions = [], []
    for path in _sources():
        text = path.read_text()
        rel = path.relative_to(REPO).as_posix()
        if text.count("\n") > MAX_MODULE_LINES:
            long_modules.append(f"{rel}: {text.count(chr(10))} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long_functions.append(f"{rel}:{node.lineno} {node.name}: {n} lines")
    assert not long_modules, long_modules
    assert not long_functions, long_functions


def test_readme_is_short_and_its_links_resolve():
    readme = REPO / "README.md"
    assert readme.stat().st_size <= README_MAX_BYTES
    for page in [readme, *sorted((REPO / "docs").glob("*.md"))]:
        text = page.read_text()
        assert not re.search(r"(?<![\w.])/(work|root|tmp)/", text), f"{page.name}: a machine's absolute path"
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue
            file = (page.parent / target.split("#")[0]).resolve()
            assert file.exists(), f"{page.name}: broken link {target}"
