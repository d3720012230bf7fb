"""Write the tutorial notebooks from the cell sources below (stored without outputs).

Run ``python notebooks/make_notebooks.py`` after editing cells here, so that the notebooks stay
reviewable as plain Python in one place: it writes the three notebooks and formats their code with
``ruff format`` and the repository's settings. ``tests/test_notebooks.py`` checks that the
notebooks in the repository are what this writes.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).parent
PYPROJECT = HERE.parent / "pyproject.toml"

# Notebook 02's non-convex model (also exercise 4's): two tanh layers of 8 on 300 digits, no l2.
UNDAMPED_MLP = (
    "small = iw.datasets.digits(n_train=300)\n"
    "torch.manual_seed(0)\n"
    "mlp = torch.nn.Sequential(\n"
    "    torch.nn.Linear(64, 8), torch.nn.Tanh(),\n"
    "    torch.nn.Linear(8, 8), torch.nn.Tanh(),\n"
    "    torch.nn.Linear(8, 10),\n"
    ").double()  # fmt: skip\n"
    "print(iw.train(mlp, small, l2=0.0, max_iter=300, progress=False))\n"
)

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

LEAVE_ONE_OUT = [
    new_markdown_cell(
        "# Does influence match retraining? Leave-one-out, as in the paper's Figures 2 and 3\n\n"
        "Influence functions *predict* how a test loss would change if a training point were "
        "removed, without retraining. Koh & Liang check the prediction the slow way: remove the "
        "point, retrain, measure. `iw.validate_loo` does that in one call: it removes the training "
        "points of largest |influence| one at a time, retrains warm-started from the trained model "
        "on the same regularised risk, and compares."
    ),
    new_code_cell(
        "import warnings\n\n"
        "import matplotlib.pyplot as plt\n"
        "import torch\n\n"
        "import influence_widgets as iw\n\n"
        "data = iw.datasets.digits()\n"
        "model = iw.models.logistic_regression(data)\n"
        "iw.train(model, data, l2=0.01, progress=False)\n"
        "inf = iw.Influence(model, (data.X_train, data.y_train), l2=0.01, progress=False)"
    ),
    new_markdown_cell(
        "## Figure 2: logistic regression\n\n"
        "Each dot is one removed training point: the predicted change of the test loss (x) against "
        "the change measured by retraining (y). On the dashed line the prediction is exact."
    ),
    new_code_cell(
        "result = iw.validate_loo(inf, data.X_test[:1], data.y_test[:1], n_remove=30)\n"
        "result.plot()\n"
        "result"
    ),
    new_markdown_cell(
        "Removing points at random mostly removes points that hardly matter: the effects are tiny, "
        "and the prediction still tracks them."
    ),
    new_code_cell(
        "random = iw.validate_loo(\n"
        "    inf, data.X_test[:1], data.y_test[:1], n_remove=15, strategy='random', seed=0\n"
        ")\n"
        "fig, axes = plt.subplots(1, 2, figsize=(8.5, 4))\n"
        "result.plot(ax=axes[0])\n"
        "random.plot(ax=axes[1])\n"
        "axes[1].set_title('random removals\\n' + axes[1].get_title().split('\\n')[1], fontsize=10)\n"
        "fig.tight_layout()"
    ),
    new_markdown_cell(
        "## Figure 3: a non-differentiable loss\n\n"
        "A linear SVM (digits 1 against 7) minimises the hinge loss, which has a kink: its Hessian "
        "is zero almost everywhere, so influence through the plain hinge is poor. The paper "
        "computes influence through the *smooth hinge* t log(1 + exp((1 - s)/t)) at the SVM's "
        "solution instead; each leave-one-out retrain fits the real hinge SVM again "
        "(`iw.train_hinge`, passed as `retrain=`)."
    ),
    new_code_cell(
        "def one_vs_seven(X, y):\n"
        "    keep = (y == 1) | (y == 7)\n"
        "    return X[keep], (y[keep] == 7).long()\n\n\n"
        "X, y = one_vs_seven(data.X_train, data.y_train)\n"
        "Xt, yt = one_vs_seven(data.X_test, data.y_test)\n"
        "svm = iw.models.linear_svm((64, 2))\n"
        "iw.train_hinge(svm, (X, y), l2=0.1)\n"
        "with torch.no_grad():\n"
        "    margin = (2.0 * yt.double() - 1) * svm(Xt.double())\n"
        "t_point = int(margin.argmin())  # the test point closest to the boundary\n\n"
        "fig, axes = plt.subplots(1, 3, figsize=(12, 4))\n"
        "for ax, temperature in zip(axes, [0.001, 0.1, 0.0], strict=True):\n"
        "    smooth = iw.Influence(\n"
        "        svm, (X, y), loss=iw.SmoothHinge(temperature), l2=0.1, progress=False\n"
        "    )\n"
        "    with warnings.catch_warnings():  # the hinge solution is not stationary for t > 0\n"
        "        warnings.simplefilter('ignore', iw.InfluenceWarning)\n"
        "        r = iw.validate_loo(\n"
        "            smooth, Xt[t_point : t_point + 1], yt[t_point : t_point + 1], n_remove=50,\n"
        "            retrain=lambda m, d: iw.train_hinge(m, d, l2=0.1), progress=False,\n"
        "        )  # fmt: skip\n"
        "    r.plot(ax=ax)\n"
        "    ax.set_title(f't = {temperature:g}: Pearson R = {r.pearson:.3f}', fontsize=10)\n"
        "fig.tight_layout()"
    ),
    new_markdown_cell(
        "## The Verify tab\n\n"
        "The explorer runs the same check for the test point you clicked: open **Verify**, choose "
        "how many removals, press **Run leave-one-out**. It retrains in the background with a "
        "progress bar and a **Cancel** button, then draws the scatter and R. From Python: "
        "`run_verify`."
    ),
    new_code_cell(
        "ex = iw.InfluenceExplorer(inf, data, k=6).wait_ready()\n"
        "ex.selected = 0\n"
        "ex.tab = 'verify'\n"
        "ex.run_verify(n_remove=10, wait=True)\n"
        "ex"
    ),
    new_markdown_cell(
        "## When influence fails\n\n"
        "Influence is a second-order Taylor expansion around a minimum. Take a deeper network (two "
        "tanh hidden layers) trained **without** weight decay on 300 digits: the risk is "
        "non-convex and flat in many directions, L-BFGS stops short of a strict minimum, and the "
        "Hessian has eigenvalues at or below zero, so it cannot be inverted as it is."
    ),
    new_code_cell(
        UNDAMPED_MLP
        + "deep = iw.Influence(mlp, (small.X_train, small.y_train), l2=0.0, progress=False)\n"
        "try:\n"
        "    with warnings.catch_warnings():\n"
        "        warnings.simplefilter('ignore', iw.InfluenceWarning)\n"
        "        deep.fit()\n"
        "except iw.NotPositiveDefiniteError as err:\n"
        "    print(err)"
    ),
    new_markdown_cell(
        "Damping (adding a multiple of the identity, as the paper's code does for its CNN) makes "
        "the inverse exist, but the prediction is then dominated by the almost-flat directions "
        "and describes a *damped* problem, not retraining: removing a point lets the weights "
        "drift along directions the damped Hessian treats as stiff (Basu et al. 2021; Bae et al. "
        "2022). R collapses; compare with the logistic regression above."
    ),
    new_code_cell(
        "damped = iw.Influence(\n"
        "    mlp, (small.X_train, small.y_train), l2=0.0, damping=0.001, progress=False\n"
        ")\n"
        "with warnings.catch_warnings():\n"
        "    warnings.simplefilter('ignore', iw.InfluenceWarning)\n"
        "    fail = iw.validate_loo(\n"
        "        damped, small.X_test[:1], small.y_test[:1], n_remove=10, max_iter=200,\n"
        "        progress=False,\n"
        "    )  # fmt: skip\n"
        "fail.plot()\n"
        "fail"
    ),
]

ATTACKS = [
    new_markdown_cell(
        "# Training-set attacks\n\n"
        "Koh & Liang (2017, Sec 5.2) show that perturbing training images, invisibly, can flip a "
        "model's prediction on a chosen test image. The tool is I_pert,loss: how the test loss "
        "changes, after retraining, when a training *input* moves. The attack moves a few "
        "training images a small step along sign(I_pert,loss), keeps every pixel within `eps` of "
        "its original value and inside [0, 1], retrains and repeats until the prediction flips.\n\n"
        "The paper's setting, rebuilt from data we have: a feature extractor trained on 8 of the "
        "10 Fashion-MNIST classes and frozen (shipped with the package), and a logistic-regression "
        "top layer on its 784 convolutional features for the two classes it never saw, Sandal "
        "against Sneaker. Influence is taken over the top layer only; I_pert,loss differentiates "
        "through the frozen extractor down to the pixels. The same model opens in the explorer "
        "with `%influence --demo fashion_attack`."
    ),
    new_code_cell(
        "import matplotlib.pyplot as plt\n"
        "import torch\n\n"
        "import influence_widgets as iw\n"
        "data = iw.datasets.sandal_sneaker()  # 900 + 900 training images; Sandal = 0, Sneaker = 1\n"
        "model = iw.models.fmnist_attack_model()  # frozen extractor + zero head\n"
        "with torch.no_grad():\n"
        "    features = model[0](data.X_train.double())\n"
        "report = iw.train(model[1], (features, data.y_train), l2=0.01, progress=False)\n"
        "inf = iw.Influence(\n"
        "    model, (data.X_train, data.y_train), l2=0.01, params=['1.weight', '1.bias'],\n"
        "    progress=False,\n"
        ").fit()  # fmt: skip\n"
        "with torch.no_grad():\n"
        "    probs = torch.softmax(model(data.X_test.double()), 1)\n"
        "correct = probs.argmax(1) == data.y_test\n"
        "print(f'||grad R|| = {report.grad_norm:.1e}, {inf.p} parameters in the head, '\n"
        "      f'test accuracy {correct.double().mean():.3f}')"
    ),
    new_markdown_cell(
        "## One attack\n\n"
        "Take a correctly classified test image that the model gives 80% to, and let "
        "`craft_attack` perturb the five training images with the largest input gradient of "
        "influence (the paper's choice), by at most 16 levels of an 8-bit image."
    ),
    new_code_cell(
        "confidence = probs[torch.arange(len(probs)), data.y_test]\n"
        "target = int(torch.where(correct, (confidence - 0.8).abs(), torch.inf).argmin())\n"
        "x, y = data.X_test[target : target + 1], data.y_test[target : target + 1]\n"
        "result = iw.craft_attack(\n"
        "    inf, x, y, n_poison=5, eps=iw.eight_bit_levels(16), max_iter=30, progress=False\n"
        ")\n"
        "result"
    ),
    new_code_cell(
        "k = len(result.poisoned)\n"
        "fig, axes = plt.subplots(k, 3, figsize=(6, 2.1 * k), squeeze=False)\n"
        "for row, j in enumerate(result.poisoned):\n"
        "    before = result.original_inputs[row].reshape(28, 28)\n"
        "    after = result.perturbed_inputs[row].reshape(28, 28)\n"
        "    diff = (after - before).numpy()\n"
        "    axes[row, 0].imshow(before, cmap='gray', vmin=0, vmax=1)\n"
        "    axes[row, 1].imshow(after, cmap='gray', vmin=0, vmax=1)\n"
        "    axes[row, 2].imshow(diff, cmap='RdBu', vmin=-result.eps, vmax=result.eps)\n"
        "    axes[row, 0].set_ylabel(f'train #{j}\\n{data.class_names[data.y_train[j]]}')\n"
        "for ax, title in zip(axes[0], ['original', 'perturbed', 'difference'], strict=True):\n"
        "    ax.set_title(title, fontsize=9)\n"
        "for ax in axes.flat:\n"
        "    ax.set_xticks([])\n"
        "    ax.set_yticks([])\n"
        "fig.tight_layout()\n"
        "print('p(true class) per step:', [round(p, 3) for p in result.true_class_probability])"
    ),
    new_markdown_cell(
        "`result.stop_reason` says why the attack stopped. The paper flipped 57% of its test "
        "images with one image at half a level; ours need more images or a larger `eps` "
        "(`benchmarks/attack.py`, table in `benchmarks/README.md`). Its images were Inception's "
        "299x299x3 inputs, ours are 28x28: a sign step moves the loss by about eps times the L1 "
        "norm of the input gradient, which grows with the number of input values, and this small "
        "tanh CNN's features are less sensitive to pixel changes than Inception's. The machinery "
        "is the same.\n\n"
        "How large must `eps` be for this image? `smallest_flipping_eps` attacks at growing eps "
        "(doubling), then bisects between the largest that did not flip and the smallest that "
        "did."
    ),
    new_code_cell(
        "search = iw.smallest_flipping_eps(\n"
        "    inf, x, y, eps_max=iw.eight_bit_levels(32), eps_start=iw.eight_bit_levels(4),\n"
        "    bisections=2, n_poison=5, max_iter=30, progress=False,\n"
        ")  # fmt: skip\n"
        "print(search)\n"
        "if search.eps is not None:\n"
        "    print(f'smallest eps that flips: {search.eps * 255:.1f} levels')"
    ),
    new_markdown_cell(
        "## The Attack tab\n\n"
        "In the explorer, select a test image, open **Attack**, set how many training images to "
        "perturb, `eps` and the step in 8-bit levels and the number of steps, and press **Run "
        "attack** (or **Find smallest eps**). It runs in the background with a progress bar and a "
        "**Cancel** button, then shows whether the prediction flipped and why it stopped, each "
        "poisoned image (original, perturbed, amplified difference with its colour scale) and the "
        "class probabilities before and after. From Python: `run_attack`, which also sets the "
        "sliders to the values it uses. The step's default, auto, is `craft_attack`'s eps / 12.5, "
        "so the same settings give the same attack as above."
    ),
    new_code_cell(
        "ex = iw.InfluenceExplorer(inf, data, k=6).wait_ready()\n"
        "ex.selected = target\n"
        "ex.tab = 'attack'\n"
        "tab = ex.run_attack(n_poison=5, eps=16, max_iter=30, wait=True)\n"
        "same = tab.poisoned.tolist() == result.poisoned.tolist()\n"
        "print(f'the same poisoned images as craft_attack: {same}; flipped: {tab.flipped}')\n"
        "print(f'sliders: eps {ex.attack_eps}, step {ex.attack_step} (0 = auto, eps / 12.5)')\n"
        "ex"
    ),
]


NOTEBOOKS = {
    "01_quickstart.ipynb": QUICKSTART,
    "02_leave_one_out.ipynb": LEAVE_ONE_OUT,
    "03_training_set_attacks.ipynb": ATTACKS,
}


def write(path: Path, cells: list) -> None:
    """Write ``cells`` as a notebook with a Python 3 kernel, cell ids by position (so that
    rewriting an unchanged notebook changes nothing). Also used by exercises/make_exercises.py."""
    for k, cell in enumerate(cells):
        cell["id"] = f"cell-{k}"
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nbformat.write(nb, path)


def format_with_ruff(paths: list[Path]) -> None:
    """Format the notebooks' code cells with ruff, under the repository's pyproject.toml."""
    ruff = [sys.executable, "-m", "ruff", "format", "--quiet", "--config", str(PYPROJECT)]
    subprocess.run([*ruff, *map(str, paths)], check=True)


def write_all(directory: Path = HERE) -> list[Path]:
    """Write every notebook of :data:`NOTEBOOKS` into ``directory``, code formatted by ruff."""
    paths = [directory / name for name in NOTEBOOKS]
    for path, cells in zip(paths, NOTEBOOKS.values(), strict=True):
        write(path, cells)
    format_with_ruff(paths)
    return paths


if __name__ == "__main__":
    write_all()
