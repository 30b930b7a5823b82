"""``greenmon dashboards push``: upsert greenmon's folder, data sources, dashboards and alert
rules into a running Grafana over its HTTP API, with grafana-client.

Every object is read first and written only when it differs from what greenmon generates, so
a second push with nothing changed writes nothing and says so. "Differs" compares what greenmon
sends: keys Grafana adds on its own (ids, versions, timestamps, provenance, defaults) do not
count; secrets cannot be read back from Grafana, so a data source whose secret is already set
is left alone unless ``force`` is on.

``per_enterprise`` also gives every enterprise of the registry a folder (its own detail
dashboard inside, the enterprise fixed) and a team ``greenmon-<enterprise>`` with View on that
folder only; a bureau team gets View on every greenmon folder. Folder permissions replace
Grafana's default "every Viewer and Editor" grants, so a member of an enterprise's team sees
only that enterprise's folder. (They restrict dashboards, not the data source: in Grafana OSS
anyone who can query a data source can query all of it.)
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

import niquests
from grafana_client import GrafanaApi
from grafana_client.client import GrafanaClientError, GrafanaException

from greenmon.dashboards.alert_rules import GROUP
from greenmon.dashboards.common import FOLDER_TITLE, FOLDER_UID, enterprise_uid
from greenmon.dashboards.errors import GrafanaAuthError, GrafanaError
from greenmon.dashboards.generate import Bundle, DatasourceSpec, enterprise_dashboard_json
from greenmon.dashboards.site import Site

__all__ = ["Action", "PushOptions", "PushReport", "connect", "push", "same"]

log = logging.getLogger("greenmon.dashboards")

Outcome = Literal["created", "updated", "unchanged"]
Progress = Callable[[int, int], None]
#: Grafana's folder permission levels.
VIEW = 1
_MESSAGE = "greenmon dashboards push"


@dataclass(frozen=True)
class Action:
    kind: str  # folder, datasource, dashboard, alert-rules, team, permissions
    name: str
    outcome: Outcome


@dataclass
class PushReport:
    grafana: str
    version: str | None = None
    actions: list[Action] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return any(a.outcome != "unchanged" for a in self.actions)

    def counts(self) -> dict[str, int]:
        out = {"created": 0, "updated": 0, "unchanged": 0}
        for a in self.actions:
            out[a.outcome] += 1
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "grafana": self.grafana,
            "version": self.version,
            "changed": self.changed,
            **self.counts(),
            "actions": [a.__dict__ for a in self.actions],
            "notes": self.notes,
        }


@dataclass(frozen=True)
class PushOptions:
    per_enterprise: bool = False
    bureau_team: str | None = "greenmon-bureau"
    force: bool = False


def same(wanted: Any, actual: Any) -> bool:
    """True when `actual` holds everything in `wanted` (dicts: every key of `wanted`, compared
    the same way; lists: same length, item by item; numbers by value)."""
    if isinstance(wanted, dict):
        return isinstance(actual, dict) and all(
            k in actual and same(v, actual[k]) for k, v in wanted.items()
        )
    if isinstance(wanted, list):
        return (
            isinstance(actual, list)
            and len(wanted) == len(actual)
            and all(same(w, a) for w, a in zip(wanted, actual, strict=True))
        )
    if isinstance(wanted, bool) or isinstance(actual, bool):
        return wanted is actual
    if isinstance(wanted, int | float) and isinstance(actual, int | float):
        return float(wanted) == float(actual)
    return bool(wanted == actual)


def connect(
    url: str,
    *,
    token: str | None = None,
    username: str | None = None,
    password: str | None = None,
    timeout: float = 10.0,
) -> GrafanaApi:
    """A grafana-client API object for `url` (http(s)://host:port[/sub/path])."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise GrafanaError(f"--grafana-url must be http(s)://host[:port][/path], got {url!r}")
    if parts.username or parts.password:
        raise GrafanaError("--grafana-url must not carry credentials: use the [grafana] settings")
    credential: str | tuple[str, str] | None = None
    if token:
        credential = token
    elif username:
        credential = (username, password or "")
    api = GrafanaApi(
        auth=credential,
        host=parts.hostname,
        port=parts.port,
        url_path_prefix=parts.path.strip("/") + "/" if parts.path.strip("/") else "",
        protocol=parts.scheme,
        timeout=timeout,
        user_agent="greenmon",
    )
    return api


@contextmanager
def _call(what: str) -> Iterator[None]:
    """Turn grafana-client and HTTP errors into greenmon's, naming the request."""
    try:
        yield
    except GrafanaClientError as exc:
        status = exc.status_code
        if status in (401, 403):
            raise GrafanaAuthError(
                f"{what}: Grafana refused the credentials or their permissions ({status}: "
                f"{exc.message}); set [grafana] token, or username and password, of an admin"
            ) from exc
        raise GrafanaError(f"{what}: Grafana answered {status}: {exc.message}") from exc
    except GrafanaException as exc:
        raise GrafanaError(f"{what}: {exc.message}") from exc
    except (niquests.exceptions.RequestException, OSError) as exc:
        raise GrafanaError(f"{what}: cannot reach Grafana ({exc})") from exc


def _get(what: str, fetch: Callable[[], Any]) -> Any:
    """`fetch()`'s answer, or None when Grafana says 404 (not there yet)."""
    try:
        with _call(what):
            return fetch()
    except GrafanaError as exc:
        cause = exc.__cause__
        if isinstance(cause, GrafanaClientError) and cause.status_code == 404:
            return None
        raise


class _Pusher:
    def __init__(self, api: GrafanaApi, report: PushReport, force: bool) -> None:
        self.api = api
        self.report = report
        self.force = force

    def _act(self, kind: str, name: str, outcome: Outcome) -> None:
        self.report.actions.append(Action(kind, name, outcome))
        if outcome != "unchanged":
            log.info("%s %s: %s", kind, name, outcome)

    # ----------------------------------------------------------------- folders

    def folder(self, uid: str, title: str) -> None:
        current = _get(f"GET folder {uid}", lambda: self.api.folder.get_folder(uid))
        if current is None:
            with _call(f"create folder {uid}"):
                self.api.folder.create_folder(title, uid=uid)
            self._act("folder", uid, "created")
            return
        if current.get("title") == title:
            self._act("folder", uid, "unchanged")
            return
        with _call(f"update folder {uid}"):
            self.api.folder.update_folder(
                uid, title=title, version=current.get("version"), overwrite=True
            )
        self._act("folder", uid, "updated")

    def permissions(self, uid: str, team_ids: list[int]) -> None:
        wanted = {("team", t, VIEW) for t in team_ids}
        with _call(f"GET permissions of folder {uid}"):
            current = self.api.folder.get_folder_permissions(uid)
        have = set()
        for item in current or []:
            if item.get("inherited"):
                continue
            if item.get("teamId"):
                have.add(("team", int(item["teamId"]), int(item.get("permission", 0))))
            elif item.get("userId"):
                have.add(("user", int(item["userId"]), int(item.get("permission", 0))))
            elif item.get("role") and item["role"] != "Admin":  # admins see every folder anyway
                have.add(("role", item["role"], int(item.get("permission", 0))))
        if have == wanted and not self.force:
            self._act("permissions", uid, "unchanged")
            return
        items = [{"teamId": t, "permission": VIEW} for t in team_ids]
        with _call(f"set permissions of folder {uid}"):
            self.api.folder.update_folder_permissions(uid, {"items": items})
        self._act("permissions", uid, "updated")

    # ----------------------------------------------------------------- teams

    def team(self, name: str) -> int:
        with _call(f"search team {name}"):
            found = [t for t in self.api.teams.get_team_by_name(name) if t.get("name") == name]
        if found:
            self._act("team", name, "unchanged")
            return int(found[0]["id"])
        with _call(f"create team {name}"):
            created = self.api.teams.add_team({"name": name})
        self._act("team", name, "created")
        return int(created["teamId"])

    # ----------------------------------------------------------------- data sources

    def datasource(self, body: dict[str, Any]) -> None:
        uid = body["uid"]
        current = _get(
            f"GET data source {uid}", lambda: self.api.datasource.get_datasource_by_uid(uid)
        )
        if current is None:
            with _call(f"create data source {uid}"):
                self.api.datasource.create_datasource(body)
            self._act("datasource", uid, "created")
            return
        public = {k: v for k, v in body.items() if k != "secureJsonData"}
        secrets_set = set(current.get("secureJsonFields") or {})
        secrets_missing = set(body.get("secureJsonData") or {}) - secrets_set
        if same(public, current) and not secrets_missing and not self.force:
            self._act("datasource", uid, "unchanged")
            if body.get("secureJsonData"):
                self.report.notes.append(
                    f"data source {uid}: its secret is set in Grafana and cannot be read back; "
                    "it was left as it is (push --force to send it again)"
                )
            return
        update = {**body, "version": current.get("version")}
        with _call(f"update data source {uid}"):
            self.api.datasource.update_datasource_by_uid(uid, update)
        self._act("datasource", uid, "updated")

    # ----------------------------------------------------------------- dashboards

    def dashboard(self, model: dict[str, Any], folder_uid: str) -> None:
        uid = model["uid"]
        current = _get(f"GET dashboard {uid}", lambda: self.api.dashboard.get_dashboard(uid))
        if current is not None and not self.force:
            stored = {k: v for k, v in (current.get("dashboard") or {}).items()
                      if k not in ("id", "version")}  # fmt: skip
            in_folder = (current.get("meta") or {}).get("folderUid") == folder_uid
            if in_folder and stored == model:
                self._act("dashboard", uid, "unchanged")
                return
        body = {"dashboard": model, "folderUid": folder_uid, "overwrite": True,
                "message": _MESSAGE}  # fmt: skip
        with _call(f"save dashboard {uid}"):
            self.api.dashboard.update_dashboard(body)
        self._act("dashboard", uid, "created" if current is None else "updated")

    # ----------------------------------------------------------------- alert rules

    def rule_group(self, group: dict[str, Any]) -> None:
        name = f"{FOLDER_UID}/{GROUP}"
        current = _get(
            f"GET rule group {name}",
            lambda: self.api.alertingprovisioning.get_rule_group(FOLDER_UID, GROUP),
        )
        if current is not None and not self.force:
            by_uid = {r.get("uid"): r for r in current.get("rules") or []}
            ours = {r["uid"] for r in group["rules"]}
            if (
                set(by_uid) == ours
                and same(group["interval"], current.get("interval"))
                and all(same(r, by_uid[r["uid"]]) for r in group["rules"])
            ):
                self._act("alert-rules", name, "unchanged")
                return
        with _call(f"save rule group {name}"):
            self.api.alertingprovisioning.update_rule_group(FOLDER_UID, GROUP, group)
        self._act("alert-rules", name, "created" if current is None else "updated")


def push(
    api: GrafanaApi,
    bundle: Bundle,
    datasource: DatasourceSpec,
    site: Site,
    options: PushOptions = PushOptions(),
    progress: Progress | None = None,
) -> PushReport:
    """Upsert everything into the Grafana behind `api`; see the module docstring."""
    report = PushReport(grafana=str(api.client.url))
    with _call("GET /api/health"):
        # /api/health (not grafana-client's health.check(), which reads /api/frontend/settings):
        # it answers without credentials and says which Grafana this is.
        health = api.client.GET("/health")
    report.version = str(health.get("version")) if isinstance(health, dict) else None
    p = _Pusher(api, report, options.force)
    enterprises = site.enterprises if options.per_enterprise else ()
    steps = 4 + len(bundle.dashboards) + len(enterprises)
    done = 0

    def step() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, steps)

    p.folder(FOLDER_UID, FOLDER_TITLE)
    step()
    p.datasource(datasource.influx())
    p.datasource(datasource.registry())
    step()
    for model in bundle.dashboards.values():
        p.dashboard(model, FOLDER_UID)
        step()
    p.rule_group(bundle.rules.api_group())
    step()
    bureau: list[int] = []
    if options.per_enterprise:
        if options.bureau_team:
            bureau = [p.team(options.bureau_team)]
            p.permissions(FOLDER_UID, bureau)
        if not enterprises:
            report.notes.append("--per-enterprise needs the registry: no enterprise folders")
    step()
    for ent in enterprises:
        folder_uid = enterprise_uid("greenmon-f", ent.enterprise_id)
        p.folder(folder_uid, f"{ent.enterprise_id} {ent.name}")
        team_id = p.team(f"greenmon-{ent.enterprise_id}")
        p.permissions(folder_uid, [team_id, *bureau])
        p.dashboard(enterprise_dashboard_json(site, ent), folder_uid)
        step()
    return report
