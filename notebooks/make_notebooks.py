"""Write the tutorial notebooks from the cell sources below (stored without outputs).

Run ``python notebooks/make_notebooks.py && ruff format notebooks`` after editing cells here, so
that the notebooks stay reviewable as plain Python in one place.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).parent

QUICKSTART = [
    new_markdown_cell(
        "# Quickstart: click a test prediction\n\n"
        "One line trains a logistic regression on scikit-learn's 8x8 digits and opens the "
        "explorer. Click any test digit: the panel shows the training images that helped and hurt "
        "that prediction the most. Misclassified test points are tinted; filter them with the "
        "checkbox."
    ),
    new_code_cell("%load_ext influence_widgets"),
    new_code_cell("%influence --demo digits"),
    new_code_cell(
        "ex = _  # noqa: F821 (the explorer the magic returned)\n"
        "ex.selected = 3  # selecting from Python updates the view too\n"
        "ex.wait_ready()\n"
        "ex.results()[:3]"
    ),
    new_markdown_cell(
        "## The same, step by step\n\n"
        "Influence functions (Koh & Liang, ICML 2017, "
        "[arXiv:1703.04730](https://arxiv.org/abs/1703.04730)) answer this without retraining: "
        "for a test point, they predict how its loss would change if one training point were "
        "removed, for every training point at once.\n\n"
        "This notebook trains a logistic regression on scikit-learn's 8x8 handwritten digits, "
        "then lists the training images that helped and hurt one test prediction the most."
    ),
    new_code_cell(
        "import matplotlib.pyplot as plt\n"
        "import torch\n\n"
        "import influence_widgets as iw\n\n"
        "data = iw.datasets.digits()\n"
        "data"
    ),
    new_markdown_cell(
        "Influence functions assume the model sits at a minimum of its training risk, so we train "
        "with full-batch L-BFGS to a tiny gradient norm, with the same L2 strength we then give "
        "to `Influence`."
    ),
    new_code_cell(
        "model = iw.models.logistic_regression(data)\n"
        "report = iw.train(model, data, l2=0.01)\n"
        "report"
    ),
    new_code_cell(
        "inf = iw.Influence(model, (data.X_train, data.y_train), l2=0.01).fit()\ninf.diagnostics"
    ),
    new_markdown_cell(
        "`predicted_removal_effect` is the predicted change of the test loss when a training point "
        "is removed: **positive = helpful** (removing it would raise the test loss), **negative = "
        "harmful**. `top` ranks both ends."
    ),
    new_code_cell(
        "t = 0\n"
        "x_test, y_test = data.X_test[t : t + 1], data.y_test[t : t + 1]\n"
        "top = inf.top(x_test, y_test, k=6)\n"
        "prediction = int(model(x_test.double()).argmax())\n"
        "print(f'test point {t}: label {int(y_test)}, predicted {prediction}')\n"
        "for name, idx, scores in [\n"
        "    ('helpful', top.helpful[0], top.helpful_scores[0]),\n"
        "    ('harmful', top.harmful[0], top.harmful_scores[0]),\n"
        "]:\n"
        "    rows = ', '.join(\n"
        "        f'#{int(i)} (label {int(data.y_train[i])}, {float(s):+.2e})' "
        "for i, s in zip(idx, scores, strict=True)\n"
        "    )\n"
        "    print(f'{name}: {rows}')"
    ),
    new_code_cell(
        "train_images = data.images('train')\n"
        "fig, axes = plt.subplots(2, 7, figsize=(10, 3.2))\n"
        "for row, (name, idx, scores) in enumerate([\n"
        "    ('helpful', top.helpful[0], top.helpful_scores[0]),\n"
        "    ('harmful', top.harmful[0], top.harmful_scores[0]),\n"
        "]):\n"
        "    axes[row, 0].imshow(data.images('test')[t], cmap='gray_r')\n"
        "    axes[row, 0].set_title(f'test, label {int(y_test)}', fontsize=8)\n"
        "    for col, (i, s) in enumerate(zip(idx, scores, strict=True), start=1):\n"
        "        axes[row, col].imshow(train_images[int(i)], cmap='gray_r')\n"
        "        axes[row, col].set_title(\n"
        "            f'{name} #{int(i)}\\nlabel {int(data.y_train[i])}, {float(s):+.1e}', fontsize=7\n"
        "        )\n"
        "for ax in axes.flat:\n"
        "    ax.axis('off')\n"
        "fig.tight_layout()"
    ),
    new_markdown_cell(
        "The explorer works on any `Influence`: give it the data set to draw the points."
    ),
    new_code_cell("iw.InfluenceExplorer(inf, data, k=6)"),
    new_markdown_cell(
        "## Which training labels look wrong?\n\n"
        "Self-influence I_up,loss(z_i, z_i) measures how much a point's own loss depends on "
        "keeping it; the most negative are the first to check for wrong labels (the paper's "
        "Section 5.4)."
    ),
    new_code_cell(
        "self_inf = inf.self_influence()\n"
        "suspects = torch.argsort(self_inf)[:8]\n"
        "fig, axes = plt.subplots(1, 8, figsize=(10, 1.8))\n"
        "for ax, i in zip(axes, suspects, strict=True):\n"
        "    ax.imshow(train_images[int(i)], cmap='gray_r')\n"
        "    ax.set_title(f'#{int(i)} label {int(data.y_train[i])}', fontsize=8)\n"
        "    ax.axis('off')"
    ),
]


def write(name: str, cells: list) -> None:
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nbformat.write(nb, HERE / name)


if __name__ == "__main__":
    write("01_quickstart.ipynb", QUICKSTART)
