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
        "**Time:** about 15 minutes. **Assumes:** PyTorch tensors and `torch.func` (`grad` and "
        "`hessian` of a function that returns one number), and the quickstart "
        "(`notebooks/01_quickstart.ipynb`): what a helpful and a harmful training point are.\n\n"
        r"Koh & Liang (2017) ask: how would the loss on a test point $z_{test}$ change if a "
        r"training point $z_i$ were upweighted by a small $\varepsilon$? At a minimum "
        r"$\hat\theta$ of the training risk"
        "\n\n"
        r"$$R(\theta) = \frac{1}{n} \sum_{j=1}^{n} \ell_j(\theta), \qquad "
        r"\ell_j(\theta) = L(z_j, \theta) + \frac{\lambda}{2} \|\theta\|^2$$"
        "\n\n"
        r"($\lambda$ is `l2` in the code) the answer is"
        "\n\n"
        r"$$\mathcal{I}_{\mathrm{up,loss}}(z_i, z_{test}) = -\, g_{test}^\top H^{-1} g_i$$"
        "\n\n"
        r"with $g_{test} = \nabla_\theta L(z_{test}, \hat\theta)$ (the test loss has no L2 "
        r"term), $g_i = \nabla_\theta \ell_i(\hat\theta)$ (the training term, L2 term "
        r"included) and $H = \nabla^2_\theta R(\hat\theta)$, the Hessian of the risk. "
        r"Removing $z_i$ is upweighting it by $\varepsilon = -1/n$."
        "\n\n"
        "You compute each piece on a tiny problem (the digit '3' against the digit '8', images "
        r"shrunk to 4x4, so $p = 32$ weights and $H$ is a $32 \times 32$ matrix), and a checker "
        "compares it with `iw.Influence`: when an answer is wrong, it names the mistake and the "
        "idea to revisit. Fill in every line marked `# TODO`, then run the check below it."
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
        "    return small.double(), (y[keep] == 8).long()  # class 0 is '3', class 1 is '8'\n\n\n"
        "class_names = ['3', '8']\n"
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
        r"The model as a function of a flat parameter vector $\theta$ (`theta`: the 32 weights, "
        "row by row), so that `torch.func` can differentiate it. We explain test point `t` and "
        "training point `i`."
    ),
    code(
        "theta = model.weight.detach().reshape(-1)  # theta_hat, shape (p,)\n\n\n"
        "def losses(theta, X, y):\n"
        "    '''Per-sample cross-entropy L(z, theta) of the model with weights theta.'''\n"
        "    return F.cross_entropy(X @ theta.reshape(2, 16).T, y, reduction='none')\n\n\n"
        "t, i = 0, 0\n"
        "x_test, y_t = X_test[t : t + 1], y_test[t : t + 1]\n"
        "x_i, y_i = X[i : i + 1], y[i : i + 1]\n"
        "print(f'test point {t}: the digit {class_names[int(y_t)]!r}; '\n"
        "      f'training point {i}: the digit {class_names[int(y_i)]!r}')"
    ),
    md(
        "## Step 1: the two gradients\n\n"
        "`torch.func.grad(f)(theta)` differentiates a function `f` that returns one number. "
        r"Remember which of the two carries the L2 term: $g_{test}$ or $g_i$."
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
        r"$H$ is the Hessian of $R$ over **all** $n$ training points at $\hat\theta$: "
        r"`torch.func.hessian(R)(theta)` for a function $R(\theta)$ that returns one number."
    ),
    answer(
        "H = ...  # TODO: Hessian of R at theta_hat, shape (p, p)",
        "H = hessian(lambda th: losses(th, X, y).mean() + 0.5 * l2 * th @ th)(theta)",
    ),
    check("by_hand.check_hessian(H, inf, i)"),
    md(
        r"## Step 3: $\mathcal{I}_{\mathrm{up,loss}}(z_i, z_{test})$"
        "\n\n"
        r"Combine them. Solve with $H$ rather than inverting it: `torch.linalg.solve(H, v)` is "
        r"$H^{-1} v$."
    ),
    answer(
        "I_up_loss = ...  # TODO: -g_test^T H^-1 g_i, one number",
        "I_up_loss = -g_test @ torch.linalg.solve(H, g_i)",
    ),
    check("by_hand.check_influence_value(I_up_loss, inf, x_test, y_t, i)"),
    md(
        r"## Step 4: what removing $z_i$ would do"
        "\n\n"
        r"Removing $z_i$ from the training set is upweighting it by $\varepsilon = -1/n$. "
        r"Predict the change of the test loss to first order in $\varepsilon$ (positive: the "
        r"loss would rise, so $z_i$ helped)."
    ),
    answer(
        "removal_effect = ...  # TODO: predicted change of L(z_test) when z_i is removed",
        "removal_effect = -I_up_loss / n",
    ),
    check("by_hand.check_removal_effect(removal_effect, inf, x_test, y_t, i)"),
    md(
        "## Compare with the library\n\n"
        "`Influence` computes the same numbers for all $n$ training points at once; "
        "`predicted_removal_effect` is step 4 for every $i$."
    ),
    code(
        "effects = inf.predicted_removal_effect(x_test, y_t)[0]\n"
        "print(f'the library: {float(effects[i]):+.6g}')\n"
        "print(f'rank of z_i among {n} points by |effect|: '\n"
        "      f'{int((effects.abs() > effects[i].abs()).sum()) + 1}')"
    ),
]


# Exercise 2's test digit: a '4' that no tutorial shows (the quickstart shows test points 0 and
# 3), whose eight candidates show each idea of the introduction.
DEPENDS_TEST_POINT = 237

DEPENDS = [
    md(
        "# Exercise 2: which training digits does a test digit depend on?\n\n"
        "**Time:** about 15 minutes. **Assumes:** the quickstart "
        "(`notebooks/01_quickstart.ipynb`): a training point is **helpful** to a test point if "
        "removing it would raise the test loss, **harmful** if removing it would lower it. No "
        "calculus: you reason from pictures, then read `inf.top`.\n\n"
        "Before opening the explorer, predict. For one test digit, eight training digits are "
        "shown, lettered A to H. Some are among its 10 most helpful training points, some among "
        "its 10 most harmful, and some are neither. The model is a logistic regression on all "
        "ten digit classes, 1,300 training images. The label alone will not tell you: the "
        "eight are chosen so that sorting them by label (same label helps, other label hurts) "
        "places at most four right, and guessing about three on average."
    ),
    md(
        "## Two ideas to reason with\n\n"
        r"The influence of a training point $z_i$ on the test loss is "
        r"$\mathcal{I}_{\mathrm{up,loss}}(z_i, z_{test}) = -\nabla_\theta L(z_{test})^\top "
        r"H^{-1} \nabla_\theta \ell_i$, and for a softmax model the gradient of a point's loss "
        r"is its remaining error times its input: $\nabla_W L(x, y) = (p(x) - e_y)\, x^\top$, "
        r"where $p(x)$ are the model's class probabilities and $e_y$ is 1 at the label, 0 "
        "elsewhere.\n\n"
        "1. **A point the model already fits with confidence barely matters.** If the model "
        r"gives $z_i$ its own label with probability close to 1, $p(x_i) - e_{y_i}$ is close "
        "to zero, and so is its gradient: whatever its label and its shape. Each image below "
        "says how sure the model is of it.\n"
        "2. **Among the others, label and shape together set the sign.** A training digit the "
        "model is unsure of pulls the weights toward reading *its* pixels as *its* label. If "
        "it looks like the test digit and carries another label, that pull works against the "
        "test digit. If it carries the test digit's label and looks like it, it works for it. "
        "And if it carries the same label but is written very differently? Think about where "
        "the pull goes.\n\n"
        "Run the cell: the test digit comes first, then the candidates."
    ),
    code(
        "import influence_widgets as iw\n"
        "from influence_widgets.exercises import depends\n\n"
        "data = iw.datasets.digits()\n"
        "model = iw.models.logistic_regression(data)\n"
        "iw.train(model, data, l2=0.01, progress=False)\n"
        "inf = iw.Influence(model, data, l2=0.01, progress=False)\n"
        f"t = {DEPENDS_TEST_POINT}\n"
        "x_test, y_test = data.X_test[t : t + 1], data.y_test[t : t + 1]\n"
        "candidates = depends.pick_candidates(inf, data, t, k=10)\n"
        "fig = candidates.plot()"
    ),
    md(
        "## Step 1: predict\n\n"
        "Put the letters you think are among the 10 most helpful in `helpful` and those among "
        "the 10 most harmful in `harmful`; the rest count as neither. Six of eight right "
        "passes. The checker says how many you placed right in each group, not which."
    ),
    answer(
        "helpful = ...  # TODO: a set of letters, e.g. {'A', 'B'}\n"
        "harmful = ...  # TODO: a set of letters",
        "# A and F: 4s shaped like this one that the model is unsure of (62%): helpful.\n"
        "# B and D: 4s written so differently that the model barely believes them (3%, 5%):\n"
        "# fitting them pulls the 4-weights toward other strokes: harmful.\n"
        "# G and H: 6s the model is unsure of, whose closed loop resembles this 4's: harmful.\n"
        "# C (a 4 like a 6) and E (a 5) are fitted with confidence (over 80%): neither.\n"
        "helpful = {'A', 'F'}\n"
        "harmful = {'B', 'D', 'G', 'H'}",
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
        "## What to take away\n\n"
        "Most training points barely matter to one prediction: the model fits them already. "
        "The ones that matter are those it still struggles with, and their label says less "
        "than you might think: a digit of the test digit's own class, written differently, can "
        "hurt it, because fitting it moves that class's weights toward strokes the test digit "
        r"does not have (the $H^{-1}$ in the formula accounts for every other training point "
        "that must stay fitted).\n\n"
        "## Now open the explorer\n\n"
        "Click the test digit (it is selected below): the panel shows the same ranking with "
        "images. Try a misclassified digit (marked in the gallery) and predict again before "
        "you look."
    ),
    code(
        "explorer = iw.InfluenceExplorer(inf, data, k=10).wait_ready()\nexplorer.selected = t\nexplorer"
    ),
]


WRONG_LABELS = [
    md(
        "# Exercise 3: find the wrong labels, on a budget\n\n"
        "**Time:** about 10 minutes. **Assumes:** the quickstart "
        "(`notebooks/01_quickstart.ipynb`) and ranking a tensor with `torch.argsort`; "
        "notebook 04 (fixing mislabelled data) tells the same story at length.\n\n"
        "Someone mislabelled 65 of the 1,300 training digits. You may check 65 images by hand. "
        "Which do you check?\n\n"
        "Koh & Liang (Section 5.4) rank training points by **self-influence**"
        "\n\n"
        r"$$\mathcal{I}_{\mathrm{up,loss}}(z_i, z_i) = -\nabla_\theta \ell_i^\top H^{-1} "
        r"\nabla_\theta \ell_i$$"
        "\n\n"
        "how much a point's own loss depends on keeping it in the training set. It is never "
        r"positive ($H^{-1}$ is positive definite); the most negative points are the ones the "
        "model bends most to fit, which is what a wrong label forces it to do."
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
        "    ax.set_title(f'#{int(j)} label {data.class_names[data.y_train[j]]!r}', fontsize=8)\n"
        "    ax.axis('off')"
    ),
]


WHEN_FAILS = [
    md(
        "# Exercise 4: when influence fails\n\n"
        "**Time:** about 15 minutes, of which about a minute of computing. **Assumes:** "
        "notebook 02 (leave-one-out retraining and its Pearson R against influence) and what "
        "a positive definite matrix is.\n\n"
        "Influence is a second-order Taylor expansion of the training risk around a minimum "
        r"$\hat\theta$, and it needs $H^{-1}$. A logistic regression with L2 is strictly "
        "convex: $H$ is positive definite, and influence predicts leave-one-out retraining "
        "almost exactly (Koh & Liang, Figure 2). Here is a small neural network instead: two "
        "tanh hidden layers of 8 units, trained **without** weight decay on 300 digits. "
        "Predict first, then measure."
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
        "## Step 2: try it without damping\n\n"
        r"Undamped influence needs $H^{-1}$ at $\hat\theta$ "
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
        "$H$ is not positive definite: undamped influence does not exist for this model. The "
        r"usual remedy is damping, $H + \delta I$ (the paper's code uses $\delta = 0.01$ for "
        "its CNN); the message above says how much is needed at least. Use `damping=0.001`, run "
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
        r"Did influence match ($R \ge 0.9$)? And why? Pick the reason from `when_fails.REASONS`:"
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


WHICH_METHOD = [
    md(
        "# Exercise 5: which training points really made this prediction?\n\n"
        "**Time:** about 20 minutes, of which about half a minute of computing. **Assumes:** the "
        "quickstart (`notebooks/01_quickstart.ipynb`: helpful and harmful training points), "
        "exercise 4 (influence functions rest on an expansion at a minimum) and what a rank "
        "(Spearman) correlation is. Grad-Dot and TracIn are introduced here.\n\n"
        r"Three methods give every training point $z_i$ a score $\tau_i$ for a test point "
        r"$z_{test}$, positive when $z_i$ helped it (removing $z_i$ would raise the test loss):"
        "\n\n"
        "| method | score | idea |\n"
        "| --- | --- | --- |\n"
        r"| influence functions (`iw.Influence`) | $-\frac{1}{n} \nabla_\theta L(z_{test})^\top "
        r"H^{-1} \nabla_\theta \ell_i$ at $\hat\theta$ | a quadratic expansion of the training "
        "risk at its minimum (Koh & Liang, 2017) |\n"
        r"| Grad-Dot (`iw.GradDot`) | $\nabla_\theta L(z_{test})^\top \nabla_\theta L(z_i)$ at "
        r"$\hat\theta$ | one gradient step on $z_i$ changes the test loss by about this; no "
        "Hessian |\n"
        r"| TracIn (`iw.TracIn`) | $\sum_k \eta_k \nabla_\theta L(z_{test}, \theta_k)^\top "
        r"\nabla_\theta L(z_i, \theta_k)$ | the same, summed over checkpoints $\theta_k$ saved "
        r"during training with their learning rates $\eta_k$ (Pruthi et al., 2020) |"
        "\n\n"
        "Which one to trust? Ask the data, with the **linear datamodeling score** (LDS; Park "
        r"et al., 2023). Retrain the model from scratch on $M$ random halves $S_j$ of the "
        r"training set and record each retrained model's margin $f_j(z) = \log p(y|x) - "
        r"\log(1 - p(y|x))$ on a test point. A method predicts "
        r"$g_j(z) = \sum_{i \in S_j} \tau_i$ (the more helpful points a half keeps, the "
        "larger the margin), and"
        "\n\n"
        r"$$\mathrm{LDS}(z) = \mathrm{Spearman}_j\big(f_j(z),\, g_j(z)\big)$$"
        "\n\n"
        "averaged over the test points: 1 when the method ranks the halves exactly as "
        "retraining does. Retraining the same halves once more with other seeds gives the "
        "**noise floor**, the Spearman correlation between the two runs: how well retraining "
        "agrees with itself.\n\n"
        "Two models learn the same 300 digits: a logistic regression, trained to the minimum "
        "of its convex training risk (with L2), and a small ReLU network trained as "
        "practitioners train, with a few epochs of Adam. Both saved checkpoints for TracIn."
    ),
    code(
        "import matplotlib.pyplot as plt\n"
        "import torch\n\n"
        "import influence_widgets as iw  # noqa: F401 (for your answers)\n"
        "from influence_widgets.exercises import which_method\n\n"
        "torch.set_num_threads(1)  # small models: one thread is the fastest\n"
        "setup = which_method.setup()  # trains both models: a few seconds\n"
        "x_test, y_test = setup.x_test, setup.y_test\n"
        "setup"
    ),
    md(
        "## Step 1: predict\n\n"
        "Which method will agree best with retraining on the linear model? And on the network? "
        "Answer with a method's name from the list below. The checker only records your "
        "prediction; it tells you whether you were right once you have measured."
    ),
    code("for name, what in which_method.METHODS.items():\n    print(f'{name}: {what}')"),
    answer(
        "predict_linear = ...  # TODO: 'influence', 'grad-dot' or 'tracin'\n"
        "predict_network = ...  # TODO: 'influence', 'grad-dot' or 'tracin'",
        "predict_linear = 'influence'  # convex, trained to its minimum\n"
        "predict_network = 'tracin'  # stopped mid-way: follow the training path",
    ),
    check("which_method.check_prediction(predict_linear, predict_network)"),
    md(
        "## Step 2: measure\n\n"
        "For the linear model, `setup.linear` holds the trained `.model`, the L2 coefficient "
        "`.l2` of its training risk, its `.checkpoints` and the `.train_fn` that retrains it "
        "the way it was trained; `setup.train` is the training set.\n\n"
        "1. Build the three methods on that model and score the test points with each: "
        "`method.scores(x_test, y_test)`, one row per test point and one column per training "
        "point.\n"
        "2. Retrain **once**: `iw.lds` with one method's attribution, the model's own "
        "`train_fn`, and the `subsets`, `fraction` and `seed` that `setup` gives (and "
        "`progress=False`). It returns an `LDSResult`, noise floor included.\n"
        "3. `result.rescore(scores)` scores another method against the same retrains, without "
        "retraining.\n\n"
        "Keep both answers as dicts keyed by the method names of Step 1."
    ),
    answer(
        "scores_linear = ...  # TODO: {'influence': ..., 'grad-dot': ..., 'tracin': ...}, (T, n)\n"
        "lds_linear = ...  # TODO: the same keys, each an LDSResult on ONE set of retrains",
        "def measure(case):\n"
        '    """Each method\'s scores of the test points, and its LDS on one set of retrains."""\n'
        "    methods = {\n"
        "        'influence': iw.Influence(case.model, setup.train, l2=case.l2, progress=False),\n"
        "        'grad-dot': iw.GradDot(case.model, setup.train, progress=False),\n"
        "        'tracin': iw.TracIn(case.model, setup.train, case.checkpoints, progress=False),\n"
        "    }\n"
        "    scores = {name: m.scores(x_test, y_test) for name, m in methods.items()}\n"
        "    retrains = iw.lds(\n"
        "        methods['influence'], setup.train, x_test=x_test, y_test=y_test,\n"
        "        train_fn=case.train_fn, subsets=setup.subsets, fraction=setup.fraction,\n"
        "        seed=setup.seed, progress=False,\n"
        "    )\n"
        "    return scores, {name: retrains.rescore(s) for name, s in scores.items()}\n\n\n"
        "scores_linear, lds_linear = measure(setup.linear)",
    ),
    check("which_method.check_measurement(scores_linear, lds_linear, setup, 'linear')"),
    md(
        "Now the same for the network, `setup.network` (a function of the model, written for "
        "the linear one, saves typing). Read the warnings that fitting influence functions on "
        "it prints."
    ),
    answer(
        "scores_network = ...  # TODO: as for the linear model, on setup.network\n"
        "lds_network = ...  # TODO: each method's LDSResult, on one set of retrains",
        "scores_network, lds_network = measure(setup.network)",
    ),
    check("which_method.check_measurement(scores_network, lds_network, setup, 'network')"),
    md(
        "Side by side (the error bars are two standard errors; the dashed line is the noise floor):"
    ),
    code(
        "if lds_linear is not ... and lds_network is not ...:\n"
        "    fig, axes = plt.subplots(1, 2, figsize=(9, 3), sharey=True)\n"
        "    for ax, (name, results) in zip(\n"
        "        axes, [('linear', lds_linear), ('network', lds_network)], strict=True\n"
        "    ):\n"
        "        means = [r.mean for r in results.values()]\n"
        "        ax.bar(list(results), means, yerr=[2 * r.se for r in results.values()])\n"
        "        floor = results['influence'].noise_floor\n"
        "        ax.axhline(floor, color='k', ls='--', label=f'noise floor {floor:.2f}')\n"
        "        ax.set_title(name)\n"
        "        ax.legend(loc='lower right')\n"
        "    axes[0].set_ylabel('LDS')"
    ),
    md(
        "And what fitting influence functions reported about each model at its trained "
        "parameters: the gradient of the training risk (zero at a minimum), the smallest "
        r"eigenvalue of its Hessian $H$ (positive at a strict minimum) and the damping that "
        '`damping="auto"` added to $H$ to make it invertible:'
    ),
    code("print(which_method.fit_report(setup))"),
    md(
        "## Step 3: explain\n\n"
        "Which method agreed best with retraining on each model? Count a method as ahead of "
        "another only when their LDS differ by more than twice the standard error of the "
        "difference (both are scored on the same test points and retrains, so compare them "
        "test point by test point); the checker accepts any method not clearly behind the "
        "best."
    ),
    answer(
        "best_linear = ...  # TODO: a method's name, from your measurement\n"
        "best_network = ...  # TODO: a method's name, from your measurement",
        "best_linear = 'influence'\nbest_network = 'tracin'",
    ),
    check(
        "which_method.check_best(\n"
        "    best_linear, best_network, predict_linear, predict_network, lds_linear, "
        "lds_network, setup\n"
        ")"
    ),
    md(
        "Why the difference? Pick **every** statement that your measurements support, and "
        "none other; the checker judges each one against your own numbers."
    ),
    code("for letter, text in which_method.REASONS.items():\n    print(f'{letter}: {text}\\n')"),
    answer(
        "reasons = ...  # TODO: a set of letters, e.g. {'A'}",
        "reasons = {'A', 'B', 'C'}",
    ),
    check("which_method.check_reasons(reasons, lds_linear, lds_network, setup)"),
    md(
        "## What to take away\n\n"
        "No attribution method is right everywhere. Influence functions expand the training "
        "risk around a minimum: nearly exact for a convex model trained to it, less so for a "
        "network that training leaves mid-way, as a few epochs of Adam do; TracIn follows the "
        "path training took instead. The LDS lets the data decide for your model and your "
        "training recipe, and its noise floor says how much agreement retraining allows at "
        "all: a low LDS on a noisy recipe is not the failure that a low LDS on a "
        "deterministic one is. (A method can even score above the noise floor: the floor "
        "correlates two noisy retrains with each other, while a method's prediction carries no "
        "retraining noise of its own.)\n\n"
        "Going further: TRAK (`iw.TRAK`, Park et al., 2023) averages projected gradients over "
        "several independently trained models. Train a few networks with "
        "`setup.network.train_fn` at other seeds, score them with `iw.TRAK([...], "
        "setup.train)`, and rescore the network's retrains with those scores."
    ),
]


EXERCISES = {
    "01_influence_by_hand.ipynb": BY_HAND,
    "02_predict_helpful_harmful.ipynb": DEPENDS,
    "03_find_wrong_labels.ipynb": WRONG_LABELS,
    "04_when_influence_fails.ipynb": WHEN_FAILS,
    "05_which_method_agrees.ipynb": WHICH_METHOD,
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
