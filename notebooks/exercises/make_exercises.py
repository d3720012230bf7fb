"""Write the exercise notebooks, for students and (in ``solutions/``) for teachers, from one list
of cells per exercise (stored without outputs).

Run ``python notebooks/exercises/make_exercises.py`` after editing cells here. A cell made with
``answer(blank, solution)`` holds ``blank`` in the student's notebook and ``solution`` in the
teacher's; it is tagged "answer". Checker cells are tagged "check": their output starts with
``[passed]`` or ``[not yet]``. ``tests/test_exercises.py`` runs both versions and checks that the
notebooks here are what this writes.
"""

from __future__ import annotations

import sys
from pathlib import Path

from nbformat.v4 import new_code_cell, new_markdown_cell

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent))  # one notebook writer for both generators
from make_notebooks import UNDAMPED_MLP, format_with_ruff, write  # noqa: E402


def md(text: str):
    return new_markdown_cell(text)


def code(source: str):
    return new_code_cell(source)


def check(source: str):
    return new_code_cell(source, metadata={"tags": ["check"]})


def answer(blank: str, solution: str) -> tuple:
    """A cell the student fills in: ``blank`` for students, ``solution`` for teachers."""
    return ("answer", blank, solution)


BY_HAND = [
    md(
        "# Exercise 1: the influence of one training point, by hand\n\n"
        "Koh & Liang (2017) ask: how would the loss on a test point z_test change if a training "
        "point z_i were upweighted by a small epsilon? At a minimum theta_hat of the training "
        "risk\n\n"
        "R(theta) = (1/n) sum_j L(z_j, theta) + (l2/2) ||theta||^2\n\n"
        "the answer is\n\n"
        "**I_up,loss(z_i, z_test) = - g_test^T H^-1 g_i**\n\n"
        "with g_test = grad L(z_test, theta_hat) (no L2 term), g_i = grad of the training term "
        "ell_i = L(z_i, theta) + (l2/2)||theta||^2 at theta_hat, and H the Hessian of R at "
        "theta_hat. Removing z_i is upweighting it by epsilon = -1/n.\n\n"
        "You compute each piece on a tiny problem (3 against 8, digits shrunk to 4x4, so "
        "p = 32 weights and H is a 32 x 32 matrix), and a checker compares it with "
        "`iw.Influence`. Fill in every line marked `# TODO`, then run the check below it."
    ),
    code(
        "import torch  # noqa: F401 (torch.linalg.solve, for your answers)\n"
        "import torch.nn.functional as F\n"
        "from torch.func import grad, hessian  # noqa: F401 (for your answers)\n\n"
        "import influence_widgets as iw\n"
        "from influence_widgets.exercises import by_hand\n\n"
        "data = iw.datasets.digits()\n\n\n"
        "def threes_and_eights(X, y):\n"
        "    keep = (y == 3) | (y == 8)\n"
        "    small = X[keep].reshape(-1, 4, 2, 4, 2).mean((2, 4)).reshape(-1, 16)  # 4x4 images\n"
        "    return small.double(), (y[keep] == 8).long()  # class 0 = '3', class 1 = '8'\n\n\n"
        "X, y = threes_and_eights(data.X_train, data.y_train)\n"
        "X_test, y_test = threes_and_eights(data.X_test, data.y_test)\n"
        "l2 = 0.01\n"
        "model = iw.models.logistic_regression((16, 2), bias=False)  # logits = W x, W is 2 x 16\n"
        "print(iw.train(model, (X, y), l2=l2, progress=False))\n"
        "inf = iw.Influence(model, (X, y), l2=l2, progress=False)\n"
        "n, p = len(y), inf.p\n"
        "print(f'n = {n} training points, p = {p} parameters')"
    ),
    md(
        "The model as a function of a flat parameter vector theta (the 32 weights, row by row), "
        "so that `torch.func` can differentiate it. We explain test point `t` and training "
        "point `i`."
    ),
    code(
        "theta = model.weight.detach().reshape(-1)  # theta_hat, shape (p,)\n\n\n"
        "def losses(theta, X, y):\n"
        "    '''Per-sample cross-entropy L(z, theta) of the model with weights theta.'''\n"
        "    return F.cross_entropy(X @ theta.reshape(2, 16).T, y, reduction='none')\n\n\n"
        "t, i = 0, 0\n"
        "x_test, y_t = X_test[t : t + 1], y_test[t : t + 1]\n"
        "x_i, y_i = X[i : i + 1], y[i : i + 1]\n"
        "print(f'test point {t}: label {int(y_t)}; training point {i}: label {int(y_i)}')"
    ),
    md(
        "## Step 1: the two gradients\n\n"
        "`torch.func.grad(f)(theta)` differentiates a function `f` that returns one number. "
        "Remember which of the two carries the L2 term."
    ),
    answer(
        "g_test = ...  # TODO: grad L(z_test, theta_hat), shape (p,)\n"
        "g_i = ...  # TODO: grad ell_i(theta_hat), ell_i = L(z_i, theta) + (l2/2)||theta||^2",
        "g_test = grad(lambda th: losses(th, x_test, y_t).sum())(theta)\n"
        "g_i = grad(lambda th: losses(th, x_i, y_i).sum() + 0.5 * l2 * th @ th)(theta)",
    ),
    check("by_hand.check_gradients(g_test, g_i, inf, x_test, y_t, i)"),
    md(
        "## Step 2: the Hessian\n\n"
        "H is the Hessian of R over **all** n training points at theta_hat: "
        "`torch.func.hessian(R)(theta)` for a function R(theta) that returns one number."
    ),
    answer(
        "H = ...  # TODO: Hessian of R at theta_hat, shape (p, p)",
        "H = hessian(lambda th: losses(th, X, y).mean() + 0.5 * l2 * th @ th)(theta)",
    ),
    check("by_hand.check_hessian(H, inf)"),
    md(
        "## Step 3: I_up,loss\n\n"
        "Combine them. Solve with H rather than inverting it: `torch.linalg.solve(H, v)` is "
        "H^-1 v."
    ),
    answer(
        "I_up_loss = ...  # TODO: -g_test^T H^-1 g_i, one number",
        "I_up_loss = -g_test @ torch.linalg.solve(H, g_i)",
    ),
    check("by_hand.check_influence_value(I_up_loss, inf, x_test, y_t, i)"),
    md(
        "## Step 4: what removing z_i would do\n\n"
        "Removing z_i from the training set is upweighting it by epsilon = -1/n. Predict the "
        "change of the test loss (positive: the loss would rise, so z_i helped)."
    ),
    answer(
        "removal_effect = ...  # TODO: predicted change of L(z_test) when z_i is removed",
        "removal_effect = -I_up_loss / n",
    ),
    check("by_hand.check_removal_effect(removal_effect, inf, x_test, y_t, i)"),
    md(
        "## Compare with the library\n\n"
        "`Influence` computes the same numbers for all n training points at once; "
        "`predicted_removal_effect` is the last step for every i."
    ),
    code(
        "effects = inf.predicted_removal_effect(x_test, y_t)[0]\n"
        "print(f'the library: {float(effects[i]):+.6g}')\n"
        "print(f'rank of z_i among {n} points by |effect|: '\n"
        "      f'{int((effects.abs() > effects[i].abs()).sum()) + 1}')"
    ),
]


DEPENDS = [
    md(
        "# Exercise 2: which training digits does a test digit depend on?\n\n"
        "Before opening the explorer, predict. For one test digit, six training digits are "
        "shown, lettered A to F. Some are among its 10 most **helpful** training points "
        "(removing one would raise the test loss), some among its 10 most **harmful** "
        "(removing one would lower it), and some are neither. The model is a logistic "
        "regression on all ten digit classes, 1,300 training images."
    ),
    code(
        "import influence_widgets as iw\n"
        "from influence_widgets.exercises import depends\n\n"
        "data = iw.datasets.digits()\n"
        "model = iw.models.logistic_regression(data)\n"
        "iw.train(model, data, l2=0.01, progress=False)\n"
        "inf = iw.Influence(model, data, l2=0.01, progress=False)\n"
        "t = 0\n"
        "x_test, y_test = data.X_test[t : t + 1], data.y_test[t : t + 1]\n"
        "candidates = depends.pick_candidates(inf, data, t, k=10)\n"
        "fig = candidates.plot()"
    ),
    md(
        "## Step 1: predict\n\n"
        "Look at the shapes and the labels. Put the letters you think are among the 10 most "
        "helpful in `helpful` and those among the 10 most harmful in `harmful`; the rest count "
        "as neither. Four of six right passes."
    ),
    answer(
        "helpful = ...  # TODO: a set of letters, e.g. {'A', 'B'}\n"
        "harmful = ...  # TODO: a set of letters",
        "# Helpful: 0s shaped like the test 0 (narrow, closed). Harmful: 9s, whose closed top\n"
        "# loop looks like a 0. The 5 shares little with a 0. A is a 0 too: one of three is a\n"
        "# reasonable miss, since 130 training 0s share the credit and only 10 make the top.\n"
        "helpful = {'A', 'C', 'E'}\n"
        "harmful = {'D', 'F'}",
    ),
    check("depends.check_prediction(helpful, harmful, candidates)"),
    md(
        "## Step 2: compare with `inf.top`\n\n"
        "`inf.top(x_test, y_test, k=10)` ranks all 1,300 training points by "
        "`predicted_removal_effect`. `candidates.indices` maps each letter to its training index. "
        "Which candidates are really in the top 10 of each kind?"
    ),
    answer(
        "top = ...  # TODO: inf.top(...) for this test point, k=10\n"
        "in_helpful = ...  # TODO: the letters whose index is in top.helpful[0]\n"
        "in_harmful = ...  # TODO: the letters whose index is in top.harmful[0]",
        "top = inf.top(x_test, y_test, k=10)\n"
        "in_helpful = {c for c, j in candidates.indices.items() if j in top.helpful[0]}\n"
        "in_harmful = {c for c, j in candidates.indices.items() if j in top.harmful[0]}",
    ),
    check("depends.check_lookup(in_helpful, in_harmful, candidates)"),
    md(
        "## Now open the explorer\n\n"
        "Click the test digit (it is selected below): the panel shows the same ranking with "
        "images. Try a misclassified digit (tinted) and predict again before you look."
    ),
    code(
        "explorer = iw.InfluenceExplorer(inf, data, k=10).wait_ready()\nexplorer.selected = t\nexplorer"
    ),
]


WRONG_LABELS = [
    md(
        "# Exercise 3: find the wrong labels, on a budget\n\n"
        "Someone mislabelled 65 of the 1,300 training digits. You may check 65 images by hand. "
        "Which do you check?\n\n"
        "Koh & Liang (Section 5.4) rank training points by **self-influence** "
        "I_up,loss(z_i, z_i) = -g_i^T H^-1 g_i: how much a point's own loss depends on keeping "
        "it in the training set. It is never positive; the most negative points are the ones "
        "the model bends most to fit, which is what a wrong label forces it to do."
    ),
    code(
        "import torch\n\n"
        "import influence_widgets as iw\n"
        "from influence_widgets.exercises import wrong_labels\n\n"
        "planted = wrong_labels.plant_wrong_labels(iw.datasets.digits(), n_wrong=65, budget=65)\n"
        "data = planted.data  # the training labels you are given, some of them wrong\n"
        "model = iw.models.logistic_regression(data)\n"
        "iw.train(model, data, l2=0.01, progress=False)\n"
        "inf = iw.Influence(model, data, l2=0.01, progress=False)\n"
        "print(f'budget: {planted.budget} checks among {len(data.y_train)} training points')"
    ),
    md(
        "## Step 1: choose what to check\n\n"
        "Compute every training point's self-influence with `inf.self_influence()`, rank, and "
        "keep the indices of the `planted.budget` most suspicious points."
    ),
    answer(
        "self_inf = ...  # TODO: self-influence of every training point, shape (n,)\n"
        "chosen = ...  # TODO: the planted.budget training indices you would check",
        "self_inf = inf.self_influence()\nchosen = torch.argsort(self_inf)[: planted.budget]",
    ),
    check("wrong_labels.check_search(chosen, planted, model)"),
    md(
        "The checker also tells you what the training loss alone would catch. On these digits "
        "the classes are well separated, so a wrong label also shows as a large training loss "
        "and both rankings do well; in the paper's spam data set, self-influence catches more. "
        "Look at the points you chose: are all of them wrongly labelled, or just odd digits?"
    ),
    code(
        "import matplotlib.pyplot as plt\n\n"
        "fig, axes = plt.subplots(1, 10, figsize=(10, 1.6))\n"
        "for ax, j in zip(axes, torch.argsort(inf.self_influence())[:10], strict=True):\n"
        "    ax.imshow(data.images('train')[int(j)], cmap='gray_r')\n"
        "    ax.set_title(f'#{int(j)} label {int(data.y_train[j])}', fontsize=8)\n"
        "    ax.axis('off')"
    ),
]


WHEN_FAILS = [
    md(
        "# Exercise 4: when influence fails\n\n"
        "Influence is a second-order Taylor expansion of the training risk around a minimum "
        "theta_hat, and it needs H^-1. A logistic regression with L2 is strictly convex: H is "
        "positive definite, and influence predicts leave-one-out retraining almost exactly "
        "(Koh & Liang, Figure 2). Here is a small neural network instead: two tanh hidden "
        "layers of 8 units, trained **without** weight decay on 300 digits. Predict first, "
        "then measure."
    ),
    code(
        "import warnings\n\n"
        "import torch\n\n"
        "import influence_widgets as iw\n"
        "from influence_widgets.exercises import when_fails\n\n"
        "warnings.simplefilter('ignore', iw.InfluenceWarning)  # we know it is not a tight minimum\n"
        + UNDAMPED_MLP
        + "with torch.no_grad():  # explain the test point with the largest loss\n"
        "    test_losses = torch.nn.functional.cross_entropy(\n"
        "        mlp(small.X_test.double()), small.y_test, reduction='none'\n"
        "    )\n"
        "t = int(test_losses.argmax())\n"
        "x_test, y_test = small.X_test[t : t + 1], small.y_test[t : t + 1]"
    ),
    md(
        "## Step 1: predict\n\n"
        "Will influence's predicted removal effects match leave-one-out retraining, with a "
        "Pearson R of at least 0.9 over the 10 most influential training points?"
    ),
    answer(
        "will_match = ...  # TODO: True or False",
        "will_match = False  # non-convex, trained without weight decay",
    ),
    check("when_fails.check_prediction(will_match)"),
    md(
        "## Step 2: try it without damping\n\nUndamped influence needs H^-1 at theta_hat "
        '(`damping=0`; the default, `damping="auto"`, would add a damping for you):'
    ),
    code(
        "try:\n"
        "    iw.Influence(mlp, small, l2=0.0, damping=0, progress=False).fit()\n"
        "    print('H is positive definite')\n"
        "except iw.NotPositiveDefiniteError as err:\n"
        "    print(err)"
    ),
    md(
        "H is not positive definite: undamped influence does not exist for this model. The "
        "usual remedy is damping, H + damping I (the paper's code uses 0.01 for its CNN); the "
        "message above says how much is needed at least. Use `damping=0.001`, run "
        "`iw.validate_loo` with `n_remove=10` and `max_iter=200` (quick), and report its "
        "Pearson R."
    ),
    answer(
        "inf_mlp = ...  # TODO: iw.Influence for mlp on small, l2=0.0, damping=0.001\n"
        "loo = ...  # TODO: iw.validate_loo(...) for x_test, y_test\n"
        "reported_r = ...  # TODO: its Pearson R, a number",
        "inf_mlp = iw.Influence(mlp, small, l2=0.0, damping=0.001, progress=False)\n"
        "loo = iw.validate_loo(inf_mlp, x_test, y_test, n_remove=10, max_iter=200, "
        "progress=False)\n"
        "reported_r = loo.pearson",
    ),
    check("when_fails.check_loo(loo, reported_r, inf_mlp, x_test, y_test)"),
    code("if loo is not ...:\n    loo.plot()"),
    md(
        "## Step 3: conclude\n\n"
        "Did influence match (R >= 0.9)? And why? Pick the reason from `when_fails.REASONS`:"
    ),
    code("for letter, text in when_fails.REASONS.items():\n    print(f'{letter}: {text}\\n')"),
    answer(
        "matched = ...  # TODO: True or False, from your measurement\n"
        "reason = ...  # TODO: one letter of when_fails.REASONS",
        "matched = False\nreason = 'B'",
    ),
    check("when_fails.check_conclusion(matched, reason, loo, will_match)"),
    md(
        "For contrast, the same leave-one-out check on a convex model (logistic regression "
        "with L2) for the same test point:"
    ),
    code(
        "logreg = iw.models.logistic_regression(small)\n"
        "iw.train(logreg, small, l2=0.01, progress=False)\n"
        "convex = iw.Influence(logreg, small, l2=0.01, progress=False)\n"
        "iw.validate_loo(convex, x_test, y_test, n_remove=10, progress=False)"
    ),
]


EXERCISES = {
    "01_influence_by_hand.ipynb": BY_HAND,
    "02_predict_helpful_harmful.ipynb": DEPENDS,
    "03_find_wrong_labels.ipynb": WRONG_LABELS,
    "04_when_influence_fails.ipynb": WHEN_FAILS,
}


def _version(cells: list, solution: bool) -> list:
    """The cells of the student's (``solution=False``) or the teacher's notebook."""
    out = []
    for cell in cells:
        if isinstance(cell, tuple):
            _, blank, filled = cell
            out.append(new_code_cell(filled if solution else blank, metadata={"tags": ["answer"]}))
        else:
            out.append(cell)
    return out


def write_all(directory: Path = HERE) -> list[Path]:
    """Write each exercise into ``directory`` (student) and ``directory/solutions`` (teacher),
    code formatted by ruff; returns the paths, students' first."""
    (directory / "solutions").mkdir(parents=True, exist_ok=True)
    paths = []
    for solution in (False, True):
        folder = directory / "solutions" if solution else directory
        for name, cells in EXERCISES.items():
            write(folder / name, _version(cells, solution))
            paths.append(folder / name)
    format_with_ruff(paths)
    return paths


if __name__ == "__main__":
    write_all()
