"""The explorer saved as one HTML page that needs no Python, no Jupyter and no network.

``InfluenceExplorer.save_html(path)`` collects, for each saved test point, the gallery card and
the panel the Influence tab shows when it is clicked (its k most helpful and most harmful training
points, ranked by predicted_removal_effect = -(1/n) I_up,loss), and :class:`SavedPage` writes them
into a page together with the explorer's own front end: ``explorer.js`` (the same ES module
anywidget runs) and ``explorer.css``, inlined, and ``saved_page.js``, which drives that module's
``render`` with a model object over the saved state (``get``/``set``/``on``/``save_changes``/
``send``, as anywidget's) instead of a kernel. Each image is embedded once, as base64 PNG, and
the cards and panels refer to it by its place in that table; tabular cards share each point's
row the same way (:class:`SharedRows`). A Content-Security-Policy in the page lets it load
nothing from outside: no script, style, image or connection but its own.
"""

from __future__ import annotations

import base64
import json
import os
import re
from collections.abc import Iterable
from pathlib import Path

from influence_widgets.core.errors import check_index
from influence_widgets.output_paths import check_output_path
from influence_widgets.widgets.protocol import IDLE

__all__ = [
    "NOTEBOOK_ONLY",
    "NOTEBOOK_TABS",
    "SavedPage",
    "SharedRows",
    "check_html_path",
    "check_test_points",
]

# The tabs that run Python (retraining, attacks): off in a saved page, with this sentence.
NOTEBOOK_TABS = ("verify", "attack", "review")
NOTEBOOK_ONLY = (
    "Verify, Attack and Review need the notebook: they retrain the model or attack it in Python, "
    "so they are off in this saved page."
)
HTML_SUFFIXES = (".html", ".htm")

# Traits the saved page does not carry over: the state of runs that need Python, and anything
# that is not the explorer's own (ipywidgets' and anywidget's bookkeeping starts with "_").
RUN_STATES = ("verify", "attack", "review", "review_retrain")
NOT_SAVED = ("verify_plot", "layout", "tabbable", "tooltip")

# A Content-Security-Policy that lets the page use only what it holds: inline scripts and styles,
# the explorer module imported from a blob: URL (as anywidget imports it), images from blob: and
# data: URLs.
CSP = (
    "default-src 'none'; script-src 'unsafe-inline' blob:; style-src 'unsafe-inline'; "
    "img-src blob: data:"
)

# The page around the explorer: its margins, the tabs that are off, and JupyterLab's theme
# variables (which explorer.css reads) for a reader whose system is in dark mode.
PAGE_CSS = """
body { margin: 16px; background: var(--jp-layout-color1, #ffffff); }
.iw-explorer .iw-tab:disabled { opacity: 0.45; cursor: not-allowed; }
.iw-saved-note { margin: 4px 0 8px; color: var(--iw-fg-dim); }
.iw-saved-loading { font: 14px system-ui, sans-serif; color: #59636e; }
@media (prefers-color-scheme: dark) {
  :root {
    --jp-layout-color1: #16181c; --jp-layout-color2: #262a31; --jp-border-color2: #434a54;
    --jp-ui-font-color1: #e6e8eb; --jp-ui-font-color2: #a9b1bb; --jp-brand-color1: #5aa9f0;
    --jp-success-color1: #5cb85f; --jp-error-color1: #f0625a; --jp-warn-color1: #e0a030;
  }
}
"""


def check_html_path(path: str | os.PathLike[str], overwrite: bool) -> Path:
    """``path`` as a Path to write the page to: a name ending in .html or .htm (so that a browser
    opens it as a page from disk) in a folder that exists; an existing file is replaced only with
    ``overwrite=True`` (:func:`~influence_widgets.output_paths.check_output_path`). Else an error
    naming ``path`` (or ``overwrite``) and what to do."""
    target = check_output_path(
        path, "path", overwrite=overwrite, kind="file", what="saved explorer page"
    )
    if target.suffix.lower() not in HTML_SUFFIXES:
        raise ValueError(
            f"path: {os.fspath(path)!r} does not end in .html or .htm, so a browser would not "
            f"open it as a page; e.g. path={target.with_suffix('.html').name!r}"
        )
    folder = target.absolute().parent
    if not folder.is_dir():
        raise FileNotFoundError(
            f"path: the folder {os.fspath(folder)!r} does not exist; create it first "
            "(pathlib.Path(...).mkdir(parents=True)) or save into an existing folder"
        )
    return target


def check_test_points(test_points: Iterable | None, n: int) -> list[int]:
    """The test indices to save, ascending and each once (the gallery's order): all ``n`` for
    None, else every entry of ``test_points`` checked to be an integer in [0, n). A TypeError or
    ValueError naming ``test_points`` otherwise."""
    if test_points is None:
        return list(range(n))
    if isinstance(test_points, str | bytes) or not isinstance(test_points, Iterable):
        raise TypeError(
            f"test_points: expected a list of test indices (e.g. test_points=[3, 17]) or None "
            f"for all {n}, got {type(test_points).__name__}"
        )
    entries = list(test_points)
    if not entries:
        raise ValueError(
            f"test_points: the list is empty; give the test indices to save, or None for all {n}"
        )
    return sorted({check_index(t, f"test_points[{j}]", n) for j, t in enumerate(entries)})


class SharedRows:
    """Tabular cards share their rows: each test and training point's values are kept once, and
    a card holds the order of its features and the row it shows.

    A test point's ``row`` (``[name, value, z]``, most unusual first) becomes ``row_order`` and
    ``test_row``; a training card's ``differences`` (``[name, train value, test value, d]``, most
    different first) becomes ``differences_order``, ``train_row`` and ``test_row``, with
    d = (train value - test value) / SD recomputed by the page from the feature's SD (the same
    float64 operations, so the same numbers). A list that this does not reproduce exactly is kept
    as it is.

    Args:
        names: the feature names, one per column.
        sd: each feature's SD over the training set, the unit of d.
    """

    def __init__(self, names: list[str], sd: list[float]) -> None:
        self.names, self.sd = list(names), [float(v) for v in sd]
        self.column = {name: f for f, name in enumerate(self.names)}
        self.train: dict[str, list[float]] = {}  # training index -> values by column
        self.test: dict[str, list[float]] = {}  # test index -> values by column
        self.test_z: dict[str, list[float]] = {}  # test index -> z by column

    def row(self, test_index: int, row: list) -> dict | None:
        """The shared form of test point ``test_index``'s ``row``, or None."""
        order = self._order(row)
        if order is None:
            return None
        values, z = self._by_column(order, row, 1), self._by_column(order, row, 2)
        key = str(test_index)
        if not self._keep((self.test, key, values), (self.test_z, key, z)):
            return None
        return {"row_order": order, "test_row": test_index}

    def differences(self, train_index: int, test_index: int, rows: list) -> dict | None:
        """The shared form of a training card's ``differences``, or None."""
        order = self._order(rows)
        if order is None:
            return None
        if any((a - b) / self.sd[f] != d for f, (_, a, b, d) in zip(order, rows, strict=True)):
            return None
        train, test = self._by_column(order, rows, 1), self._by_column(order, rows, 2)
        if not self._keep(
            (self.train, str(train_index), train), (self.test, str(test_index), test)
        ):
            return None
        return {"differences_order": order, "train_row": train_index, "test_row": test_index}

    def tables(self) -> dict:
        return {
            "names": self.names,
            "sd": self.sd,
            "train": self.train,
            "test": self.test,
            "test_z": self.test_z,
        }

    def _order(self, rows: list) -> list[int] | None:
        """The columns of ``rows`` in their order, when they are every feature once."""
        order = [self.column.get(row[0], -1) for row in rows]
        return order if sorted(order) == list(range(len(self.names))) else None

    @staticmethod
    def _by_column(order: list[int], rows: list, field: int) -> list[float]:
        values = [0.0] * len(order)
        for f, row in zip(order, rows, strict=True):
            values[f] = row[field]
        return values

    @staticmethod
    def _keep(*entries: tuple[dict[str, list[float]], str, list[float]]) -> bool:
        """Keeps each ``(table, key, values)``, or none of them when a table holds other values
        under its key (False)."""
        if any(table.get(key, values) != values for table, key, values in entries):
            return False
        for table, key, values in entries:
            table.setdefault(key, values)
        return True


class SavedPage:
    """The saved explorer: the gallery's cards, each saved test point's panel and the images
    they show, each image once; :meth:`html` writes the page.

    Args:
        traits: the explorer's synced traits as the page starts from them (``get_state()``):
            k, class names, kind, labels, the notice about the scores, the tabs' settings.
        message: the page's status line: what was saved (a line under the tabs says that
            Verify, Attack and Review need the notebook).
        rows: for tabular data, the table the cards share their rows through; else None.
    """

    def __init__(self, traits: dict, message: str, rows: SharedRows | None = None) -> None:
        self.traits = {
            name: value
            for name, value in traits.items()
            if not name.startswith("_") and name not in NOT_SAVED and name not in RUN_STATES
        }
        self.traits.update(
            selected=None,
            panel={},
            gallery=[],
            tab="influence",
            page=0,
            class_filter=-1,
            misclassified_only=False,
            status="ready",
            message=message,
            error="",
            progress=1.0,
            influence_view="panel",  # Compare reads two methods' scores: only one is saved
            compare={},
            compare_pair=[],
            **{name: dict(IDLE) for name in RUN_STATES},
        )
        self.points: list[dict] = []
        self.panels: dict[str, dict] = {}
        self.images: list[str] = []  # base64 PNGs, each once
        self._image_refs: dict[bytes, int] = {}
        self.rows = rows

    def add(self, card: dict, class_index: int, panel: dict) -> None:
        """One test point: its gallery ``card`` (the gallery trait's item), its true class index
        (for the class filter) and its ``panel`` (the panel trait's value when it is clicked)."""
        i = panel["test_index"]
        self.points.append({**self._shared(card, i), "class_index": class_index})
        self.panels[str(i)] = {
            **panel,
            "test": self._shared(panel["test"], i),
            "helpful": [self._shared(item, i) for item in panel["helpful"]],
            "harmful": [self._shared(item, i) for item in panel["harmful"]],
        }

    def _shared(self, item: dict, test_index: int) -> dict:
        """``item`` (of test point ``test_index``'s card or panel) with its PNG bytes replaced by
        ``png_ref``, the image's place in the table, and its tabular rows by their shared form."""
        shared = dict(item)
        if "png" in shared:
            png = bytes(shared.pop("png"))
            if png not in self._image_refs:
                self._image_refs[png] = len(self.images)
                self.images.append(base64.b64encode(png).decode("ascii"))
            shared["png_ref"] = self._image_refs[png]
        if self.rows is not None and "row" in shared:
            if (ref := self.rows.row(test_index, shared["row"])) is not None:
                del shared["row"]
                shared.update(ref)
        if self.rows is not None and "differences" in shared:
            ref = self.rows.differences(shared["index"], test_index, shared["differences"])
            if ref is not None:
                del shared["differences"]
                shared.update(ref)
        return shared

    def state(self) -> dict:
        """What ``saved_page.js`` reads: the traits to start from, the cards, the panels by test
        index, the image table, the shared tabular rows, and which tabs are off and why."""
        return {
            "traits": self.traits,
            "points": self.points,
            "panels": self.panels,
            "images": self.images,
            "rows": self.rows.tables() if self.rows is not None else None,
            "notebook_tabs": list(NOTEBOOK_TABS),
            "notebook_only": NOTEBOOK_ONLY,
        }

    def html(self, front_end: Path, title: str) -> str:
        """The page: ``front_end`` is the folder of ``explorer.js``, ``explorer.css`` and
        ``saved_page.js`` (the explorer's ``static_dir()``)."""
        module = (front_end / "explorer.js").read_text(encoding="utf-8")
        css = (front_end / "explorer.css").read_text(encoding="utf-8")
        driver = (front_end / "saved_page.js").read_text(encoding="utf-8")
        # JSON inside a script element: every "<" escaped, so that no "</script" can end it
        data = json.dumps(self.state(), separators=(",", ":"), allow_nan=False)
        data = data.replace("<", "\\u003c")
        return "\n".join(
            [
                "<!DOCTYPE html>",
                '<html lang="en">',
                "<head>",
                '<meta charset="utf-8">',
                f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
                '<meta name="viewport" content="width=device-width, initial-scale=1">',
                f"<title>{_escape_text(title)}</title>",
                f"<style>\n{_inline(css, 'style')}\n{PAGE_CSS}</style>",
                "</head>",
                "<body>",
                '<div id="iw-saved-root">',
                '<p class="iw-saved-loading">Opening the saved explorer (it needs JavaScript).</p>',
                "</div>",
                f'<script type="application/json" id="iw-saved-state">{data}</script>',
                # the explorer's module as text; saved_page.js imports it as anywidget does
                f'<script type="text/plain" id="iw-saved-module">\n{_inline(module, "script")}'
                "\n</script>",
                f'<script type="module">\n{_inline(driver, "script")}\n</script>',
                "</body>",
                "</html>",
                "",
            ]
        )


def _inline(source: str, element: str) -> str:
    """``source`` placed inside a ``<element>`` as it is: refused when it holds a closing tag of
    that element, which would end the element early."""
    if re.search(rf"</{element}", source, flags=re.IGNORECASE):
        raise ValueError(f"the front end's source holds '</{element}', which cannot be inlined")
    return source


def _escape_text(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
