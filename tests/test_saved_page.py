"""``InfluenceExplorer.save_html``: one self-contained HTML page with the saved panels (no browser;
the page opened offline and clicked: tests/browser/test_saved_page_browser.py)."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import influence_widgets as iw
from influence_widgets.widgets.explorer import static_dir
from influence_widgets.widgets.saved_page import NOTEBOOK_ONLY, NOTEBOOK_TABS, SharedRows

# The one absolute URL the page may hold: the SVG namespace (a name, not a load), should the
# explorer draw an SVG.
SVG_NAMESPACE = "http://www.w3.org/2000/svg"


def saved_state(html: str) -> dict:
    """The JSON the page's script reads."""
    found = re.search(r'<script type="application/json" id="iw-saved-state">(.*?)</script>', html)
    assert found is not None, "the page holds no saved state"
    return json.loads(found.group(1))


def png_of(state: dict, item: dict) -> bytes:
    return base64.b64decode(state["images"][item["png_ref"]])


@pytest.fixture(scope="module")
def digits_explorer(digits_influence):
    data, inf = digits_influence
    return iw.InfluenceExplorer(inf, data, k=4).wait_ready()


@pytest.fixture(scope="module")
def saved_digits(digits_explorer, tmp_path_factory) -> tuple[Path, list[int]]:
    """The digits explorer saved with three test points, given out of order and with a repeat."""
    path = tmp_path_factory.mktemp("saved") / "lesson.html"
    chosen = [250, 3, 17, 3]
    assert digits_explorer.save_html(path, test_points=chosen, progress=False) == path
    return path, sorted(set(chosen))


def test_the_page_loads_nothing_from_outside(saved_digits):
    html = saved_digits[0].read_text(encoding="utf-8")
    assert not re.search(r"<script[^>]*\ssrc\s*=", html, flags=re.IGNORECASE)
    assert not re.search(r"<link\b", html, flags=re.IGNORECASE)
    styles = "".join(re.findall(r"<style>(.*?)</style>", html, flags=re.DOTALL))
    assert "iw-explorer" in styles and not re.search(r"@import|url\(", styles, flags=re.I)
    assert not re.search(r"\s(src|href)\s*=\s*[\"']?(https?:)?//", html, flags=re.IGNORECASE)
    assert set(re.findall(r"https?://[^\s\"'<>]*", html)) <= {SVG_NAMESPACE}
    # and the browser is told to load nothing else: no connection, no script or image from a URL
    assert "default-src 'none'" in html and "Content-Security-Policy" in html


def test_the_page_inlines_the_explorers_own_front_end(saved_digits):
    html = saved_digits[0].read_text(encoding="utf-8")
    for name in ("explorer.js", "explorer.css", "saved_page.js"):
        assert (static_dir() / name).read_text(encoding="utf-8") in html, name


def test_the_page_holds_the_passed_points_and_only_those(saved_digits, digits_explorer):
    path, chosen = saved_digits
    state = saved_state(path.read_text(encoding="utf-8"))
    assert [p["index"] for p in state["points"]] == chosen
    assert sorted(int(i) for i in state["panels"]) == chosen
    tests = digits_explorer.test_points
    for point in state["points"]:
        i = point["index"]
        assert point["class_index"] == tests.true[i] and point["wrong"] == tests.misclassified(i)
        assert png_of(state, point) == digits_explorer.display_data.item("test", i)["png"]
    # each image once: the three test points and at most 2k training points each
    assert len(state["images"]) == len(set(state["images"])) <= 3 * (1 + 2 * 4)


def test_saved_panels_are_the_panels_a_click_shows(saved_digits, digits_explorer):
    path, chosen = saved_digits
    state = saved_state(path.read_text(encoding="utf-8"))
    for i in chosen:
        digits_explorer.selected = i
        shown, saved = digits_explorer.panel, state["panels"][str(i)]
        for key in ("test_index", "label", "pred", "correct", "explanation"):
            assert saved[key] == shown[key], key
        for kind in ("helpful", "harmful"):
            assert [it["index"] for it in saved[kind]] == [it["index"] for it in shown[kind]]
            assert [it["label"] for it in saved[kind]] == [it["label"] for it in shown[kind]]
            np.testing.assert_allclose(
                [it["score"] for it in saved[kind]], [it["score"] for it in shown[kind]], rtol=1e-6
            )
            assert [png_of(state, it) for it in saved[kind]] == [it["png"] for it in shown[kind]]
    assert state["traits"]["k"] == 4 and state["traits"]["selected"] is None
    assert state["notebook_tabs"] == list(NOTEBOOK_TABS) and state["notebook_only"] == NOTEBOOK_ONLY
    assert all(state["traits"][run] == {"state": "idle"} for run in ("verify", "attack", "review"))


def test_every_test_point_by_default(digits_explorer, tmp_path):
    path = digits_explorer.save_html(tmp_path / "all.html", progress=False)
    state = saved_state(path.read_text(encoding="utf-8"))
    n = len(digits_explorer.test_points)
    assert [p["index"] for p in state["points"]] == list(range(n))
    assert len(state["panels"]) == n
    assert f"each of these {n} test points" in state["traits"]["message"]


# ----- tabular and text data: no images, the cards' tables and snippets -----------------------


def tiny_explorer(**kwargs) -> iw.InfluenceExplorer:
    """30 points of 4 features, a 3-class linear model: 6 test points."""
    gen = torch.Generator().manual_seed(0)
    X = torch.randn(30, 4, generator=gen, dtype=torch.float64)
    y = torch.arange(30) % 3
    model = torch.nn.Linear(4, 3, dtype=torch.float64)
    iw.train(model, (X, y), l2=0.1, progress=False)
    inf = iw.Influence(model, (X, y), l2=0.1, progress=False)
    options = {"x_test": X[:6], "y_test": y[:6], "k": 3, "fit_in_background": False}
    return iw.InfluenceExplorer(inf, **{**options, **kwargs})


def rebuilt(state: dict, item: dict) -> dict:
    """A saved tabular item as saved_page.js rebuilds it from the shared rows."""
    rows, out = state["rows"], dict(item)
    if "row_order" in item:
        values, z = rows["test"][str(item["test_row"])], rows["test_z"][str(item["test_row"])]
        out["row"] = [[rows["names"][f], values[f], z[f]] for f in item["row_order"]]
    if "differences_order" in item:
        a, b = rows["train"][str(item["train_row"])], rows["test"][str(item["test_row"])]
        out["differences"] = [
            [rows["names"][f], a[f], b[f], (a[f] - b[f]) / rows["sd"][f]]
            for f in item["differences_order"]
        ]
    return out


def test_tabular_cards_share_their_rows_and_rebuild_exactly(tmp_path):
    tabular = tiny_explorer(kind="tabular", feature_names=["a", "b", "c", "<d>"])
    state = saved_state(tabular.save_html(tmp_path / "t.html", progress=False).read_text())
    assert state["images"] == [] and sorted(state["rows"]["test"]) == [str(i) for i in range(6)]
    for i in range(6):
        tabular.selected = i
        saved, shown = state["panels"][str(i)], tabular.panel
        assert "row" not in saved["test"]
        assert rebuilt(state, saved["test"])["row"] == shown["test"]["row"]
        for kind in ("helpful", "harmful"):
            assert all("differences" not in item for item in saved[kind])  # shared
            assert [rebuilt(state, item)["differences"] for item in saved[kind]] == [
                item["differences"] for item in shown[kind]
            ]
        assert rebuilt(state, state["points"][i])["row"] == shown["test"]["row"]


def test_a_row_the_page_would_not_rebuild_exactly_is_kept_as_it_is():
    rows = SharedRows(["a", "b"], [2.0, 4.0])
    assert rows.differences(0, 0, [["b", 1.0, 5.0, -1.0], ["a", 3.0, 2.0, 0.5]]) is not None
    assert rows.differences(1, 0, [["a", 1.0, 2.0, -0.4], ["b", 1.0, 5.0, -1.0]]) is None
    assert rows.differences(2, 0, [["a", 1.0, 2.0, -0.5]]) is None  # a feature missing
    # test point 0's values are 2 and 5: other values for it are kept as they are
    assert rows.differences(3, 0, [["a", 1.0, 9.0, -4.0], ["b", 1.0, 5.0, -1.0]]) is None
    assert rows.tables()["train"] == {"0": [3.0, 1.0]}


def test_text_pages(tmp_path):
    text = tiny_explorer(
        kind="text",
        test_display=[f"test </script> {i}" for i in range(6)],
        train_display=[f"train {i}" for i in range(30)],
    )
    html = text.save_html(tmp_path / "x.htm", test_points=[1], progress=False).read_text()
    assert html.count("</script>") == 3  # the state, the module and the driver: no text ends one
    assert saved_state(html)["panels"]["1"]["test"]["text"] == "test </script> 1"


# ----- paths and test points the page refuses, naming the argument ------------------------------


@pytest.fixture(scope="module")
def small_explorer() -> iw.InfluenceExplorer:
    return tiny_explorer(kind="tabular")


@pytest.mark.parametrize(
    ("name", "test_points", "error", "pattern"),
    [
        ("a.html", [6], ValueError, r"^test_points\[0\]: index 6 is out of range; expected an index in 0\.\.5"),
        ("a.html", [0, -1], ValueError, r"^test_points\[1\]: index -1 is out of range"),
        ("a.html", 3, TypeError, r"^test_points: expected a list of test indices \(e\.g\. test_points=\[3, 17\]\)"),
        ("a.html", "12", TypeError, r"^test_points: expected a list"),
        ("a.html", [], ValueError, r"^test_points: the list is empty"),
        ("a.html", [1.0], TypeError, r"^test_points\[0\]: expected one integer index"),
        ("a.html", [True], TypeError, r"^test_points\[0\]"),
        ("missing/a.html", None, FileNotFoundError, r"^path: the folder .*missing' does not exist"),
        ("a.txt", None, ValueError, r"^path: 'a\.txt' does not end in \.html or \.htm.*path='a\.html'"),
        ("a", None, ValueError, r"^path: 'a' does not end in \.html"),
    ],
)  # fmt: skip
def test_bad_input_names_the_argument(
    small_explorer, tmp_path, monkeypatch, name, test_points, error, pattern
):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(error, match=pattern):
        small_explorer.save_html(name, test_points=test_points, progress=False)
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_numpy_and_tensor_indices_are_test_points(small_explorer, tmp_path):
    for j, chosen in enumerate((np.array([4, 1]), torch.tensor([4, 1]), (np.int64(1), 4))):
        path = small_explorer.save_html(tmp_path / f"p{j}.html", chosen, progress=False)
        assert [p["index"] for p in saved_state(path.read_text())["points"]] == [1, 4]


def test_an_existing_file_is_replaced_only_when_asked(small_explorer, tmp_path):
    path = tmp_path / "lesson.html"
    path.write_text("the teacher's notes")
    with pytest.raises(FileExistsError, match=r"^path: .*lesson\.html' is an existing file.*"):
        small_explorer.save_html(path, progress=False)
    assert path.read_text() == "the teacher's notes"
    with pytest.raises(IsADirectoryError, match=r"^path: .* is a folder"):
        small_explorer.save_html(tmp_path, progress=False)
    small_explorer.save_html(path, overwrite=True, progress=False)
    assert saved_state(path.read_text())["points"][0]["index"] == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lesson.html"]
