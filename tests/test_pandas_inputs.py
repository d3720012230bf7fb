"""pandas DataFrames and Series passed to the %influence magic or the explorer are copied quietly:
torch warns "The given NumPy array is not writable" about the read-only arrays pandas hands out.
torch warns once per process, so each case runs in a fresh interpreter."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("pandas")

SETUP = """\
import pandas as pd
import torch
import influence_widgets as iw
torch.set_num_threads(1)
data = iw.datasets.breast_cancer()
model = iw.models.logistic_regression(data)
iw.train(model, data, l2=0.01, progress=False)
X = pd.DataFrame(data.X_train.numpy())
y = pd.Series(data.y_train.numpy())
Xt = pd.DataFrame(data.X_test.numpy())
yt = pd.Series(data.y_test.numpy())
"""

CASES = {
    "magic": """\
from IPython.core.interactiveshell import InteractiveShell
ip = InteractiveShell.instance()
ip.run_line_magic("load_ext", "influence_widgets")
ip.user_ns.update(m=model, X=X, y=y, Xt=Xt, yt=yt)
ex = ip.run_line_magic("influence", "m --train X y --test Xt yt --l2 0.01")
""",
    "explorer": """\
inf = iw.Influence(model, (data.X_train, data.y_train), l2=0.01, progress=False)
ex = iw.InfluenceExplorer(inf, x_test=Xt, y_test=yt, kind="tabular", fit_in_background=False)
""",
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_pandas_inputs_are_copied_without_a_warning(case):
    root = Path(__file__).resolve().parents[1]
    code = (
        SETUP
        + CASES[case]
        + "ex.wait_ready()\nex.selected = 0\nprint('PANEL', len(ex.panel['helpful']))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(root)}
    run = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=240
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert "PANEL 8" in run.stdout
    assert "not writable" not in run.stderr, run.stderr[-2000:]
