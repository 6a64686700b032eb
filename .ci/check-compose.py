#!/usr/bin/env python3
"""Checks docker-compose.yml where no Docker engine can run it.

Usage: check-compose.py HASHBUY_BINARY [COMPOSE_FILE]

COMPOSE_FILE defaults to the repository's docker-compose.yml; another file
(a broken copy, say) is checked as if it stood in its place: the paths it
names are looked up in the repository.

Some of what a `docker compose up` would trip on, checked statically:

- the file validates against the Compose Specification's JSON schema,
  vendored in .ci/compose-spec/ (its README says which version), under the
  draft the schema declares; each error is printed with its JSON path, and
  the checks below, which assume a well-formed file, run only once it
  validates;
- the file uses only the keys this file is meant to use (a
  key outside that small set is flagged, valid or not, so a typo fails
  here rather than at `docker compose up`);
- every `depends_on` names a service, with a valid condition, and
  `service_healthy` only on a service that has a healthcheck;
- named volumes are declared, bind-mounted files exist, published host
  ports are not used twice;
- the Dockerfile's COPY sources exist;
- every command line given to the hashbuy image gets past the binary's
  argument parser: it is run with `--help` appended, which clap reaches
  only after accepting every argument before it (an unknown flag or a bad
  value fails; a missing required argument does not);
- files the commands name under /samples exist in samples/ (the Dockerfile
  copies it there);
- the hosts hashbuy is told to reach (`HASHBUY_BROKERS`, `--brokers`,
  `--provider-url`) are services, and what it serves (`--host`,
  `--metrics-addr`) listens beyond the container's loopback;
- every Prometheus target is a service serving --metrics-addr on that port.

Exits non-zero with one line per problem.
"""

import json
import os
import subprocess
import sys

import jsonschema
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCHEMA = os.path.join(ROOT, ".ci", "compose-spec", "compose-spec.json")
TOP_KEYS = {"name", "services", "volumes"}
SERVICE_KEYS = {
    "image", "build", "command", "entrypoint", "environment", "ports",
    "volumes", "depends_on", "restart", "healthcheck", "profiles",
}
CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}
RESTARTS = {"no", "always", "on-failure", "unless-stopped"}


def dockerfile(context):
    """The Dockerfile's ENTRYPOINT (as a list) and its COPY sources."""
    entrypoint, sources = None, []
    with open(os.path.join(context, "Dockerfile")) as f:
        for line in f:
            words = line.split()
            if not words or words[0].startswith("#"):
                continue
            if words[0] == "ENTRYPOINT":
                entrypoint = yaml.safe_load(line.split(None, 1)[1])
            if words[0] == "COPY" and not any(w.startswith("--from") for w in words):
                sources += [w for w in words[1:-1] if not w.startswith("--")]
    return entrypoint, sources


def schema_errors(compose):
    """The compose file's errors against the vendored Compose Specification
    schema, as (JSON path, message) pairs in path order."""
    with open(SCHEMA) as f:
        schema = json.load(f)
    # The schema declares draft 7 as https://json-schema.org/draft-07/schema,
    # which jsonschema knows only as http://json-schema.org/draft-07/schema#:
    # left to itself it would warn and validate under its latest draft.
    declared = schema.get("$schema", "")
    canonical = "http://" + declared.split("://", 1)[-1].rstrip("#") + "#"
    for uri in (declared, canonical):
        validator = jsonschema.validators.validator_for({"$schema": uri}, default=None)
        if validator is not None:
            break
    else:
        sys.exit(f"{SCHEMA}: $schema {declared!r} is not a draft jsonschema knows")
    validator.check_schema(schema)
    errors = []
    for error in validator(schema).iter_errors(compose):
        errors += [(e.json_path, message) for e, message in explained(error)]
    return sorted(errors)


def explained(error):
    """An error as the (error, message) pairs worth printing. Where no branch
    of a oneOf/anyOf matched, the errors inside the branches meant for the
    value's type: `depends_on` given a mapping fails its list branch on the
    type alone, and what matters is why the mapping branch failed. A value
    no branch takes by type is reported as such."""
    if not error.context:
        return [(error, error.message)]
    mistyped = {
        e.schema_path[0] for e in error.context if e.validator == "type" and not e.relative_path
    }
    fitting = [e for e in error.context if e.schema_path[0] not in mistyped]
    if fitting:
        return [pair for e in fitting for pair in explained(e)]
    types = []
    for e in error.context:
        if e.validator == "type":
            value = e.validator_value
            types += value if isinstance(value, list) else [value]
    return [(error, f"{error.instance!r} is not of type {' or '.join(map(repr, types))}")]


def main():
    binary = sys.argv[1]
    path = sys.argv[2] if len(sys.argv) > 2 else os.path.join(ROOT, "docker-compose.yml")
    label = sys.argv[2] if len(sys.argv) > 2 else "docker-compose.yml"
    with open(path) as f:
        compose = yaml.safe_load(f)
    problems = []

    def problem(where, what):
        problems.append(f"{label}: {where}: {what}")

    errors = schema_errors(compose)
    for where, what in errors:
        problem(where, what)
    if errors:
        print("\n".join(problems))
        print(f"{label}: does not match the Compose Specification schema; other checks not run")
        sys.exit(1)

    for key in compose:
        if key not in TOP_KEYS and not key.startswith("x-"):
            problem(key, "unexpected top-level key")
    services = compose.get("services") or {}
    volumes = compose.get("volumes") or {}
    host_ports = {}

    for name, service in services.items():
        where = f"services.{name}"
        for key in service:
            if key not in SERVICE_KEYS:
                problem(where, f"unexpected key {key!r}")
        if "image" not in service and "build" not in service:
            problem(where, "neither image nor build")
        restart = service.get("restart", "no")
        # YAML reads an unquoted `no` as false.
        if restart is not False and str(restart) not in RESTARTS:
            problem(where, f"restart {restart!r} is not one of {sorted(RESTARTS)}")

        depends = service.get("depends_on") or {}
        if isinstance(depends, list):
            depends = {d: {"condition": "service_started"} for d in depends}
        for target, how in depends.items():
            if target not in services:
                problem(where, f"depends on {target!r}, which is not a service")
                continue
            condition = (how or {}).get("condition", "service_started")
            if condition not in CONDITIONS:
                problem(where, f"depends_on {target}: condition {condition!r} is not one of {sorted(CONDITIONS)}")
            if condition == "service_healthy" and "healthcheck" not in services[target]:
                problem(where, f"waits for {target} to be healthy, which has no healthcheck")

        for mount in service.get("volumes") or []:
            source = mount.split(":")[0]
            if source.startswith((".", "/")):
                if not os.path.exists(os.path.join(ROOT, source)):
                    problem(where, f"bind mount {source} does not exist")
            elif source not in volumes:
                problem(where, f"volume {source!r} is not declared under volumes")

        for port in service.get("ports") or []:
            # [ip:]host:container; what the host publishes is all but the last.
            host = str(port).rsplit(":", 1)[0]
            if host in host_ports:
                problem(where, f"host port {host} is also published by {host_ports[host]}")
            host_ports[host] = name

        if "build" not in service:
            continue
        context = os.path.join(ROOT, service["build"])
        entrypoint, sources = dockerfile(context)
        for source in sources:
            if not os.path.exists(os.path.join(context, source)):
                problem(f"{where} Dockerfile", f"COPY source {source} does not exist")
        argv = list(service.get("entrypoint") or entrypoint or [])
        argv += [str(a) for a in service.get("command") or []]
        if not argv or argv[0] != "hashbuy":
            problem(where, f"runs {argv[:1]}, not hashbuy")
            continue
        for arg in argv:
            if arg.startswith("/samples/") and not os.path.exists(
                os.path.join(ROOT, "samples", arg[len("/samples/"):])
            ):
                problem(where, f"{arg} is not in samples/")
        environment = service.get("environment") or {}
        reached = [str(environment.get("HASHBUY_BROKERS", ""))]
        served = []
        for flag, value in zip(argv, argv[1:]):
            if flag == "--brokers":
                reached.append(value)
            if flag == "--provider-url":
                reached.append(value.split("://", 1)[-1])
            if flag in ("--host", "--metrics-addr"):
                served.append(value)
        for address in filter(None, ",".join(reached).split(",")):
            host = address.split("/")[0].rsplit(":", 1)[0]
            if host not in services:
                problem(where, f"reaches {address}, and {host!r} is not a service")
        for address in served:
            if address.startswith(("127.", "localhost", "[::1]", "::1")):
                problem(where, f"serves on {address}: other containers cannot reach it")
        run = subprocess.run(
            [binary, *argv[1:], "--help"], capture_output=True, text=True
        )
        if run.returncode != 0:
            first = (run.stderr.strip().splitlines() or ["(no message)"])[0]
            problem(where, f"`{' '.join(argv)}` does not parse: {first}")

    prometheus = os.path.join(ROOT, "deploy", "prometheus.yml")
    with open(prometheus) as f:
        scrape = yaml.safe_load(f)
    for job in scrape.get("scrape_configs") or []:
        for config in job.get("static_configs") or []:
            for target in config.get("targets") or []:
                host, _, port = target.partition(":")
                command = [str(a) for a in (services.get(host) or {}).get("command") or []]
                addrs = [command[i + 1] for i, a in enumerate(command[:-1]) if a == "--metrics-addr"]
                if not any(addr.endswith(f":{port}") for addr in addrs):
                    problems.append(
                        f"deploy/prometheus.yml: target {target} is not a service serving --metrics-addr on port {port}"
                    )

    for line in problems:
        print(line)
    if problems:
        sys.exit(1)
    print(f"{label}: valid against the Compose Specification schema; {len(services)} services checked")


if __name__ == "__main__":
    main()
