"""A stand-in for Grafana's HTTP API (no Grafana server can be installed here), held to
Grafana's own OpenAPI description.

`FakeGrafana` serves on 127.0.0.1 (a free port, in a thread) the calls greenmon's pusher makes,
keeping state the way Grafana does (folders, data sources, dashboards with versions, rule
groups, teams, folder permissions), so that a second push sees what the first wrote. Every
request is recorded and checked against ``grafana-http-api.subset.json``: the path and method
must be an operation of the spec, query parameters must be declared for it, and a JSON body
must validate against the operation's ``requestBody`` schema with an OpenAPI 3.0 validator —
strictly: an object schema that lists its properties accepts no others, so a misspelt key
(``folderUID`` where ``folderUid`` is meant) is caught rather than silently ignored. What
breaks the spec goes to `violations` and is answered 400.

Like Grafana, GETs of rule groups and data sources return more than was sent (ids, versions,
``updated``, ``provenance``, defaults in query models, ``secureJsonFields`` instead of
secrets), so the pusher's "unchanged" check is tested against the real shape.
"""

from __future__ import annotations

import copy
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from openapi_schema_validator import OAS30Validator

TOKEN = "glsa_test_token"


@dataclass(frozen=True)
class Request:
    method: str
    path: str  # without /api
    query: dict[str, list[str]]
    body: Any
    operation: str | None

    @property
    def writes(self) -> bool:
        return self.method in ("POST", "PUT", "DELETE", "PATCH")


def _strict(schema: Any) -> Any:
    """A copy of `schema` where every object schema that lists properties and says nothing
    about others refuses others."""
    if isinstance(schema, dict):
        out = {k: _strict(v) for k, v in schema.items()}
        if "properties" in out and "additionalProperties" not in out:
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


class _Spec:
    def __init__(self, path: Path) -> None:
        self.doc = json.loads(path.read_text())
        self.strict = _strict(self.doc)
        self.routes: list[tuple[re.Pattern[str], str, dict[str, Any]]] = []
        for template, ops in self.doc["paths"].items():
            pattern = re.compile("^" + re.sub(r"\{[^}]+\}", r"[^/]+", template) + "$")
            self.routes.append((pattern, template, ops))

    def operation(self, method: str, path: str) -> tuple[str, dict[str, Any]] | None:
        for pattern, template, ops in self.routes:
            if pattern.match(path) and method.lower() in ops:
                return template, ops[method.lower()]
        return None

    def body_errors(self, op: dict[str, Any], body: Any) -> list[str]:
        content = op.get("requestBody", {}).get("content", {}).get("application/json")
        if content is None:
            return [] if body is None else ["the operation takes no JSON body"]
        schema = {**content["schema"], "components": self.strict["components"]}
        validator = OAS30Validator(schema)
        return [
            f"{'/'.join(map(str, e.absolute_path)) or '(body)'}: {e.message[:300]}"
            for e in validator.iter_errors(body)
        ]


@dataclass
class _State:
    folders: dict[str, dict[str, Any]] = field(default_factory=dict)
    permissions: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    datasources: dict[str, dict[str, Any]] = field(default_factory=dict)
    dashboards: dict[str, dict[str, Any]] = field(default_factory=dict)
    rule_groups: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    teams: dict[int, dict[str, Any]] = field(default_factory=dict)
    next_id: int = 1

    def new_id(self) -> int:
        self.next_id += 1
        return self.next_id


class FakeGrafana:
    """``with FakeGrafana(spec_path) as g:`` then ``g.url``, ``g.requests``, ``g.violations``."""

    def __init__(self, spec: Path, version: str = "11.6.0") -> None:
        self.spec = _Spec(spec)
        self.version = version
        self.state = _State()
        self.requests: list[Request] = []
        self.violations: list[str] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> FakeGrafana:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def writes(self, since: int = 0) -> list[Request]:
        return [r for r in self.requests[since:] if r.writes]

    # ----------------------------------------------------------------- HTTP plumbing

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                status, answer = fake._dispatch(
                    self.command, self.path, raw, self.headers.get("Authorization")
                )
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = _serve

        return Handler

    def _dispatch(self, method: str, target: str, raw: bytes, auth: str | None) -> tuple[int, Any]:
        parts = urlsplit(target)
        if not parts.path.startswith("/api/"):
            return 404, {"message": "not found"}
        path = unquote(parts.path[len("/api") :])
        query = parse_qs(parts.query)
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = "<not JSON>"
        with self._lock:
            found = self.spec.operation(method, path)
            self.requests.append(
                Request(method, path, query, body, found[1].get("operationId") if found else None)
            )
            if found is None:
                self.violations.append(f"{method} {path}: not an operation of the spec")
                return 404, {"message": "not in the spec"}
            template, op = found
            declared = {p["name"] for p in op.get("parameters", []) if p.get("in") == "query"}
            for name in query:
                if name not in declared:
                    self.violations.append(f"{method} {path}: undeclared query parameter {name}")
            errors = self.spec.body_errors(op, body)
            if errors:
                self.violations.extend(f"{method} {path}: {e}" for e in errors)
                return 400, {"message": "; ".join(errors)}
            if auth != f"Bearer {TOKEN}" and template != "/health":  # health needs no auth
                return 401, {"message": "invalid API key"}
            return self._answer(method, template, path, query, body)

    # ----------------------------------------------------------------- Grafana's behaviour

    def _answer(
        self, method: str, template: str, path: str, query: dict[str, list[str]], body: Any
    ) -> tuple[int, Any]:
        s = self.state
        seg = path.strip("/").split("/")
        key = (method, template)
        if key == ("GET", "/health"):
            return 200, {"database": "ok", "version": self.version, "commit": "test"}
        if key == ("GET", "/folders/{folder_uid}"):
            folder = s.folders.get(seg[1])
            return (200, folder) if folder else (404, {"message": "folder not found"})
        if key == ("POST", "/folders"):
            uid = body.get("uid") or f"f{s.new_id()}"
            if uid in s.folders:
                return 409, {"message": "a folder with the same uid already exists"}
            s.folders[uid] = {"id": s.new_id(), "uid": uid, "title": body["title"], "version": 1}
            # Grafana's defaults for a new folder: every Editor edits, every Viewer views.
            s.permissions[uid] = [
                {"role": "Editor", "permission": 2, "inherited": False},
                {"role": "Viewer", "permission": 1, "inherited": False},
            ]
            return 200, s.folders[uid]
        if key == ("PUT", "/folders/{folder_uid}"):
            folder = s.folders.get(seg[1])
            if folder is None:
                return 404, {"message": "folder not found"}
            folder.update(title=body["title"], version=folder["version"] + 1)
            return 200, folder
        if key == ("GET", "/folders/{folder_uid}/permissions"):
            if seg[1] not in s.folders:
                return 404, {"message": "folder not found"}
            return 200, [
                {**item, "uid": seg[1], "folderUid": seg[1]} for item in s.permissions[seg[1]]
            ]
        if key == ("POST", "/folders/{folder_uid}/permissions"):
            if seg[1] not in s.folders:
                return 404, {"message": "folder not found"}
            for item in body["items"]:
                if "teamId" in item and item["teamId"] not in s.teams:
                    return 400, {"message": f"team {item['teamId']} not found"}
            s.permissions[seg[1]] = [{**i, "inherited": False} for i in body["items"]]
            return 200, {"message": "Folder permissions updated"}
        if key == ("GET", "/datasources/uid/{uid}"):
            ds = s.datasources.get(seg[2])
            if ds is None:
                return 404, {"message": "Data source not found"}
            public = {k: v for k, v in ds.items() if k != "secureJsonData"}
            secure = dict.fromkeys(ds.get("secureJsonData") or {}, True)
            return 200, {**public, "secureJsonFields": secure, "readOnly": False}
        if key == ("POST", "/datasources"):
            if body["uid"] in s.datasources or any(
                d["name"] == body["name"] for d in s.datasources.values()
            ):
                return 409, {"message": "data source with the same name already exists"}
            ds = {
                **copy.deepcopy(body),
                "id": s.new_id(),
                "orgId": 1,
                "version": 1,
                "basicAuth": False,
                "withCredentials": False,
            }
            s.datasources[body["uid"]] = ds
            return 200, {"id": ds["id"], "message": "Datasource added", "name": ds["name"]}
        if key == ("PUT", "/datasources/uid/{uid}"):
            ds = s.datasources.get(seg[2])
            if ds is None:
                return 404, {"message": "Data source not found"}
            secure = body.get("secureJsonData") or ds.get("secureJsonData")
            ds.clear()
            ds.update(copy.deepcopy(body), secureJsonData=secure, version=body["version"] + 1)
            return 200, {"message": "Datasource updated", "id": 1, "name": ds["name"]}
        if key == ("GET", "/dashboards/uid/{uid}"):
            stored = s.dashboards.get(seg[2])
            if stored is None:
                return 404, {"message": "Dashboard not found"}
            return 200, copy.deepcopy(stored)
        if key == ("POST", "/dashboards/db"):
            model = copy.deepcopy(body["dashboard"])
            uid = model["uid"]
            folder_uid = body.get("folderUid")
            if folder_uid and folder_uid not in s.folders:
                return 400, {"message": "folder not found"}
            old = s.dashboards.get(uid)
            if old is not None and not body.get("overwrite"):
                return 412, {"message": "The dashboard has been changed by someone else"}
            version = old["dashboard"]["version"] + 1 if old else 1
            model.update(id=old["dashboard"]["id"] if old else s.new_id(), version=version)
            s.dashboards[uid] = {
                "dashboard": model,
                "meta": {"folderUid": folder_uid or "", "version": version},
            }
            return 200, {
                "uid": uid,
                "version": version,
                "status": "success",
                "url": f"/d/{uid}",
                "id": model["id"],
            }
        if key == ("GET", "/v1/provisioning/folder/{FolderUID}/rule-groups/{Group}"):
            group = s.rule_groups.get((seg[3], seg[5]))
            return (200, copy.deepcopy(group)) if group else (404, {"message": "not found"})
        if key == ("PUT", "/v1/provisioning/folder/{FolderUID}/rule-groups/{Group}"):
            if seg[3] not in s.folders:
                return 400, {"message": "folder does not exist"}
            rules = []
            for rule in copy.deepcopy(body["rules"]):
                for q in rule["data"]:  # Grafana fills in query defaults
                    q["model"].setdefault("intervalMs", 1000)
                    q["model"].setdefault("maxDataPoints", 43200)
                rules.append(
                    {
                        **rule,
                        "id": s.new_id(),
                        "updated": "2025-06-01T00:00:00Z",
                        "provenance": "api",
                    }
                )
            s.rule_groups[(seg[3], seg[5])] = {**body, "rules": rules}
            return 200, s.rule_groups[(seg[3], seg[5])]
        if key == ("GET", "/teams/search"):
            name = (query.get("name") or [""])[0]
            teams = [t for t in s.teams.values() if not name or t["name"] == name]
            return 200, {"totalCount": len(teams), "teams": teams, "page": 1, "perPage": 1000}
        if key == ("POST", "/teams"):
            if any(t["name"] == body["name"] for t in s.teams.values()):
                return 409, {"message": "Team name taken"}
            team_id = s.new_id()
            s.teams[team_id] = {
                "id": team_id,
                "orgId": 1,
                "name": body["name"],
                "email": body.get("email", ""),
                "memberCount": 0,
            }
            return 200, {"message": "Team created", "teamId": team_id}
        return 501, {"message": f"the fake does not implement {method} {template}"}
