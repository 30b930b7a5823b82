"""The production files (deploy/production/) checked without a container engine or systemd:
the compose file against the Compose specification's schema and against everything it names
(services, ports, volumes, variables, files, greenmon commands and settings), the Dockerfile
(hadolint, and the wheel built from exactly the files it copies), the shell scripts
(shellcheck) and the systemd units (commands, settings, hardening).

Running them for real is left to `tests/deploy/test_production_run.py` where the parts exist
here (Mosquitto with the production config, the health probes, the set-up scripts)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import zipfile
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from greenmon.health import heartbeat_path
from greenmon.health import parser as health_parser
from tests.deploy.production import (
    COMPOSE,
    ENV_EXAMPLE,
    GREENMON_BIN,
    PROD,
    ROOT,
    UNITS,
    InterpolationError,
    compose,
    example_env,
    parse_greenmon,
    raw_compose,
    read_env_file,
    settings_env_names,
    units,
    usage_error,
    variables,
)

VENV_BIN = Path(sys.executable).parent
SECRETS = {
    "INFLUXDB_ADMIN_PASSWORD",
    "INFLUXDB_ADMIN_TOKEN",
    "GREENMON_INFLUX_PASSWORD",
    "GRAFANA_INFLUX_PASSWORD",
    "GRAFANA_ADMIN_PASSWORD",
}
# What each third-party image listens on inside its container (their documentation); the
# broker's listeners are read from the mounted mosquitto.conf instead.
IMAGE_PORTS = {"influxdb": {8086}, "grafana/grafana-oss": {3000}}


def services() -> dict[str, dict[str, Any]]:
    return dict(compose()["services"])


def greenmon_services() -> dict[str, dict[str, Any]]:
    return {n: s for n, s in services().items() if "build" in s}


def _tool(name: str) -> str:
    path = shutil.which(name, path=f"{VENV_BIN}:/usr/bin:/usr/local/bin")
    assert path, f"{name} not found: `make install` installs it (test extras)"
    return path


# -- compose: shape -------------------------------------------------------------------------
def test_compose_validates_against_the_compose_specification() -> None:
    schema_text = (
        resources.files("check_jsonschema.builtin_schemas.vendor")
        .joinpath("compose-spec.json")
        .read_text()
    )
    schema = json.loads(schema_text)
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(compose()), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors)


def test_every_variable_is_in_env_example_and_every_secret_is_required() -> None:
    text = COMPOSE.read_text()
    used = variables(raw_compose())
    example = read_env_file(ENV_EXAMPLE)
    assert used - set(example) == set(), "referenced but not in .env.example"
    assert set(example) - used == set(), "in .env.example but never used"
    # Secrets: named, empty in the example, and compose refuses to start without them.
    assert {k for k, v in example.items() if v == ""} == SECRETS
    for name in SECRETS:
        assert re.search(r"\$\{" + name + r":\?[^}]+\}", text), f"{name} must be ${{{name}:?…}}"
        with pytest.raises(InterpolationError, match=name):
            compose({**example_env(), name: ""})


def test_images_are_pinned_and_services_restart_and_report_health() -> None:
    svcs = services()
    for name, svc in svcs.items():
        image = svc["image"]
        repo, _, tag = image.rpartition(":")
        assert repo and tag and tag != "latest", f"{name}: image {image} is not pinned"
        if "build" not in svc:
            assert re.fullmatch(r"\d+\.\d+\.\d+", tag), f"{name}: pin a full version, not {tag}"
        depended = [
            (other, dep)
            for other, s in svcs.items()
            for dname, dep in (s.get("depends_on") or {}).items()
            if dname == name
        ]
        if svc.get("restart") == "no":  # a one-shot: others wait for it to finish
            assert depended, f"one-shot {name} is not waited for by anyone"
            for other, dep in depended:
                assert dep["condition"] == "service_completed_successfully", (other, name)
        else:
            assert svc.get("restart") == "unless-stopped", name
            assert "healthcheck" in svc, f"long-running {name} has no health check"
            assert svc["healthcheck"]["test"][0] in ("CMD", "CMD-SHELL"), name
        for dname, dep in (svc.get("depends_on") or {}).items():
            assert dname in svcs, f"{name} depends on unknown {dname}"
            if dep["condition"] == "service_healthy":
                assert "healthcheck" in svcs[dname], f"{dname} has no health check to wait for"
    # The three long-running greenmon commands.
    commands = {tuple(s["command"][:2]) for s in greenmon_services().values()}
    assert {("ingest", "--log-level"), ("aggregate", "--follow"), ("alerts", "watch")} <= commands


def test_ports_match_what_the_containers_listen_on() -> None:
    svcs = services()
    for name, svc in svcs.items():
        for spec in svc.get("ports", []):
            parts = str(spec).split(":")
            container = int(parts[-1])
            host_ip = parts[0] if len(parts) == 3 else None
            repo = svc["image"].rpartition(":")[0]
            if repo == "eclipse-mosquitto":
                conf = _mounted_file(svc, "/mosquitto/config/mosquitto.conf")
                listeners = {int(m) for m in re.findall(r"^listener (\d+)", conf.read_text(), re.M)}
                assert container in listeners, f"{name}: nothing listens on {container}"
                assert container == 8883, "publish only the TLS listener to the gateways"
            else:
                assert container in IMAGE_PORTS[repo], f"{name}: {container}"
            if repo == "influxdb":
                assert host_ip == "127.0.0.1", "InfluxDB's admin port stays on the host"
    # Inside the network, greenmon reaches the services on the ports they listen on.
    for svc in greenmon_services().values():
        env = svc.get("environment", {})
        if "GREENMON_MQTT_URL" in env:
            assert env["GREENMON_MQTT_URL"] == "mqtt://mosquitto:1883"
        if "GREENMON_INFLUX_URL" in env:
            assert env["GREENMON_INFLUX_URL"] == "http://influxdb:8086"


def _mounts(svc: dict[str, Any]) -> list[tuple[str, str, bool]]:
    out = []
    for v in svc.get("volumes", []):
        parts = v.split(":")
        out.append((parts[0], parts[1], len(parts) > 2 and "ro" in parts[2].split(",")))
    return out


def _mounted_file(svc: dict[str, Any], target: str) -> Path:
    for source, tgt, _ in _mounts(svc):
        if tgt == target:
            return (PROD / source).resolve()
    raise AssertionError(f"nothing mounted at {target}")


def test_volumes_exist_are_declared_and_hold_what_the_services_read() -> None:
    doc = compose()
    svcs = doc["services"]
    declared = set(doc["volumes"])
    named_used: set[str] = set()
    operator_dirs = set()
    for name, svc in svcs.items():
        for source, _target, _ro in _mounts(svc):
            if source.startswith((".", "/")):
                path = (PROD / source).resolve()
                assert path.is_relative_to(PROD), f"{name}: {source} is outside the directory"
                if not path.exists():  # made by the operator (README, .gitignore)
                    assert path.parent == PROD, f"{name}: bind source {source} does not exist"
                    operator_dirs.add(path.name)
            else:
                assert source in declared, f"{name}: volume {source} not declared"
                named_used.add(source)
        for env_file in svc.get("env_file", []):
            assert (PROD / env_file).resolve().parent.name in operator_dirs | {"broker-auth"}
    assert declared == named_used, f"declared but unused: {declared - named_used}"
    assert operator_dirs == {"broker-auth", "certs", "registry"}
    ignored = (PROD / ".gitignore").read_text().split()
    readme = (PROD / "README.md").read_text()
    for d in operator_dirs:
        assert f"{d}/" in ignored, f"{d}/ holds secrets or site data: .gitignore it"
        assert f"{d}/" in readme, f"README.md must say what goes into {d}/"

    # The broker's config names files under its mounts; broker-files fills that volume.
    mosq = svcs["mosquitto"]
    conf = _mounted_file(mosq, "/mosquitto/config/mosquitto.conf").read_text()
    paths = re.findall(r"^(?:password_file|acl_file|cafile|certfile|keyfile) (\S+)", conf, re.M)
    targets = {t: s for s, t, _ in _mounts(mosq)}
    for p in paths:
        volume = next(s for t, s in targets.items() if p.startswith(t + "/"))
        filler = svcs["broker-files"]
        assert any(s == volume for s, _, ro in _mounts(filler) if not ro)
    store = re.search(r"^persistence_location (\S+)", conf, re.M)
    assert store and store.group(1).rstrip("/") in targets
    # Grafana reads the tree the one-shot `dashboards` writes.
    out = svcs["dashboards"]["command"][svcs["dashboards"]["command"].index("--out") + 1]
    tree = next(s for s, t, _ in _mounts(svcs["dashboards"]) if t == out)
    assert (tree, "/etc/grafana/provisioning", True) in _mounts(svcs["grafana"])


# -- compose: greenmon's commands, settings and health probes -------------------------------
def test_greenmon_commands_parse_with_the_real_command_tree() -> None:
    for name, svc in greenmon_services().items():
        contexts = parse_greenmon(svc["command"])
        assert len(contexts) >= 2, f"{name}: {svc['command']} names no command"
    # The checker itself refuses what the command line would refuse.
    with pytest.raises(usage_error(), match="no-such-option"):
        parse_greenmon(["aggregate", "--follow", "--no-such-option"])
    with pytest.raises(usage_error(), match="no-such-command"):
        parse_greenmon(["no-such-command"])
    with pytest.raises(usage_error(), match="valid number"):
        parse_greenmon(["aggregate", "--poll-seconds", "soon"])


def test_greenmon_environment_names_are_settings() -> None:
    known = settings_env_names()
    assert "GREENMON_INGEST__METRICS_HOST" in known and "GREENMON_MQTT_URL" in known
    for name, svc in greenmon_services().items():
        for key in svc.get("environment", {}):
            if key.startswith("GREENMON_"):
                assert key in known, f"{name}: {key} is no greenmon setting"


def test_the_ingestors_broker_login_file_sets_settings(tmp_path: Path) -> None:
    """compose and systemd read broker-auth's ingestor.env as an env file."""
    from greenmon.deploy.broker_auth import Gateway, write_broker_auth

    files = write_broker_auth(tmp_path, [Gateway("E0001", "gw-01")])
    keys = set(read_env_file(files.ingestor_env))
    assert keys == {"GREENMON_MQTT_USERNAME", "GREENMON_MQTT_PASSWORD"}
    assert keys <= settings_env_names()


def test_health_checks_name_real_probes_and_paths() -> None:
    for name, svc in greenmon_services().items():
        test = svc.get("healthcheck", {}).get("test")
        if not test:
            continue
        assert test[:4] == ["CMD", "python", "-m", "greenmon.health"], name
        args = health_parser().parse_args(test[4:])
        env = svc["environment"]
        if args.probe == "heartbeat":
            command = svc["command"][0]
            expected = heartbeat_path(Path(env["GREENMON_RUNTIME_DIR"]), command)
            assert args.file == expected, f"{name}: the heartbeat is {expected}"
            assert any(str(args.file).startswith(t + "/") for _, t, ro in _mounts(svc) if not ro)
        else:
            port = int(env.get("GREENMON_INGEST__METRICS_PORT", 9108))
            assert args.url == f"http://127.0.0.1:{port}/metrics", name
            assert ("greenmon_ingest_mqtt_connected", 1.0) in args.expect


def test_grafana_gets_every_variable_the_provisioning_tree_refers_to(tmp_path: Path) -> None:
    svcs = services()
    cmd = list(svcs["dashboards"]["command"])
    out = tmp_path / "grafana"
    cmd[cmd.index("--out") + 1] = str(out)
    cmd[cmd.index("--registry") + 1] = str(ROOT / "tests" / "data" / "registry")
    env = {
        k: v for k, v in svcs["dashboards"]["environment"].items() if k != "GREENMON_RUNTIME_DIR"
    }
    res = subprocess.run(
        [str(VENV_BIN / "greenmon"), *cmd, "--runtime-dir", str(tmp_path / "rt")],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", **env},
        check=False,
    )
    assert res.returncode == 0, res.stderr
    refs = set()
    for path in out.rglob("*"):
        if path.is_file():
            refs |= set(re.findall(r"\$__env\{(\w+)\}", path.read_text()))
    assert refs >= {"GREENMON_INFLUX_URL", "GREENMON_INFLUX_PASSWORD"}
    grafana_env = svcs["grafana"]["environment"]
    assert refs <= set(grafana_env), refs - set(grafana_env)
    assert grafana_env["GREENMON_INFLUX_USERNAME"] == "grafana"  # the read-only login


# -- Dockerfile --------------------------------------------------------------------------------
def _copies() -> list[tuple[str, str]]:
    """(source, destination) of every COPY from the build context."""
    out = []
    for m in re.finditer(r"^COPY (?!--from)(.+)$", (PROD / "Dockerfile").read_text(), re.M):
        *sources, dest = m.group(1).split()
        out += [(s, dest if len(sources) == 1 else f"{dest.rstrip('/')}/{s}") for s in sources]
    return out


def test_dockerfile_passes_hadolint() -> None:
    res = subprocess.run(
        [_tool("hadolint"), "--no-color", "--failure-threshold", "info", "Dockerfile"],
        cwd=PROD,
        capture_output=True,
        text=True,
        check=False,
    )
    assert res.returncode == 0, res.stdout + res.stderr


def test_the_image_gets_every_package_and_its_settings_are_real(tmp_path: Path) -> None:
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    package_dirs = set(project["tool"]["setuptools"]["package-dir"].values())
    sources = {src for src, _ in _copies()}
    missing = {d for d in package_dirs if not any(d == s or d.startswith(s + "/") for s in sources)}
    assert not missing, f"not copied into the image: {missing}"
    ignore = (PROD / "Dockerfile.dockerignore").read_text().split()
    for src in sources:
        assert (ROOT / src).exists(), src
        assert f"!{src}" in ignore, f"{src} is excluded from the build context"
    text = (PROD / "Dockerfile").read_text()
    known = settings_env_names()
    for key in re.findall(r"\b(GREENMON_\w+)=", text):
        assert key in known, key
    assert re.search(r"^USER \d+:\d+$", text, re.M), "run as a numeric, unprivileged user"
    # The build stage, with exactly what it copies: the wheel holds every package and its data.
    for src, dest in _copies():
        target = tmp_path / "src" / dest
        if (ROOT / src).is_dir():
            shutil.copytree(
                ROOT / src, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
            )
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(ROOT / src, target)
    res = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "--wheel-dir", str(tmp_path / "wheels"), str(tmp_path / "src")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    (wheel,) = (tmp_path / "wheels").glob("greenmon-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for package in project["tool"]["setuptools"]["packages"]:
        folder = package.replace(".", "/")
        if package.endswith((".data", ".templates")):  # a folder of data files, no code
            assert any(name.startswith(folder + "/") for name in names), package
        else:
            assert folder + "/__init__.py" in names, package
    assert "greenmon/deploy/templates/mosquitto.conf" in names
    assert "greenmon/health.py" in names


def test_shell_scripts_pass_shellcheck() -> None:
    scripts = [PROD / "influxdb" / "setup.sh", PROD / "mosquitto" / "install-files.sh"]
    res = subprocess.run(
        [_tool("shellcheck"), *map(str, scripts)], capture_output=True, text=True, check=False
    )
    assert res.returncode == 0, res.stdout


# -- systemd units -----------------------------------------------------------------------------
HARDENING = {
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "NoNewPrivileges": "yes",
    "CapabilityBoundingSet": "",
    "RestrictSUIDSGID": "yes",
    "MemoryDenyWriteExecute": "yes",
    "LockPersonality": "yes",
}


def test_units_run_real_greenmon_commands_with_real_settings() -> None:
    assert {p.name for p in UNITS} == {
        "greenmon-ingest@.service",
        "greenmon-aggregate.service",
        "greenmon-alerts.service",
    }
    known = settings_env_names()
    example = read_env_file(PROD / "systemd" / "greenmon.env.example")
    assert set(example) <= known, set(example) - known
    assert [k for k, v in example.items() if v == ""] == ["GREENMON_INFLUX_PASSWORD"]
    for unit in units():
        argv = unit.exec_start()
        assert argv[0] == GREENMON_BIN, unit.path.name
        contexts = parse_greenmon(argv[1:])
        assert len(contexts) >= 2
        env = unit.environment()
        greenmon_keys = {k for k in env if k.startswith("GREENMON_")}
        assert greenmon_keys <= known, greenmon_keys - known
        # MemoryDenyWriteExecute=yes and Polars' CPU check exclude each other
        # (tests/deploy/test_production_run.py runs greenmon under that rule).
        assert set(env) - greenmon_keys == {"POLARS_SKIP_CPU_CHECK"}
        for f in unit.values("Service", "EnvironmentFile"):
            assert f.lstrip("-").startswith("/etc/greenmon/"), f
        state = unit.value("Service", "StateDirectory")
        assert state, f"{unit.path.name}: no StateDirectory"
        assert env["GREENMON_RUNTIME_DIR"] == f"/var/lib/{state}", "runtime dir = state dir"
        assert unit.value("Service", "ExecReload") == "/bin/kill -HUP $MAINPID"
        assert unit.value("Service", "Restart") == "on-failure"
        assert unit.value("Service", "RestartPreventExitStatus") == "2"  # ConfigError's code
        user = unit.value("Service", "User")
        assert user and user != "root"
        for key, value in HARDENING.items():
            assert unit.value("Service", key) == value, f"{unit.path.name}: {key}={value}"
        assert not unit.values("Service", "ReadWritePaths"), "only the state dir is writable"


def test_the_exit_status_units_treat_as_misconfiguration_is_configerrors() -> None:
    res = subprocess.run(
        [str(VENV_BIN / "greenmon"), "aggregate", "--follow", "--influx-url", "ftp://x"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert res.returncode == 2, res.stderr


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze not installed")
def test_units_verify_and_are_hardened_by_systemds_own_measure(tmp_path: Path) -> None:
    copies = []
    for path in UNITS:
        target = tmp_path / path.name
        # verify checks that ExecStart's program exists: point it at this venv's greenmon.
        target.write_text(path.read_text().replace(GREENMON_BIN, str(VENV_BIN / "greenmon")))
        copies.append(target)
    res = subprocess.run(
        ["systemd-analyze", "verify", *map(str, copies)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert res.returncode == 0 and not res.stderr.strip(), res.stderr
    for target in copies:
        # Exposure 0 (best) .. 10; systemd calls up to 2.0 "OK".
        res = subprocess.run(
            ["systemd-analyze", "security", "--offline=true", "--threshold=20", str(target)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert res.returncode == 0, res.stdout[-2000:] + res.stderr
        level = re.search(r"Overall exposure level for \S+: ([\d.]+)", res.stdout)
        assert level and float(level.group(1)) <= 2.0, res.stdout[-500:]


def test_docs_say_the_files_were_not_run_here() -> None:
    readme = (PROD / "README.md").read_text()
    assert "not run here" in readme.lower() or "were not run" in readme.lower()
