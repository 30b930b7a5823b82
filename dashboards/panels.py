"""Panel shapes greenmon uses, built with grafana-foundation-sdk: stat, time series, bars, bar
gauge, table and map, each with its data source, description, unit and a "no data" text.

Each function returns the SDK builder so a caller can add targets and overrides; nothing
here knows what a panel shows, only how greenmon panels look.
"""

from __future__ import annotations

from collections.abc import Sequence

from grafana_foundation_sdk.builders import bargauge, geomap, stat, table, timeseries
from grafana_foundation_sdk.builders import common as cb
from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.models import common as cm
from grafana_foundation_sdk.models import dashboard as dm
from grafana_foundation_sdk.models import geomap as gm

from greenmon.dashboards.common import INFLUX

__all__ = [
    "bar_gauge",
    "bars",
    "by_names",
    "map_panel",
    "stat_panel",
    "table_panel",
    "thresholds",
    "time_series",
]


def by_names(*names: str) -> dm.MatcherConfig:
    """Match fields by name. (Grafana's "byNames" matcher: its options are an object, as the
    dashboard schema wants of every matcher; the string-option "byName" matchers the SDK's
    ``override_by_name`` writes do not validate against it.)"""
    return dm.MatcherConfig(id_val="byNames", options={"mode": "include", "names": list(names)})


def thresholds(*steps: tuple[float | None, str]) -> dash.ThresholdsConfig:
    """Absolute thresholds: ``(None, "green"), (0.9, "yellow")``; the first step is the base."""
    return (
        dash.ThresholdsConfig()
        .mode(dm.ThresholdsMode.ABSOLUTE)
        .steps([dm.Threshold(value=v, color=c) for v, c in steps])
    )


def _legend(*, table_mode: bool = False, calcs: Sequence[str] = ()) -> cb.VizLegendOptions:
    return (
        cb.VizLegendOptions()
        .show_legend(True)
        .display_mode(cm.LegendDisplayMode.TABLE if table_mode else cm.LegendDisplayMode.LIST)
        .placement(cm.LegendPlacement.BOTTOM)
        .calcs(list(calcs))
    )


def _tooltip() -> cb.VizTooltipOptions:
    return cb.VizTooltipOptions().mode(cm.TooltipDisplayMode.MULTI).sort(cm.SortOrder.DESCENDING)


def stat_panel(name: str, description: str, unit: str, *, calc: str = "lastNotNull",
               no_value: str = "无数据 no data") -> stat.Panel:  # fmt: skip
    return (
        stat.Panel()
        .title(name)
        .description(description)
        .datasource(INFLUX)
        .unit(unit)
        .no_value(no_value)
        .reduce_options(cb.ReduceDataOptions().calcs([calc]).values(False))
        .graph_mode(cm.BigValueGraphMode.NONE)
        .color_mode(cm.BigValueColorMode.VALUE)
        .text_mode(cm.BigValueTextMode.VALUE_AND_NAME)
        .orientation(cm.VizOrientation.HORIZONTAL)
        .height(5)
        .span(8)
    )


def time_series(name: str, description: str, unit: str, *, span: int = 12) -> timeseries.Panel:
    return (
        timeseries.Panel()
        .title(name)
        .description(description)
        .datasource(INFLUX)
        .unit(unit)
        .no_value("无数据 no data")
        .legend(_legend(table_mode=True, calcs=["mean", "max", "lastNotNull"]))
        .tooltip(_tooltip())
        .line_width(1)
        .fill_opacity(10)
        .span_nulls(False)
        .height(9)
        .span(span)
    )


def bars(name: str, description: str, unit: str, *, span: int = 12,
         stacked: bool = True) -> timeseries.Panel:  # fmt: skip
    """Daily values as (stacked) bars."""
    return (
        time_series(name, description, unit, span=span)
        .draw_style(cm.GraphDrawStyle.BARS)
        .fill_opacity(80)
        .stacking(
            cb.StackingConfig().mode(cm.StackingMode.NORMAL if stacked else cm.StackingMode.NONE)
        )
        .legend(_legend(table_mode=True, calcs=["sum", "mean"]))
    )


def bar_gauge(name: str, description: str, unit: str, *, span: int = 12,
              calc: str = "lastNotNull") -> bargauge.Panel:  # fmt: skip
    return (
        bargauge.Panel()
        .title(name)
        .description(description)
        .datasource(INFLUX)
        .unit(unit)
        .no_value("无数据 no data")
        .reduce_options(cb.ReduceDataOptions().calcs([calc]).values(False))
        .display_mode(cm.BarGaugeDisplayMode.BASIC)
        .value_mode(cm.BarGaugeValueMode.TEXT)
        .orientation(cm.VizOrientation.HORIZONTAL)
        .show_unfilled(True)
        .min(0)
        .height(9)
        .span(span)
    )


def table_panel(name: str, description: str, *, span: int = 24, height: int = 10,
                sort: str | None = None, desc: bool = False) -> table.Panel:  # fmt: skip
    panel = (
        table.Panel()
        .title(name)
        .description(description)
        .datasource(INFLUX)
        .no_value("无数据 no data")
        .filterable(True)
        .height(height)
        .span(span)
    )
    if sort is not None:
        panel = panel.sort_by([cb.TableSortByFieldState().display_name(sort).desc(desc)])
    return panel


def map_panel(name: str, description: str, *, size_field: str, color_field: str,
              center: tuple[int, int], zoom: int) -> geomap.Panel:  # fmt: skip
    """A geomap with one markers layer placed by the ``latitude``/``longitude`` fields; marker
    size follows `size_field`, colour `color_field` (through the panel's thresholds)."""
    markers = (
        cb.MapLayerOptions()
        .type("markers")
        .name("企业 Enterprises")
        .location(
            cb.FrameGeometrySource()
            .mode(cm.FrameGeometrySourceMode.COORDS)
            .latitude("latitude")
            .longitude("longitude")
        )
        .tooltip(True)
        .config(
            {
                "showLegend": True,
                "style": {
                    "size": {"field": size_field, "fixed": 5, "min": 4, "max": 18},
                    "color": {"field": color_field, "fixed": "dark-green"},
                    "opacity": 0.6,
                    "symbol": {"fixed": "img/icons/marker/circle.svg", "mode": "fixed"},
                    "text": {"field": "name", "fixed": "", "mode": "field"},
                    "textConfig": {"fontSize": 10, "offsetY": -12, "textAlign": "center"},
                },
            }
        )
    )
    lat, lon = center
    return (
        geomap.Panel()
        .title(name)
        .description(description)
        .no_value("无数据 no data")
        .view(geomap.MapViewConfig().id("coords").lat(lat).lon(lon).zoom(zoom).all_layers(True))
        .controls(geomap.ControlsOptions().show_zoom(True).mouse_wheel_zoom(True).show_scale(True))
        .basemap(cb.MapLayerOptions().type("default").name("底图 Basemap"))
        .layers([markers])
        .tooltip(geomap.TooltipOptions().mode(gm.TooltipMode.DETAILS))
        .height(14)
        .span(24)
    )
