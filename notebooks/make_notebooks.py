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
        "Hessian has eigenvalues at or below zero, so it cannot be inverted as it is "
        '(`damping=0` asks for it as it is; the default, `damping="auto"`, would add the '
        "smallest damping of its ladder that makes it invertible, and say so)."
    ),
    new_code_cell(
        UNDAMPED_MLP + "deep = iw.Influence(\n"
        "    mlp, (small.X_train, small.y_train), l2=0.0, damping=0, progress=False\n"
        ")\n"
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
FIXING_MISLABELED = [
    new_markdown_cell(
        "# Fixing mislabeled training data (the paper's Sec 5.4, Figure 6)\n\n"
        "Training labels are often wrong. Koh & Liang flip 10% of the training labels, then "
        "let a person check the training points one by one, most suspect first, and ask: how "
        "many of the flips are found after checking a given fraction of the data, and how "
        "good is the model once they are fixed? They compare three orders:\n\n"
        "- **self-influence**: largest |I_up,loss(z_i, z_i)| = grad L(z_i)^T H^-1 grad L(z_i) "
        "first: the points whose own loss depends most on keeping them in training;\n"
        "- **training loss**: largest L(z_i, theta_hat) first;\n"
        "- **random**.\n\n"
        "`iw.mislabel_recovery` runs the whole experiment: per seed it flips 10% of the digits "
        "training labels to a random other class, trains a logistic regression on them, ranks "
        "the training points by each method (`iw.review_order`), fixes the flips among the "
        "first 5, 10, 20 and 30% and retrains. Two seeds keep it quick; "
        "`benchmarks/mislabel.py` runs five, on Fashion-MNIST too."
    ),
    new_code_cell(
        "%matplotlib inline\nimport dataclasses\n\n"
        "import matplotlib.pyplot as plt\n"
        "import torch\n\n"
        "import influence_widgets as iw\n"
        "from influence_widgets.analysis.mislabel import flip_labels, training_losses\n\n"
        "torch.set_num_threads(1)\n"
        "data = iw.datasets.digits()\n"
        "recovery = iw.mislabel_recovery(\n"
        "    iw.models.logistic_regression, data, flip_fraction=0.1, seeds=(0, 1), l2=0.01\n"
        ")\n"
        "recovery"
    ),
    new_markdown_cell(
        "## Figure 6's two panels\n\n"
        "Left: the fraction of the flipped labels found against the fraction of the training "
        "data checked. Right: the test accuracy after fixing the flips found and retraining; "
        "the dashed line is the model trained on the clean labels. Means over the seeds."
    ),
    new_code_cell("recovery.plot()"),
    new_code_cell(
        "for method in recovery.methods:\n"
        "    auc = sum(recovery.auc[method, s] for s in recovery.seeds) / len(recovery.seeds)\n"
        "    found = recovery.mean(method, 'flips_found_fraction')\n"
        "    print(f'{method:15s} ROC AUC {auc:.3f}; flips found after checking 10%: '\n"
        "          f'{found[1]:.0%}, 30%: {found[3]:.0%}')\n"
        "noisy_acc = sum(recovery.noisy_accuracy.values()) / len(recovery.seeds)\n"
        "print(f'test accuracy: clean labels {recovery.clean_accuracy:.2%}, noisy labels {noisy_acc:.2%} '\n"
        "      f'(of {len(data.y_test)} test images)')"
    ),
    new_markdown_cell(
        "Both informed orders find almost every flip after checking 20% of the data, where "
        "random checking finds 20%. Mind the right panel's scale: uniform flips cost this "
        "L2-regularised logistic regression only a few test images (the cell prints the "
        "accuracies), so fixing them cannot gain much, and the differences between the lines "
        "are a few test images too; systematic flips, between two similar classes, cost more "
        "(`benchmarks/README.md`). And unlike the paper, the **training loss finds the flips "
        "as well as self-influence, or slightly better**, here and in the benchmark's table.\n\n"
        "## Why the training loss is enough for logistic regression\n\n"
        "For a logistic regression the gradient of a point's loss is its residual times its "
        "input: grad L(z_i) = (p_i - e_{y_i}) x_i^T (x_i with a 1 appended for the bias), with "
        "p_i the predicted class probabilities. So the self-influence is roughly\n\n"
        "|I_up,loss(z_i, z_i)| ~ (squared residual) x (leverage x_i^T H^-1 x_i).\n\n"
        "The residual is what the training loss measures: a wrong label is one the model "
        "cannot fit, so it has a large loss. The leverage measures how unusual the *input* is, "
        "whatever its label: it lifts correctly labelled but odd-looking digits up the "
        "self-influence order, next to the flips, and so adds false alarms. On one noisy "
        "training set: the two scores grow together (left to right, bottom to top), and the "
        "cell counts the flips among the first 10% of each order, and compares "
        "|self-influence| / loss, a stand-in for the leverage, of the points involved."
    ),
    new_code_cell(
        "noisy, flipped = flip_labels(data.y_train, data.n_classes, 0.1, None, seed=0)\n"
        "noisy_data = dataclasses.replace(data, y_train=noisy)  # the user's data stays as it was\n"
        "noisy_model = iw.models.logistic_regression(data)\n"
        "iw.train(noisy_model, noisy_data, l2=0.01, progress=False)\n"
        "inf_noisy = iw.Influence(noisy_model, noisy_data, l2=0.01, progress=False)\n"
        "loss = training_losses(inf_noisy)\n"
        "self_inf = inf_noisy.self_influence().abs()\n"
        "is_flipped = torch.zeros(len(noisy), dtype=torch.bool)\n"
        "is_flipped[flipped] = True\n\n"
        "fig, ax = plt.subplots(figsize=(6.5, 4.5))\n"
        "for mask, color, label in [(~is_flipped, '0.6', 'label right'),\n"
        "                           (is_flipped, 'tab:red', 'label flipped')]:\n"
        "    ax.scatter(loss[mask], self_inf[mask], s=10, color=color, label=label)\n"
        "ax.set_xscale('log')\n"
        "ax.set_yscale('log')\n"
        "ax.set_xlabel('training loss L(z_i)', fontsize=11)\n"
        "ax.set_ylabel('|self-influence|', fontsize=11)\n"
        "ax.legend(fontsize=10)\n"
        "fig.tight_layout()\n\n"
        "k = len(flipped)\n"
        "for name, score in [('training loss', loss), ('self-influence', self_inf)]:\n"
        "    first = torch.argsort(score, descending=True)[:k]\n"
        "    print(f'first {k} by {name}: {int(is_flipped[first].sum())} flips')\n"
        "false_alarms = first[~is_flipped[first]]  # clean points among self-influence's first k\n"
        "leverage = self_inf / loss\n"
        "for name, mask in [('its clean false alarms', false_alarms), ('all clean points', ~is_flipped),\n"
        "                   ('the flips', is_flipped)]:\n"
        "    print(f'|self-influence| / loss, median over {name}: {float(leverage[mask].median()):.0f}')"
    ),
    new_markdown_cell(
        "The clean points that self-influence mistakes for flips are the high-leverage ones: "
        "their |self-influence| is large for their loss.\n\n"
        "The paper found self-influence ahead of the training loss on its spam e-mails, also "
        "with a logistic regression. On digits the loss is ahead, for uniform flips and for "
        "systematic ones too (30% of the 1s labelled 8; `benchmarks/README.md`). "
        "Self-influence can add something only where a wrong label is fitted, so that its "
        "loss is small: then its question, how much that fit depends on the point itself, is "
        "the informative one."
    ),
]

# The Review tab's cells: they continue FIXING_MISLABELED (its data, noisy, noisy_data, inf_noisy).
REVIEW_TAB_CELLS = [
    new_markdown_cell(
        "## The Review tab\n\n"
        "The explorer's **Review** tab lists the training points in the order to check them "
        "(self-influence, training loss or random: the selector), each with its given and "
        "predicted label and its score. For each you can propose a corrected label or mark "
        "it for removal, then press **Retrain with fixes**: the model is retrained in the "
        "background, on a copy, and the tab shows the test accuracy and loss before and after "
        "and how the selected test point's prediction changed. Your tensors, model and data "
        "are never written; the fixed data comes back as new tensors from `fixed_dataset()`."
    ),
    new_code_cell(
        "ex = iw.InfluenceExplorer(inf_noisy, noisy_data, k=6).wait_ready()\n"
        "ex.tab = 'review'\n"
        "ex.review_method = 'self_influence'\n"
        "ex"
    ),
    new_markdown_cell(
        "The same from Python, as a person would do it: look at the first 10% of the review "
        "order and, where the label is wrong, give the right one (here we know the true "
        "labels, so we relabel the flips among them)."
    ),
    new_code_cell(
        "order = iw.review_order(inf_noisy, 'self_influence')\n"
        "checked = order[: round(0.1 * len(order))].tolist()\n"
        "for i in checked:\n"
        "    if noisy[i] != data.y_train[i]:\n"
        "        ex.relabel(i, int(data.y_train[i]))\n"
        "print(f'checked {len(checked)} training points, relabelled {len(ex.review_fixes)} '\n"
        "      f'of the {len(flipped)} flips')\n"
        "review = ex.retrain_with_fixes(wait=True)\n"
        "print(f'test accuracy {review.accuracy_before:.2%} -> {review.accuracy_after:.2%}, '\n"
        "      f'test loss {review.loss_before:.3f} -> {review.loss_after:.3f}')"
    ),
    new_code_cell(
        "X_fixed, y_fixed = ex.fixed_dataset()\n"
        "print(f'{int((y_fixed != noisy).sum())} labels changed; '\n"
        "      f'{int((y_fixed != data.y_train).sum())} flips left unchecked')\n"
        "print('noisy_data unchanged:', torch.equal(noisy_data.y_train, noisy))"
    ),
]


DOMAIN_MISMATCH = [
    new_markdown_cell(
        "# Which training points cause a wrong prediction? A domain mismatch\n\n"
        "Koh & Liang (2017, Sec 5.3) train a logistic regression to predict hospital "
        "readmission, then remove 20 of the 24 children who were *not* readmitted from the "
        "training set. The model now wrongly predicts that children in the test set will be "
        "readmitted. Influence functions find the cause: the 4 healthy children left in the "
        "training set have 30-40 times the influence of any other training point on those "
        "wrong predictions, and the gradient of that influence with respect to the training "
        "point's features says which feature carries the effect (the *child* indicator). The "
        "model's weights alone do not point to those 4 patients.\n\n"
        "This notebook rebuilds the experiment on scikit-learn's breast-cancer table, with a "
        "subgroup we plant ourselves, so that we know the true cause and can check that "
        "influence finds it."
    ),
    new_code_cell(
        "import matplotlib.pyplot as plt\n"
        "import torch\n\n"
        "import influence_widgets as iw\n\n"
        "torch.set_num_threads(1)\n"
        "full = iw.datasets.breast_cancer_clinic_b(keep=None)  # every clinic-B patient\n"
        "data = iw.datasets.breast_cancer_clinic_b(keep=4)  # only 4 benign clinic-B patients\n"
        "BENIGN, MALIGNANT = data.class_names.index('benign'), data.class_names.index('malignant')\n"
        "data"
    ),
    new_markdown_cell(
        "## The planted subgroup: clinic B\n\n"
        "Each data set has the 30 measurements of the breast-cancer table (standardised) and a "
        "31st column, `clinic B`. One patient in five comes from clinic B, which sent none of "
        "the measurements: as is common practice, they are filled in with the training mean "
        "(0 after standardising) and flagged with `clinic B = 1`. For these patients a linear "
        "model sees only the flag, so it predicts for all of them the outcome that the "
        "clinic-B patients in its training set mostly had.\n\n"
        "`full` keeps every clinic-B patient (most are benign, like the whole table). `data` "
        "keeps only 4 of the benign ones: the clinic-B patients left in training are now "
        "mostly malignant, as the paper's children were mostly readmitted after the removal. "
        "The test set is the same in both."
    ),
    new_code_cell(
        "def clinic_b(X):\n"
        "    return X[:, -1] == 1\n\n\n"
        "for name, d in [('full', full), ('data', data)]:\n"
        "    b = clinic_b(d.X_train)\n"
        "    print(\n"
        "        f'{name}: {len(d.y_train)} training patients, {int(b.sum())} from clinic B, '\n"
        "        f'{int((d.y_train[b] == BENIGN).sum())} of them benign'\n"
        "    )\n"
        "b_test = clinic_b(data.X_test)\n"
        "print(f'test: {int(b_test.sum())} clinic-B patients, '\n"
        "      f'{int((data.y_test[b_test] == BENIGN).sum())} of them benign')"
    ),
    new_markdown_cell(
        "## The mismatch makes the model wrong on clinic B\n\n"
        "Train the same logistic regression (L2 0.01, full-batch L-BFGS to a minimum, as "
        "influence functions assume) on each training set, and count the clinic-B test "
        "patients it gets right and wrong."
    ),
    new_code_cell(
        "def fit(d):\n"
        "    model = iw.models.logistic_regression(d)\n"
        "    iw.train(model, d, l2=0.01, progress=False)\n"
        "    return model\n\n\n"
        "def predict(model, X):\n"
        "    with torch.no_grad():\n"
        "        return model(X.double()).argmax(1)\n\n\n"
        "before, model = fit(full), fit(data)\n"
        "fig, axes = plt.subplots(1, 2, figsize=(9, 3.4), sharey=True)\n"
        "for ax, (title, m) in zip(axes, [('before (all of clinic B)', before),\n"
        "                                ('after (4 benign kept)', model)], strict=True):\n"
        "    right = predict(m, data.X_test) == data.y_test\n"
        "    for k, c in enumerate([BENIGN, MALIGNANT]):\n"
        "        group = b_test & (data.y_test == c)\n"
        "        n_right = int((right & group).sum())\n"
        "        ax.bar(k - 0.2, n_right, 0.4, color='tab:green', label='right' if k == 0 else None)\n"
        "        ax.bar(k + 0.2, int(group.sum()) - n_right, 0.4, color='tab:red',\n"
        "               label='wrong' if k == 0 else None)\n"
        "    acc = float(right.double().mean())\n"
        "    ax.set_title(f'{title}\\ntest accuracy {acc:.1%}', fontsize=11)\n"
        "    ax.set_xticks([0, 1], ['benign, clinic B', 'malignant, clinic B'], fontsize=11)\n"
        "axes[0].set_ylabel('clinic-B test patients', fontsize=11)\n"
        "axes[0].legend(fontsize=10)\n"
        "fig.tight_layout()"
    ),
    new_markdown_cell(
        "Before, the model calls every clinic-B patient benign (the majority it saw), so it "
        "misses the malignant ones: without measurements nothing better is possible. After the "
        "removal it calls every clinic-B patient malignant, and now **all the benign clinic-B "
        "test patients are wrong**. Suppose we did not know why. Can we find the cause from "
        "the model?"
    ),
    new_markdown_cell(
        "## What the weights say\n\n"
        "The model's weights (benign minus malignant logit, per feature) show that the flag "
        "matters: it has the largest weight, pushing towards malignant."
    ),
    new_code_cell(
        "w = (model.weight[BENIGN] - model.weight[MALIGNANT]).detach()\n"
        "colors = ['tab:red' if n == 'clinic B' else '0.6' for n in data.feature_names]\n"
        "fig, ax = plt.subplots(figsize=(9, 3.6))\n"
        "ax.bar(range(len(w)), w, color=colors)\n"
        "ax.set_xticks(range(len(w)), data.feature_names, rotation=90, fontsize=8)\n"
        "ax.set_ylabel('weight (towards benign)', fontsize=11)\n"
        "ax.set_title('the clinic-B flag (red) has the largest weight', fontsize=11)\n"
        "fig.tight_layout()"
    ),
    new_markdown_cell(
        "But a weight is one number for a whole column. It does not say *which* training "
        "patients made it so: every clinic-B training row has the same input (imputed "
        "measurements, flag 1), so the weight treats all of them alike, benign and malignant. "
        "To ask which training points cause the wrong predictions, we need influence."
    ),
    new_markdown_cell(
        "## Influence on a set of test points\n\n"
        "We want the training points that matter most for *all* the wrong clinic-B test "
        "predictions together: the influence on their summed loss, sum_t I_up,loss(z_i, z_t) "
        "= -(sum_t grad L(z_t))^T H^-1 grad L(z_i). `top_of_set` (and "
        "`influence_on_set_loss`, `predicted_removal_effect_of_set`) compute it with **one** "
        "solve with the Hessian H, for s_test of the summed loss, however many test points "
        "there are; it equals the sum of the per-point influences, as the cell checks. "
        "Scores are predicted removal effects: positive = the point *helps* the set (removing "
        "it would raise the set's loss)."
    ),
    new_code_cell(
        "inf = iw.Influence(model, data, l2=0.01, progress=False)\n"
        "wrong = b_test & (predict(model, data.X_test) != data.y_test)\n"
        "X_wrong, y_wrong = data.X_test[wrong], data.y_test[wrong]\n"
        "torch.testing.assert_close(  # one solve == the sum over the 20 points\n"
        "    inf.influence_on_set_loss(X_wrong, y_wrong),\n"
        "    inf.influence_on_loss(X_wrong, y_wrong).sum(0),\n"
        ")\n\n\n"
        "def who(i):\n"
        "    place = 'clinic B' if clinic_b(data.X_train[i : i + 1]) else 'clinic A'\n"
        "    return f'#{i} ({place}, {data.class_names[data.y_train[i]]})'\n\n\n"
        "top = inf.top_of_set(X_wrong, y_wrong, k=6)\n"
        "print(f'the {int(wrong.sum())} wrong clinic-B test patients; the most helpful:')\n"
        "for i, s in zip(top.helpful[0].tolist(), top.helpful_scores[0].tolist(), strict=True):\n"
        "    print(f'  {who(i):32s} {s:+.3f}')\n"
        "print('the most harmful:')\n"
        "for i, s in zip(top.harmful[0].tolist(), top.harmful_scores[0].tolist(), strict=True):\n"
        "    print(f'  {who(i):32s} {s:+.3f}')"
    ),
    new_code_cell(
        "effect = inf.predicted_removal_effect_of_set(X_wrong, y_wrong)\n"
        "b_train = clinic_b(data.X_train)\n"
        "groups = [\n"
        "    ('clinic A', ~b_train, '0.6'),\n"
        "    ('clinic B, malignant', b_train & (data.y_train == MALIGNANT), 'tab:orange'),\n"
        "    ('clinic B, benign (the 4 kept)', b_train & (data.y_train == BENIGN), 'tab:blue'),\n"
        "]\n"
        "fig, ax = plt.subplots(figsize=(9, 3.8))\n"
        "for label, mask, color in groups:\n"
        "    idx = torch.nonzero(mask).squeeze(1)\n"
        "    ax.scatter(idx, effect[idx], s=18, color=color, label=label)\n"
        "ax.axhline(0, color='0.3', lw=0.8)\n"
        "ax.set_xlabel('training point', fontsize=11)\n"
        "ax.set_ylabel('predicted removal effect\\non the wrong points (sum)', fontsize=11)\n"
        "ax.legend(fontsize=10)\n"
        "fig.tight_layout()"
    ),
    new_markdown_cell(
        "The four benign clinic-B patients left in training stand out: removing any one of "
        "them is predicted to raise the summed loss of the wrong predictions several times "
        "more than removing any other training point (they are the only evidence that a "
        "clinic-B patient can be benign; the four share one score because their inputs and "
        "labels are the same). The most harmful points are the malignant clinic-B patients, "
        "each less so. Influence has found the cause: too few benign clinic-B patients in "
        "training, and the fix is to collect more of them (the *before* model above)."
    ),
    new_markdown_cell(
        "## Which feature carries the effect? I_pert,loss\n\n"
        "`perturbation_influence` is the gradient of I_up,loss(z_i, z_test) with respect to "
        "the training input x_i: how the test loss would change (after retraining) if a "
        "feature of training point i moved a little. Summed over the wrong test points and "
        "taken for the four kept patients, its largest component is the clinic-B flag, as the "
        "paper found the child indicator. (It is negative: raising the flag of a kept patient "
        "would make it weigh more for clinic B, and lower the wrong predictions' loss.)"
    ),
    new_code_cell(
        "kept = top.helpful[0, :4]\n"
        "pert = inf.perturbation_influence(X_wrong, y_wrong, kept).sum(0)  # (4 points, 31)\n"
        "fig, ax = plt.subplots(figsize=(9, 3.6))\n"
        "ax.bar(range(pert.shape[1]), pert.abs().mean(0), color=colors)\n"
        "ax.set_xticks(range(pert.shape[1]), data.feature_names, rotation=90, fontsize=8)\n"
        "ax.set_ylabel('|I_pert,loss|, mean\\nover the 4 kept', fontsize=11)\n"
        "ax.set_title('the clinic-B flag (red) carries the effect', fontsize=11)\n"
        "fig.tight_layout()\n"
        "for i, row in zip(kept.tolist(), pert, strict=True):\n"
        "    j = int(row.abs().argmax())\n"
        "    print(f'{who(i)}: largest component {data.feature_names[j]!r} ({float(row[j]):+.1f})')"
    ),
    new_markdown_cell(
        "## A test patient without a label\n\n"
        "In practice the patient in front of you has no label yet. Give no `y_test` and "
        "influence explains the **predicted** class: the loss is -log p(y_hat | x). For a "
        "clinic-B patient the model predicts malignant; the training points that support that "
        "prediction most are malignant clinic-B patients, and the four kept benign ones "
        "are the ones that argue against it most."
    ),
    new_code_cell(
        "t = int(torch.nonzero(wrong)[0])\n"
        "x = data.X_test[t : t + 1]\n"
        "y_hat = int(inf.predicted_labels(x)[0])\n"
        "one = inf.top(x, k=4)  # y_test=None: explained for the predicted class\n"
        "print(f'test patient {t}: no label given, explained for the predicted class '\n"
        "      f'{data.class_names[y_hat]!r}')\n"
        "print('supports the prediction:', ', '.join(who(i) for i in one.helpful[0].tolist()))\n"
        "print('argues against it:      ', ', '.join(who(i) for i in one.harmful[0].tolist()))"
    ),
    new_markdown_cell(
        "The explorer shows the same for any test patient you click (the table rows show "
        "the measurements in their own units; clinic B's are the imputed means)."
    ),
    new_code_cell("ex = iw.InfluenceExplorer(inf, data, k=6).wait_ready()\nex.selected = t\nex"),
]


NOTEBOOKS = {
    "01_quickstart.ipynb": QUICKSTART,
    "02_leave_one_out.ipynb": LEAVE_ONE_OUT,
    "03_training_set_attacks.ipynb": ATTACKS,
    "04_fixing_mislabeled_data.ipynb": FIXING_MISLABELED + REVIEW_TAB_CELLS,
    "05_domain_mismatch.ipynb": DOMAIN_MISMATCH,
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
