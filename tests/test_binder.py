"""The Binder files build: binder/runtime.txt pins a Python that every pin of
binder/requirements.txt has a wheel for (part (a) of scripts/binder_check.py, against PyPI), and the
committed record of part (b) (every notebook run in a venv built from binder/, under Binder's memory)
covers every notebook. Part (b) itself takes minutes: `make binder-check` runs it, from .ci/run."""

from __future__ import annotations

import importlib.util
import json
import sys
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load_binder_check():
    spec = importlib.util.spec_from_file_location("binder_check", ROOT / "scripts/binder_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


bc = _load_binder_check()


def _pypi_reachable() -> bool:
    try:
        with urllib.request.urlopen(bc.PYPI + "/pip/", timeout=10):
            return True
    except OSError:
        return False


needs_pypi = pytest.mark.skipif(
    not _pypi_reachable(), reason="PyPI cannot be reached (make binder-check, run by CI, needs it)"
)


def test_runtime_txt_pins_a_python_the_way_repo2docker_reads_it():
    python, source = bc.read_runtime()
    assert source.startswith("binder/runtime.txt"), source
    assert python == "3.11", "binder/runtime.txt must name the Python the pins are tested with"


def test_without_runtime_txt_the_check_uses_repo2dockers_default(tmp_path: Path):
    python, source = bc.read_runtime(tmp_path)
    assert python == bc.REPO2DOCKER_DEFAULT_PYTHON
    assert "runtime.txt is missing" in source and "python-3.11" in source


@pytest.mark.parametrize("text", ["python-3", "3.11", "python3.11", "r-4.2-2023-01-01"])
def test_a_runtime_txt_without_major_minor_is_refused(tmp_path: Path, text: str):
    (tmp_path / "runtime.txt").write_text(text + "\n")
    with pytest.raises(bc.BinderCheckError, match=r"runtime\.txt reads .*`python-X\.Y`"):
        bc.read_runtime(tmp_path)


def test_every_requirement_is_pinned_and_torch_is_the_cpu_build():
    requirements = bc.read_requirements()
    local = [p for p in requirements.pins if "+" in p.version]
    assert [p.line for p in local] == ["torch==2.13.0+cpu"]
    assert requirements.extra_indexes == ["https://download.pytorch.org/whl/cpu"]


def test_an_unpinned_requirement_is_refused(tmp_path: Path):
    path = tmp_path / "requirements.txt"
    path.write_text("numpy>=2\n")
    with pytest.raises(bc.BinderCheckError, match="numpy>=2.*is not pinned"):
        bc.read_requirements(path)


def test_wheel_listing_matches_python_tag_and_local_version():
    files = [
        "torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl",
        "torch-2.13.0%2Bcpu-cp312-cp312-manylinux_2_28_x86_64.whl",
        "torch-2.13.0+cpu-cp310-cp310-win_amd64.whl",
    ]
    assert bc.has_linux_wheel(files, "torch", "2.13.0+cpu", "3.11")
    assert bc.has_linux_wheel(files, "torch", "2.13.0+cpu", "3.12")
    assert not bc.has_linux_wheel(files, "torch", "2.13.0+cpu", "3.10")
    assert not bc.has_linux_wheel(files, "torch", "2.13.0", "3.11")


@pytest.mark.slow  # 20-50 s: pip reads the wheels of about 100 packages
@needs_pypi
def test_binder_requirements_resolve_for_the_pinned_python():
    python, _ = bc.read_runtime()
    problems, notes = bc.resolve(bc.read_requirements(), python)
    assert not problems, "\n".join(problems)
    assert any("torch==2.13.0+cpu" in n for n in notes), notes


@needs_pypi
def test_resolve_names_each_pin_without_a_build_for_repo2dockers_default_python():
    """What Binder hit: no runtime.txt, so Python 3.10, for which these pins have no wheel."""
    pins = [p for p in bc.read_requirements().pins if p.name in ("numpy", "tqdm", "scipy")]
    problems = bc.resolve_pins(pins, bc.REPO2DOCKER_DEFAULT_PYTHON)
    assert len(problems) == 2, problems
    for problem, name in zip(problems, ["numpy==2.4.6", "scipy==1.17.1"], strict=True):
        assert problem.startswith(f"{name} has no wheel for Python 3.10"), problem


def test_recorded_notebook_memory_covers_every_notebook_under_the_limit():
    record = json.loads((ROOT / "benchmarks/results/binder.json").read_text())
    notebooks = sorted(p.name for p in (ROOT / "notebooks").glob("*.ipynb"))
    assert [r["notebook"] for r in record["notebooks"]] == notebooks, (
        "benchmarks/results/binder.json is out of date: run `make binder-check`"
    )
    assert record["runtime"] == f"python-{bc.read_runtime()[0]}"
    assert not bc.check_memory(record["notebooks"], bc.LIMIT_GB)


def test_a_notebook_over_the_memory_limit_is_named():
    rows = [{"notebook": "a.ipynb", "peak_mb": 1499.0}, {"notebook": "b.ipynb", "peak_mb": 1620.0}]
    (message,) = bc.check_memory(rows, 1.5)
    assert message.startswith("b.ipynb peaked at 1.62 GB, over the 1.5 GB limit"), message
