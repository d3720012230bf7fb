"""The Jupyter front end: InfluenceExplorer (anywidget) and its panels."""

from influence_widgets.widgets.explorer import InfluenceExplorer

__all__ = ["InfluenceExplorer"]
