"""Layer 3: every notebook in notebooks/ runs headless, top to bottom, without an error; and each
is what notebooks/make_notebooks.py writes."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from tests.scripts import load_script

NOTEBOOK_DIR = Path(__file__).parent.parent / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))


def _notebook_param(path: Path):
    """One notebook as a test parameter; one that loads Fashion-MNIST (all of it, or its Sandal
    and Sneaker classes) is marked as needing it."""
    text = path.read_text()
    needs_data = "fashion_mnist(" in text or "sandal_sneaker(" in text
    marks = [pytest.mark.fashion_mnist] if needs_data else []
    return pytest.param(path, marks=marks, id=path.name)


def test_there_are_notebooks():
    assert NOTEBOOKS, "notebooks/ holds no notebook"


def _generator():
    return load_script(NOTEBOOK_DIR / "make_notebooks.py")


def _content(nb: nbformat.NotebookNode) -> tuple:
    """What a notebook says, without the random cell ids: its metadata and each cell's type,
    metadata and source."""
    cells = [(c.cell_type, dict(c.metadata), c.source) for c in nb.cells]
    return nb.nbformat, nb.nbformat_minor, dict(nb.metadata), cells


def _first_difference(stored: tuple, generated: tuple) -> str:
    if stored[:3] != generated[:3]:
        return "the notebook's metadata or format version"
    cells, expected = stored[3], generated[3]
    for i, (have, want) in enumerate(zip(cells, expected, strict=False)):
        if have != want:
            return f"cell {i} ({want[0]}, starting {want[2][:60]!r})"
    return f"the number of cells ({len(cells)}, generated {len(expected)})"


def test_notebooks_are_what_the_generator_writes(tmp_path: Path):
    generated = {path.name: path for path in _generator().write_all(tmp_path)}
    assert sorted(generated) == [p.name for p in NOTEBOOKS], (
        f"notebooks/ holds {[p.name for p in NOTEBOOKS]}, notebooks/make_notebooks.py writes "
        f"{sorted(generated)}"
    )
    for path in NOTEBOOKS:
        stored = _content(nbformat.read(path, as_version=4))
        fresh = _content(nbformat.read(generated[path.name], as_version=4))
        assert stored == fresh, (
            f"notebooks/{path.name} is not what notebooks/make_notebooks.py writes: "
            f"{_first_difference(stored, fresh)} differs. Edit the cells in make_notebooks.py, "
            "then run `python notebooks/make_notebooks.py`"
        )


@pytest.mark.slow
@pytest.mark.parametrize("path", [_notebook_param(p) for p in NOTEBOOKS])
def test_notebook_runs_headless(path: Path, tmp_path: Path):
    nb = nbformat.read(path, as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), (
        f"{path.name} is stored with outputs; clear them"
    )
    client = NotebookClient(
        nb, timeout=180, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()
