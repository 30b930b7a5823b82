"""A stand-in for InfluxDB 2.x's `influx` CLI, for the commands `deploy/production/influxdb/
setup.sh` uses (InfluxDB 2.x and its CLI cannot be installed on the development machines).

It keeps its state in the JSON file `$FAKE_INFLUX_STATE`, refuses any flag the CLI's
documentation does not list for a subcommand, needs INFLUX_HOST/INFLUX_TOKEN/INFLUX_ORG like
the real one, prints tables (tab-separated, `--hide-headers` drops the header line) and fails
with "Error: ..." and exit status 1 where the real one does (a bucket that does not exist, a
name or mapping that exists already). Every call is appended to the state's "calls" list.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import Any

# Flags per subcommand, from the influx CLI 2.7 reference (global flags aside).
FLAGS = {
    ("bucket", "list"): {"--name", "-n", "--id", "-i", "--hide-headers", "--json"},
    ("bucket", "create"): {
        "--name", "-n", "--retention", "-r", "--description", "-d", "--shard-group-duration",
        "--hide-headers", "--json",
    },
    ("v1", "dbrp", "list"): {
        "--db", "--rp", "--bucket-id", "--default", "--id", "--hide-headers", "--json",
    },
    ("v1", "dbrp", "create"): {
        "--db", "--rp", "--bucket-id", "--default", "--hide-headers", "--json",
    },
    ("v1", "auth", "list"): {
        "--username", "--id", "-i", "--user", "-u", "--user-id", "--hide-headers", "--json",
    },
    ("v1", "auth", "create"): {
        "--username", "--password", "--no-password", "--description", "-d", "--read-bucket",
        "--write-bucket", "--hide-headers", "--json",
    },
    ("v1", "auth", "set-password"): {"--username", "--id", "-i", "--password"},
}  # fmt: skip
BOOLEAN = {"--hide-headers", "--json", "--default", "--no-password"}
REPEATABLE = {"--read-bucket", "--write-bucket"}
DURATION = re.compile(r"^(0|(\d+(ns|us|µs|ms|s|m|h|d|w))+)$")


def fail(message: str) -> None:
    sys.stderr.write(f"Error: {message}\n")
    sys.exit(1)


def parse(command: tuple[str, ...], argv: list[str]) -> dict[str, Any]:
    allowed = FLAGS.get(command)
    if allowed is None:
        fail(f"unknown command {' '.join(command)}")
    assert allowed is not None
    opts: dict[str, Any] = {}
    i = 0
    while i < len(argv):
        flag = argv[i]
        if flag not in allowed:
            fail(f"unknown flag: {flag}")
        if flag in BOOLEAN:
            opts[flag] = True
            i += 1
            continue
        if i + 1 >= len(argv):
            fail(f"flag needs an argument: {flag}")
        value = argv[i + 1]
        if flag in REPEATABLE:
            opts.setdefault(flag, []).append(value)
        else:
            opts[flag] = value
        i += 2
    return opts


def table(header: list[str], rows: list[list[str]], hide: bool) -> None:
    lines = [] if hide else ["\t".join(header)]
    lines += ["\t".join(r) for r in rows]
    if lines:
        sys.stdout.write("\n".join(lines) + "\n")


def main() -> None:
    for var in ("INFLUX_HOST", "INFLUX_TOKEN", "INFLUX_ORG"):
        if not os.environ.get(var):
            fail(f"{var} is not set")
    path = Path(os.environ["FAKE_INFLUX_STATE"])
    state = json.loads(path.read_text())
    args = sys.argv[1:]
    n = 3 if args[:1] == ["v1"] else 2
    command, opts = tuple(args[:n]), parse(tuple(args[:n]), args[n:])
    state["calls"].append(args)
    hide = bool(opts.get("--hide-headers"))
    buckets, dbrps, auths = state["buckets"], state["dbrps"], state["auths"]
    header = ["ID", "Name", "Retention", "Shard group duration", "Organization ID", "Schema Type"]

    def row(b: dict[str, str]) -> list[str]:
        return [b["id"], b["name"], b["retention"], "168h0m0s", "0123456789abcdef", "implicit"]

    if command == ("bucket", "list"):
        found = [b for b in buckets if opts.get("--name") in (None, b["name"])]
        if "--name" in opts and not found:
            fail(f'bucket "{opts["--name"]}" not found')
        table(header, [row(b) for b in found], hide)
    elif command == ("bucket", "create"):
        name = opts.get("--name") or fail("name is required")
        retention = opts.get("--retention", "0")
        if not DURATION.match(retention):
            fail(f'invalid duration "{retention}"')
        if any(b["name"] == name for b in buckets):
            fail(f"bucket with name {name} already exists")
        bucket = {"id": f"{len(buckets) + 1:016x}", "name": name, "retention": retention}
        buckets.append(bucket)
        table(header, [row(bucket)], hide)
    elif command == ("v1", "dbrp", "list"):
        found = [d for d in dbrps if all(opts.get(f"--{k}") in (None, d[k]) for k in ("db", "rp"))]
        table(
            ["ID", "Database", "Bucket ID", "Retention Policy", "Default", "Organization ID"],
            [[d["id"], d["db"], d["bucket_id"], d["rp"], str(d["default"]).lower(), "org"]
             for d in found],
            hide,
        )  # fmt: skip
    elif command == ("v1", "dbrp", "create"):
        if not all(k in opts for k in ("--db", "--rp", "--bucket-id")):
            fail("--db, --rp and --bucket-id are required")
        if not any(b["id"] == opts["--bucket-id"] for b in buckets):
            fail(f"bucket {opts['--bucket-id']} not found")
        if any(d["db"] == opts["--db"] and d["rp"] == opts["--rp"] for d in dbrps):
            fail("dbrp already exists")
        dbrps.append({
            "id": f"d{len(dbrps)}", "db": opts["--db"], "rp": opts["--rp"],
            "bucket_id": opts["--bucket-id"], "default": bool(opts.get("--default")),
        })  # fmt: skip
    elif command == ("v1", "auth", "list"):
        found = [a for a in auths if opts.get("--username") in (None, a["username"])]
        table(
            ["ID", "Description", "Username", "v2 User Name", "v2 User ID", "Permissions"],
            [[a["id"], a["description"], a["username"], "admin", "u", str(a["permissions"])]
             for a in found],
            hide,
        )  # fmt: skip
    elif command == ("v1", "auth", "create"):
        name = opts.get("--username") or fail("--username is required")
        if any(a["username"] == name for a in auths):
            fail(f"authorization with username {name!r} already exists")
        perms = []
        for flag, action in (("--read-bucket", "read"), ("--write-bucket", "write")):
            for bid in opts.get(flag, []):
                if not any(b["id"] == bid for b in buckets):
                    fail(f"bucket {bid} not found")
                perms.append(f"{action}:{bid}")
        auths.append({
            "id": f"a{len(auths)}", "username": name, "password": opts.get("--password"),
            "description": opts.get("--description", ""), "permissions": sorted(perms),
        })  # fmt: skip
    elif command == ("v1", "auth", "set-password"):
        found = [a for a in auths if a["username"] == opts.get("--username")]
        if not found:
            fail("authorization not found")
        found[0]["password"] = opts.get("--password")
    path.write_text(json.dumps(state))


if __name__ == "__main__":
    main()
