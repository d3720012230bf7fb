"""docs/teaching.md, the teachers' page: it names every notebook the class uses, and the README
shows the way to it before any benchmark or GPU text."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGE = (ROOT / "docs/teaching.md").read_text()
README = (ROOT / "README.md").read_text()


def test_every_tutorial_and_exercise_is_on_the_teachers_page():
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        assert f"`{nb.stem}`" in PAGE, f"{nb.name} is not on docs/teaching.md"
    exercises = sorted((ROOT / "notebooks/exercises").glob("*.ipynb"))
    assert exercises
    for nb in exercises:
        number = int(nb.name.split("_")[0])
        assert re.search(rf"\bexercise {number}\b", PAGE), f"exercise {number} is not on the page"


def test_the_readme_points_teachers_there_before_benchmarks_and_gpu_text():
    link = README.index("(docs/teaching.md)")
    assert link < README.index("## Measurements")
    gpu = re.search(r"\bGPU\b", README)
    assert gpu is None or link < gpu.start()
