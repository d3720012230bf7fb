"""The browser layer: the explorer in JupyterLab 4 and Notebook 7, clicked in headless Chromium.

Each test writes a notebook, opens it in the front end, runs it from the Run menu, clicks in the
widget and checks the kernel's side by running a later cell. Fixtures and helpers: conftest.py.
"""

from __future__ import annotations

import re

import pytest

from .conftest import (
    FRONTENDS,
    append_and_run_cell,
    cell_output,
    open_and_run,
    run_cell,
    save_screenshot,
    write_notebook,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

# A minimal anywidget: a button that sets a synced trait when clicked and shows the trait's value.
SMOKE_WIDGET = '''\
import anywidget
import traitlets


class Clicker(anywidget.AnyWidget):
    _esm = """
    function render({ model, el }) {
      const button = document.createElement("button");
      button.setAttribute("data-test-index", "3");
      const show = () => { button.textContent = "clicked " + model.get("clicked"); };
      button.addEventListener("click", () => { model.set("clicked", 3); model.save_changes(); });
      model.on("change:clicked", show);
      show();
      el.appendChild(button);
    }
    export default { render };
    """
    clicked = traitlets.Int(-1).tag(sync=True)


w = Clicker()
w'''


# Uncaught errors of the front ends themselves, not of any widget: Notebook 7.6's shortcut
# settings handler reads the schema of a plugin it has not loaded, on every page load.
KNOWN_FRONTEND_ERRORS = ("Cannot read properties of undefined (reading 'schema')",)


def page_errors(console_messages: list[str]) -> list[str]:
    """Uncaught errors in the page, less the front ends' own known ones."""
    return [
        m
        for m in console_messages
        if m.startswith("[pageerror]") and not any(k in m for k in KNOWN_FRONTEND_ERRORS)
    ]


@pytest.mark.timeout(150)
@pytest.mark.parametrize("frontend", FRONTENDS)
def test_anywidget_renders_and_syncs_in(frontend, jupyter, page, console_messages):
    """The comm round trip through anywidget, independent of our widget: a click in the page
    reaches the kernel, and a change in the kernel reaches the page. The notebook has no
    kernelspec, so the front end's kernel dialog is answered too."""
    from playwright.sync_api import expect

    path = write_notebook(
        jupyter,
        f"smoke_{frontend}.ipynb",
        [SMOKE_WIDGET, 'print("CLICKED", w.clicked)'],
        kernelspec=False,
    )
    open_and_run(page, jupyter, path, frontend, timeout=60)
    assert "CLICKED -1" in cell_output(page, 1)

    button = page.locator('[data-test-index="3"]')
    expect(button).to_have_text("clicked -1")
    button.click()
    expect(button).to_have_text("clicked 3")
    assert "CLICKED 3" in run_cell(page, 1)

    out = append_and_run_cell(page, 'w.clicked = 7\nprint("SET", w.clicked)')
    assert "SET 7" in out
    expect(button).to_have_text("clicked 7")
    assert not page_errors(console_messages)


# ----- the influence explorer ----------------------------------------------------------------
# The kernel's checks print one f-string: one write, so that the background fit's progress bar (on
# stderr, shown in the running cell) cannot land between its words.
def wait_for_train_items(page, at_least: int, timeout: float = 90.0) -> int:
    """Until the explorer's panel shows ``at_least`` training items; returns how many it shows."""
    items = page.locator(".iw-explorer [data-train-index]")
    try:
        page.wait_for_function(
            "n => document.querySelectorAll('.iw-explorer [data-train-index]').length >= n",
            arg=at_least,
            timeout=timeout * 1000,
        )
    except Exception as err:
        errors = page.locator(".iw-explorer .iw-error").all_inner_texts()
        raise AssertionError(
            f"the panel shows {items.count()} training items, not {at_least}, after "
            f"{timeout:.0f} s; .iw-error says {errors!r}"
        ) from err
    return items.count()


def shown_errors(page) -> list[str]:
    return [
        t.strip() for t in page.locator(".iw-explorer .iw-error").all_inner_texts() if t.strip()
    ]


@pytest.mark.timeout(210)
@pytest.mark.parametrize("frontend", FRONTENDS)
def test_demo_explorer_click_selects_in(frontend, jupyter, page, console_messages):
    """%influence --demo digits shows the explorer; a click on a test item fills the panel with
    k helpful and k harmful training items and sets ``selected`` in the kernel."""
    path = write_notebook(
        jupyter,
        f"demo_{frontend}.ipynb",
        [
            "%load_ext influence_widgets",
            "%influence --demo digits",
            "ex = _",
            'print(f"SELECTED {ex.selected}")',
        ],
    )
    open_and_run(page, jupyter, path, frontend, timeout=150)
    assert "SELECTED None" in cell_output(page, 3)

    explorer = page.locator(".iw-explorer")
    assert explorer.count() == 1, f"{explorer.count()} .iw-explorer elements on the page"
    item = explorer.locator('[data-test-index="3"]')
    item.wait_for(timeout=60_000)
    item.click()
    shown = wait_for_train_items(page, at_least=16)
    assert shown >= 16
    save_screenshot(explorer, f"panel_{frontend}.png")

    out = run_cell(page, 3)
    assert "SELECTED 3" in out, out
    assert not shown_errors(page)
    assert not page_errors(console_messages)


# A bag-of-characters logistic regression on short texts. The payloads are assembled from pieces
# so that the cell's source (which the page shows) never holds them: they can only appear in the
# page as the widget's text.
XSS_CELL = """\
import torch

import influence_widgets as iw

lt = chr(60)
IMG = lt + 'img src=x onerror="window.__pwned=1">'
SCRIPT = lt + "script>window.__pwned=2" + lt + "/script>"

good = ["good movie", "great film", "loved it", "nice plot", "good acting",
        "great cast", "fine movie", "loved the film", "good fun", IMG]
bad = ["bad movie", "awful film", "hated it", "poor plot", "bad acting",
       "dull cast", "boring movie", "hated the film", "bad fun", "dull film"]
train_texts = good + bad
test_texts = ["good film", "bad film", "great movie", "awful movie", "nice acting", "boring plot"]
vocab = sorted(set("".join(train_texts + test_texts)))


def features(texts):
    return torch.tensor([[t.count(c) for c in vocab] for t in texts], dtype=torch.float64)


X, y = features(train_texts), torch.tensor([1] * 10 + [0] * 10)
Xt, yt = features(test_texts), torch.tensor([1, 0, 1, 0, 1, 0])
torch.manual_seed(0)
model = torch.nn.Linear(len(vocab), 2, dtype=torch.float64)
iw.train(model, (X, y), l2=0.1, progress=False)
inf = iw.Influence(model, (X, y), l2=0.1, progress=False)
ex = iw.InfluenceExplorer(
    inf, x_test=Xt, y_test=yt, kind="text", train_display=train_texts,
    test_display=test_texts, class_names=[IMG, SCRIPT], k=10,
)
ex"""

PAYLOAD_IMG = '<img src=x onerror="window.__pwned=1">'
PAYLOAD_SCRIPT = "<script>window.__pwned=2</script>"


@pytest.mark.timeout(180)
@pytest.mark.parametrize("frontend", FRONTENDS)
def test_explorer_shows_markup_as_text_in(frontend, jupyter, page, console_messages):
    """Class names and training texts that are HTML are shown as text, never run as markup."""
    from playwright.sync_api import expect

    path = write_notebook(
        jupyter, f"xss_{frontend}.ipynb", [XSS_CELL, 'print(f"SELECTED {ex.selected}")']
    )
    open_and_run(page, jupyter, path, frontend, timeout=120)
    explorer = page.locator(".iw-explorer")
    explorer.locator('[data-test-index="1"]').click(timeout=60_000)
    wait_for_train_items(page, at_least=20)  # k = 10: all 20 training texts are shown
    assert "SELECTED 1" in run_cell(page, 1)
    page.wait_for_timeout(500)  # an injected <img> would fire onerror by now

    assert page.evaluate("() => typeof window.__pwned") == "undefined"
    assert page.locator('img[src="x"]').count() == 0
    assert explorer.locator("script").count() == 0
    # Training text 9 is the <img> payload; its label is class 1, the <script> payload.
    markup_item = explorer.locator('[data-train-index="9"]')
    expect(markup_item).to_be_visible()
    assert PAYLOAD_IMG in markup_item.inner_text(), "the markup training text is not shown as text"
    assert PAYLOAD_SCRIPT in markup_item.inner_text(), "the markup class name is not shown as text"
    assert not shown_errors(page)
    assert not page_errors(console_messages)


@pytest.mark.timeout(240)
@pytest.mark.parametrize("frontend", ["lab"])
def test_verify_tab_runs_leave_one_out_in(frontend, jupyter, page, console_messages):
    """The Verify tab: pick a test point, run leave-one-out from the button, see R and the
    scatter; the kernel holds the same result."""
    from playwright.sync_api import expect

    path = write_notebook(
        jupyter,
        "verify_lab.ipynb",
        [
            "%load_ext influence_widgets",
            "%influence --demo digits",
            "ex = _",
            "print(f\"LOO {ex.verify['state']}\")",
        ],
    )
    open_and_run(page, jupyter, path, "lab", timeout=150)
    explorer = page.locator(".iw-explorer")
    explorer.locator('[data-test-index="3"]').click(timeout=60_000)
    wait_for_train_items(page, at_least=16)
    explorer.locator(".iw-tab-verify").click()
    n_input = explorer.locator(".iw-verify-n")
    expect(n_input).to_be_visible()
    n_input.fill("5")
    n_input.dispatch_event("change")
    expect(explorer.locator(".iw-verify-run")).to_be_enabled()
    explorer.locator(".iw-verify-run").click()
    expect(explorer.locator(".iw-verify-r")).to_contain_text("Pearson R = ", timeout=120_000)
    expect(explorer.locator("img.iw-verify-plot")).to_be_visible()
    summary = explorer.locator(".iw-verify-summary").inner_text()
    assert "5 removals on test #3" in summary, summary
    out = run_cell(page, 3)
    assert "LOO done" in out, out
    assert not shown_errors(page)
    assert not page_errors(console_messages)


@pytest.mark.timeout(240)
@pytest.mark.parametrize("frontend", ["lab"])
def test_attack_tab_shows_perturbed_images_and_a_verdict_in(
    frontend, jupyter, page, console_messages
):
    """The Attack tab: sliders, Run, then original / perturbed / difference images per poisoned
    training point and a flipped / not flipped verdict; the kernel holds the same result."""
    from playwright.sync_api import expect

    path = write_notebook(
        jupyter,
        "attack_lab.ipynb",
        [
            "%load_ext influence_widgets",
            "%influence --demo digits",
            "ex = _\nex.wait_ready()\n"
            "target = next(i for i in range(40) if ex.test_points.predicted[i] == ex.test_points.true[i])\n"
            'print(f"TARGET {target}")',
            "r = ex.attack_result\nprint(f\"ATTACK {ex.attack['state']} {r and r.iterations}\")",
        ],
    )
    open_and_run(page, jupyter, path, "lab", timeout=150)
    target = int(cell_output(page, 2).split("TARGET")[1].split()[0])
    explorer = page.locator(".iw-explorer")
    explorer.locator(f'[data-test-index="{target}"]').click(timeout=60_000)
    wait_for_train_items(page, at_least=16)
    explorer.locator(".iw-tab-attack").click()
    for cls, value in ((".iw-attack-n input", "2"), (".iw-attack-eps input", "8"),
                       (".iw-attack-iter input", "2")):  # fmt: skip
        control = explorer.locator(cls)
        control.fill(value)
        control.dispatch_event("change")
    expect(explorer.locator(".iw-attack-iter .iw-attack-value")).to_have_text("2")
    explorer.locator(".iw-attack-run").click()
    expect(explorer.locator(".iw-attack-verdict")).to_contain_text("lipped", timeout=120_000)
    items = explorer.locator(".iw-attack-item")
    expect(items).to_have_count(2)
    expect(items.first.locator("img.iw-attack-difference")).to_be_visible()
    out = run_cell(page, 3)
    assert "ATTACK done" in out, out
    assert int(out.split("ATTACK done")[1].split()[0]) <= 2
    assert not shown_errors(page)
    assert not page_errors(console_messages)


# An untrained tanh network: its Hessian is indefinite, so the explorer's precomputation (solver
# "direct", no damping) raises NotPositiveDefiniteError in the background.
FAILED_FIT_CELL = """\
import torch

import influence_widgets as iw

gen = torch.Generator().manual_seed(0)
X = torch.randn(40, 3, generator=gen, dtype=torch.float64)
y = (X[:, 0] > 0).long()
torch.manual_seed(0)
model = torch.nn.Sequential(
    torch.nn.Linear(3, 4, dtype=torch.float64), torch.nn.Tanh(),
    torch.nn.Linear(4, 2, dtype=torch.float64),
)
inf = iw.Influence(model, (X, y), solver="direct", damping=0, progress=False)
ex = iw.InfluenceExplorer(inf, x_test=X[:12], y_test=y[:12], kind="tabular")
ex"""


@pytest.mark.timeout(180)
@pytest.mark.parametrize("frontend", ["lab"])
def test_failed_precomputation_shows_the_error_and_what_to_do_in(
    frontend, jupyter, page, console_messages
):
    """After a failed fit a click is answered with the error and the advice, never "queued", and
    the panel says that nothing can be shown instead of waiting forever."""
    from playwright.sync_api import expect

    path = write_notebook(
        jupyter,
        "failed_fit_lab.ipynb",
        [FAILED_FIT_CELL, 'print(f"STATUS {ex.status} {ex.selected}")'],
    )
    open_and_run(page, jupyter, path, "lab", timeout=120)
    explorer = page.locator(".iw-explorer")
    page.locator('.iw-explorer[data-status="error"]').wait_for(timeout=60_000)
    explorer.locator('[data-test-index="3"]').click()
    status = explorer.locator(".iw-status")
    expect(status).to_contain_text("test point 3 cannot be shown")
    assert "queued" not in status.inner_text() and "%" not in status.inner_text()
    error = explorer.locator(".iw-error")
    expect(error).to_be_visible()
    expect(error).to_contain_text("NotPositiveDefiniteError")
    expect(error).to_contain_text("damping=")
    expect(error).to_contain_text("open a new explorer")
    expect(explorer.locator(".iw-panel .iw-hint")).to_contain_text("precomputation failed")
    expect(explorer.locator(".iw-panel")).not_to_have_class(re.compile(r"\biw-busy\b"))
    expect(explorer.locator(".iw-progress").first).to_be_hidden()
    save_screenshot(explorer, "failed_fit_lab.png")
    assert "STATUS error 3" in run_cell(page, 1)
    assert not page_errors(console_messages)


@pytest.mark.timeout(210)
@pytest.mark.parametrize("frontend", ["lab"])
def test_misclassified_point_is_explained_for_its_true_label_in(
    frontend, jupyter, page, console_messages
):
    """For a misclassified test point the panel says that helpful points support the true label,
    against the prediction, never that they support the prediction."""
    from playwright.sync_api import expect

    path = write_notebook(
        jupyter,
        "misclassified_lab.ipynb",
        [
            "%load_ext influence_widgets",
            "%influence --demo digits",
            "ex = _\nex.wait_ready()\n"
            "wrong = next(i for i in range(40) if ex.test_points.predicted[i] != ex.test_points.true[i])\n"
            'print(f"WRONG {wrong} TRUE {ex.label(int(ex.test_points.true[wrong]))} '
            'PRED {ex.label(int(ex.test_points.predicted[wrong]))}")',
        ],
    )
    open_and_run(page, jupyter, path, "lab", timeout=150)
    wrong, label, pred = re.search(
        r"WRONG (\d+) TRUE (\S+) PRED (\S+)", cell_output(page, 2)
    ).groups()
    explorer = page.locator(".iw-explorer")
    explorer.locator(f'[data-test-index="{wrong}"]').click(timeout=60_000)
    wait_for_train_items(page, at_least=16)
    text = explorer.locator(".iw-panel .iw-explanation")
    expect(text).to_have_text(
        f"Misclassified: the true label is {label}, the model predicts {pred}.\n"
        f"Scores are for the loss of the true label {label}: helpful points support {label}, "
        "harmful points work against it."
    )
    assert "support this prediction" not in explorer.locator(".iw-panel").inner_text()
    save_screenshot(explorer, "misclassified_panel_lab.png")
    assert not shown_errors(page)
    assert not page_errors(console_messages)


# An untrained logistic regression: convex, so the fit succeeds, but ||grad R|| is large.
NOT_AT_MINIMUM_CELL = """\
import torch

import influence_widgets as iw

data = iw.datasets.digits()
torch.manual_seed(0)
model = iw.models.logistic_regression(data)
inf = iw.Influence(model, (data.X_train, data.y_train), l2=0.01, progress=False)
ex = iw.InfluenceExplorer(inf, data)
ex"""


@pytest.mark.timeout(180)
@pytest.mark.parametrize("frontend", ["lab"])
def test_a_model_not_at_a_minimum_shows_a_notice_in(frontend, jupyter, page, console_messages):
    """A model far from a minimum: scores are shown, with a notice saying why they may be wrong
    and what to do, not only a warning on stderr."""
    from playwright.sync_api import expect

    path = write_notebook(
        jupyter, "not_at_minimum_lab.ipynb", [NOT_AT_MINIMUM_CELL, 'print(f"STATUS {ex.status}")']
    )
    open_and_run(page, jupyter, path, "lab", timeout=120)
    explorer = page.locator(".iw-explorer")
    page.locator('.iw-explorer[data-status="ready"]').wait_for(timeout=60_000)
    notice = explorer.locator(".iw-notice")
    expect(notice).to_be_visible()
    expect(notice).to_contain_text("not at a minimum of the training risk")
    expect(notice).to_contain_text("train to a minimum with iw.train")
    expect(explorer.locator(".iw-status")).to_contain_text("see the warning below")
    explorer.locator('[data-test-index="3"]').click()
    wait_for_train_items(page, at_least=16)
    save_screenshot(explorer, "not_at_minimum_lab.png")
    assert "STATUS ready" in run_cell(page, 1)
    assert not shown_errors(page)
    assert not page_errors(console_messages)


# Every test point counts as slow (LOOKAHEAD_SECONDS = 0), and inf.top counts its calls: the page
# of 8 is scored ahead, and a click afterwards must not call it again.
LOOKAHEAD_CELL = """\
import influence_widgets as iw
import influence_widgets.widgets.lookahead as lookahead
lookahead.LOOKAHEAD_SECONDS = 0.0
data = iw.datasets.digits()
model = iw.models.logistic_regression(data)
iw.train(model, data, l2=0.01, progress=False)
inf = iw.Influence(model, data, l2=0.01, progress=False)
calls = []
top = inf.top
inf.top = lambda *a, **k: (calls.append(1), top(*a, **k))[1]
ex = iw.InfluenceExplorer(inf, data, page_size=8)
ex"""


@pytest.mark.timeout(180)
@pytest.mark.parametrize("frontend", ["lab"])
def test_the_page_is_scored_ahead_and_a_click_is_a_lookup_in(
    frontend, jupyter, page, console_messages
):
    """The status line counts the page's test points scored ahead; a click on one of them then
    shows its training points without scoring again."""
    from playwright.sync_api import expect

    path = write_notebook(
        jupyter,
        "lookahead_lab.ipynb",
        [LOOKAHEAD_CELL, 'print(f"CALLS {len(calls)} SELECTED {ex.selected}")'],
    )
    open_and_run(page, jupyter, path, "lab", timeout=120)
    explorer = page.locator(".iw-explorer")
    status = explorer.locator(".iw-status")
    expect(status).to_contain_text(
        "all 8 test points of this page scored ahead: a click on one is instant", timeout=60_000
    )
    explorer.locator('[data-test-index="5"]').click()
    wait_for_train_items(page, at_least=16)
    save_screenshot(explorer, "lookahead_lab.png")
    assert "CALLS 8 SELECTED 5" in run_cell(page, 1)
    assert not shown_errors(page)
    assert not page_errors(console_messages)
