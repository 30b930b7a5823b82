"""The one typed InfluxQL target greenmon's panels, variables, annotations and alert rules use.

grafana-foundation-sdk has builders for many query types but none for InfluxDB, so this module
adds one small `Dataquery` variant in the SDK's own shape: a model (`InfluxQLQuery`, with
``to_json``/``from_json`` and registered with the SDK's runtime so dashboards read back from
JSON parse into it) and a builder (`InfluxQL`) that panels take like any SDK query. It writes
the raw-query form Grafana's InfluxDB data source stores: ``query``, ``rawQuery: true``,
``resultFormat`` and, for annotations, the columns Grafana reads the event text and tags from.

It also owns the few text helpers every query shares (quoting, template-variable filters), so
that each query in the dashboards is written once, in InfluxQL, where a reader can check it.
"""

from __future__ import annotations

from typing import Any, Literal, Self

from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import runtime as cogruntime
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.models.common import DataSourceRef

from greenmon.influx import quote_ident, quote_literal

__all__ = [
    "INFLUXDB_TYPE",
    "InfluxQL",
    "InfluxQLQuery",
    "ResultFormat",
    "ident",
    "literal",
    "tag_equals",
    "tag_matches",
]

#: Grafana's plugin id for the InfluxDB data source.
INFLUXDB_TYPE = "influxdb"
ResultFormat = Literal["time_series", "table"]


class InfluxQLQuery(cogvariants.Dataquery):
    """A raw InfluxQL target as Grafana stores it in a panel, variable or annotation."""

    def __init__(
        self,
        ref_id: str = "A",
        query: str = "",
        result_format: ResultFormat = "time_series",
        alias: str | None = None,
        datasource: DataSourceRef | None = None,
        hide: bool | None = None,
        text_column: str | None = None,
        tags_column: str | None = None,
        title_column: str | None = None,
    ) -> None:
        self.ref_id = ref_id
        self.query = query
        self.result_format = result_format
        self.alias = alias
        self.datasource = datasource
        self.hide = hide
        self.text_column = text_column
        self.tags_column = tags_column
        self.title_column = title_column

    def to_json(self) -> dict[str, object]:
        payload: dict[str, object] = {
            "refId": self.ref_id,
            "query": self.query,
            "rawQuery": True,
            "resultFormat": self.result_format,
        }
        optional = {
            "alias": self.alias,
            "hide": self.hide,
            "textColumn": self.text_column,
            "tagsColumn": self.tags_column,
            "titleColumn": self.title_column,
        }
        payload.update({k: v for k, v in optional.items() if v is not None})
        if self.datasource is not None:
            payload["datasource"] = self.datasource.to_json()
        return payload

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Self:
        ds = data.get("datasource")
        return cls(
            ref_id=data.get("refId", "A"),
            query=data.get("query", ""),
            result_format=data.get("resultFormat", "time_series"),
            alias=data.get("alias"),
            datasource=DataSourceRef.from_json(ds) if isinstance(ds, dict) else None,
            hide=data.get("hide"),
            text_column=data.get("textColumn"),
            tags_column=data.get("tagsColumn"),
            title_column=data.get("titleColumn"),
        )


cogruntime.register_dataquery_variant(
    cogruntime.DataqueryConfig(identifier=INFLUXDB_TYPE, from_json_hook=InfluxQLQuery.from_json)
)


class InfluxQL(cogbuilder.Builder[InfluxQLQuery]):
    """Builder: ``InfluxQL('SELECT ...').ref_id('B').alias('$tag_county').table()``."""

    def __init__(self, query: str) -> None:
        self._internal = InfluxQLQuery(query=query)

    def build(self) -> InfluxQLQuery:
        return self._internal

    def ref_id(self, ref_id: str) -> Self:
        self._internal.ref_id = ref_id
        return self

    def alias(self, alias: str) -> Self:
        """Series name pattern (``$tag_<key>``, ``$col``), time-series results only."""
        self._internal.alias = alias
        return self

    def table(self) -> Self:
        """Return rows (one column per tag and field) instead of one series per tag set."""
        self._internal.result_format = "table"
        return self

    def datasource(self, ref: DataSourceRef) -> Self:
        self._internal.datasource = ref
        return self

    def hide(self, hide: bool = True) -> Self:
        self._internal.hide = hide
        return self

    def annotation_columns(
        self, text: str, tags: str | None = None, title: str | None = None
    ) -> Self:
        """For an annotation query: the columns holding the event's text, tags and title."""
        self._internal.text_column = text
        self._internal.tags_column = tags
        self._internal.title_column = title
        return self


def ident(name: str) -> str:
    """A double-quoted InfluxQL identifier (measurement, tag or field)."""
    return quote_ident(name)


def literal(value: str) -> str:
    """A single-quoted InfluxQL string literal."""
    return quote_literal(value)


def tag_equals(tag: str, value: str) -> str:
    """``"tag" = 'value'``."""
    return f"{ident(tag)} = {literal(value)}"


def tag_matches(tag: str, variable: str) -> str:
    """``"tag" =~ /^$variable$/``: the form Grafana fills with a (multi-)value regex."""
    return f"{ident(tag)} =~ /^${variable}$/"
