"""The deployment files (Dockerfile, docker-compose.yml, .env.example, deploy/) agree with the bridge.

Names, ports, paths and timings are read from the files and checked against the code they configure,
so renaming a setting or a route without updating the deployment fails here rather than in production.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from bridge.config import Settings, load_settings
from bridge.media_stream import HEARTBEAT_S
from bridge.metrics import ACTIVE_CALLS, BridgeMetrics
from bridge.server import create_app
from bridge.supervisor import STRAGGLER_GRACE_S

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"

SETTING_NAMES = frozenset(name.upper() for name in Settings.model_fields)
SECRETS = ("OPENAI_API_KEY", "TWILIO_AUTH_TOKEN", "ADMIN_TOKEN", "CLUSTER_SECRET")


# ---- readers ----------------------------------------------------------------------------------------


REPLICAS_COMPOSE = "docker-compose.replicas.yml"  # several replicas behind HAProxy


def compose(name: str = "docker-compose.yml") -> dict[str, Any]:
    return yaml.safe_load((ROOT / name).read_text())


def bridge_service(name: str = "docker-compose.yml") -> dict[str, Any]:
    return compose(name)["services"]["bridge"]


def compose_env(name: str = "docker-compose.yml") -> dict[str, str]:
    env = bridge_service(name).get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: str(value) for key, value in env.items()}


def env_example() -> dict[str, str | None]:
    """Every NAME in .env.example: its value if set (`NAME=value`), None if only shown (`# NAME=value`)."""
    names: dict[str, str | None] = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        match = re.fullmatch(r"(#\s*)?([A-Z][A-Z0-9_]*)=(.*)", line.strip())
        if match:
            commented, name, value = match.groups()
            if commented is None or name not in names:
                names[name] = None if commented else value
    return names


def k8s() -> dict[str, dict[str, Any]]:
    docs: dict[str, dict[str, Any]] = {}
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                docs[doc["kind"]] = doc
    return docs


def container() -> dict[str, Any]:
    return k8s()["Deployment"]["spec"]["template"]["spec"]["containers"][0]


def k8s_env() -> dict[str, str]:
    docs = k8s()
    env = {key: str(value) for key, value in docs["ConfigMap"]["data"].items()}
    env |= {key: str(value) for key, value in docs["Secret"]["stringData"].items()}
    env |= {item["name"]: str(item.get("value", "")) for item in container().get("env", [])}
    return env


def dockerfile() -> list[list[tuple[str, str]]]:
    """Stages, each a list of (INSTRUCTION, arguments), continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", (DEPLOY / "Dockerfile").read_text())
    stages: list[list[tuple[str, str]]] = []
    global_args: dict[str, str] = {}  # ARGs before the first FROM: usable in FROM lines
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, args = line.partition(" ")
        instruction, args = instruction.upper(), args.strip()
        if instruction == "ARG" and not stages:
            name, _, default = args.partition("=")
            global_args[name] = default
            continue
        if instruction == "FROM":
            args = re.sub(r"\$\{(\w+)\}", lambda m: global_args.get(m[1], ""), args)
            stages.append([])
        stages[-1].append((instruction, args))
    return stages


def instructions(stage: list[tuple[str, str]], name: str) -> list[str]:
    return [args for instruction, args in stage if instruction == name]


def seconds(duration: str | int) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m|h)?", str(duration))
    assert match, f"not a duration: {duration!r}"
    value, unit = float(match[1]), match[2] or "s"
    return value * {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}[unit]


def drain_seconds() -> float:
    return float(Settings.model_fields["drain_seconds"].default)


def default_port() -> int:
    return int(Settings.model_fields["port"].default)


# ---- settings names ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("where", "names"),
    [
        ("docker-compose.yml (bridge)", lambda: set(compose_env())),
        (f"{REPLICAS_COMPOSE} (bridge)", lambda: set(compose_env(REPLICAS_COMPOSE))),
        (".env.example", lambda: set(env_example())),
        ("deploy/k8s", lambda: set(k8s_env())),
    ],
)
def test_every_env_name_is_a_setting(where: str, names: Any) -> None:
    # Settings ignores unknown variables, so a misspelt name would silently do nothing.
    unknown = sorted(names() - SETTING_NAMES)
    assert not unknown, f"{where} sets variables the bridge does not read: {unknown}"


def test_env_example_documents_every_setting() -> None:
    missing = sorted(SETTING_NAMES - set(env_example()))
    assert not missing, f".env.example does not mention: {missing}"


def test_env_example_leaves_secrets_blank() -> None:
    example = env_example()
    for name in SECRETS:
        assert example.get(name, "") in ("", None), f"{name} must be blank in .env.example"


def test_env_example_values_it_sets_are_valid() -> None:
    # Uncommented lines are what `cp .env.example .env` starts with: they must load as they are.
    load_settings({name: value for name, value in env_example().items() if value is not None})


def test_env_example_shows_the_defaults() -> None:
    # "A commented line shows the default": true for every setting that has a non-empty default
    # (settings without one are shown with an example value instead).
    shown = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        match = re.fullmatch(r"#\s*([A-Z][A-Z0-9_]*)=(.*)", line.strip())
        if match:
            shown.setdefault(match[1], match[2])
    for name, field in Settings.model_fields.items():
        if field.default in (None, "") or name.upper() not in shown:
            continue
        value = getattr(load_settings({name.upper(): shown[name.upper()]}), name)
        assert value == field.default, f"{name.upper()}: .env.example shows {shown[name.upper()]!r}"


def test_k8s_config_values_are_valid() -> None:
    # The Secret is a template with blank values; the real one fills them.
    env = {k: v or f"placeholder-{k.lower()}" for k, v in k8s_env().items()}
    settings = load_settings(env)
    assert settings.port == default_port()
    assert settings.bridge_env == "production"
    assert settings.call_log_url.startswith("postgresql+asyncpg://")


def test_secrets_are_only_in_the_secret() -> None:
    config_map = k8s()["ConfigMap"]["data"]
    for name in (*SECRETS, "CALL_LOG_URL"):
        assert name not in config_map, f"{name} belongs in the Secret, not the ConfigMap"


# ---- ports and probes -------------------------------------------------------------------------------


def test_ports_match_the_default_port() -> None:
    port = default_port()
    assert port == 8080
    assert compose_env().get("PORT", str(port)) == str(port)
    assert f"{port}:{port}" in [str(p) for p in bridge_service()["ports"]]
    final = dockerfile()[-1]
    assert instructions(final, "EXPOSE") == [str(port)]
    ports = {p["name"]: p["containerPort"] for p in container()["ports"]}
    assert ports["http"] == port
    assert k8s_env().get("PORT", str(port)) == str(port)
    service_ports = {p["name"]: p["targetPort"] for p in k8s()["Service"]["spec"]["ports"]}
    assert service_ports["http"] == "http"


def test_metrics_port_is_the_same_everywhere() -> None:
    port = compose_env()["METRICS_PORT"]
    assert k8s_env()["METRICS_PORT"] == port
    prometheus = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    targets = [t for job in prometheus["scrape_configs"] for c in job["static_configs"] for t in c["targets"]]
    assert targets == [f"bridge:{port}"]
    assert {p["name"]: p["containerPort"] for p in container()["ports"]}["metrics"] == int(port)
    template = k8s()["Deployment"]["spec"]["template"]["metadata"]["annotations"]
    assert template["prometheus.io/port"] == port
    assert template["prometheus.io/path"] == "/metrics"


def test_probes_use_the_health_routes() -> None:
    spec = container()
    assert spec["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert spec["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert spec["readinessProbe"]["httpGet"]["port"] == spec["livenessProbe"]["httpGet"]["port"] == "http"
    healthcheck = instructions(dockerfile()[-1], "HEALTHCHECK")
    assert len(healthcheck) == 1 and "/healthz" in healthcheck[0]


def test_the_kill_comes_after_the_whole_stop_budget() -> None:
    # SIGTERM to exit takes at most the stop budget (bridge.stop_budget), with WORKERS the supervisor
    # kills a straggler STRAGGLER_GRACE_S after it: the orchestrator's kill must come later still.
    secrets = {k: v or f"placeholder-{k.lower()}" for k, v in k8s_env().items()}
    for where, grace, env in (
        (
            "deploy/k8s terminationGracePeriodSeconds",
            float(k8s()["Deployment"]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]),
            secrets,
        ),
        (
            "docker-compose.yml stop_grace_period",
            seconds(bridge_service()["stop_grace_period"]),
            compose_env(),
        ),
        ("docker-compose.yml .env defaults", seconds(bridge_service()["stop_grace_period"]), {}),
        (
            f"{REPLICAS_COMPOSE} stop_grace_period",
            seconds(bridge_service(REPLICAS_COMPOSE)["stop_grace_period"]),
            {k: v for k, v in compose_env(REPLICAS_COMPOSE).items() if "${" not in v},
        ),
    ):
        budget = load_settings(env).shutdown_budget
        assert budget >= drain_seconds()
        assert grace > budget + STRAGGLER_GRACE_S, (
            f"{where} ({grace:g} s) must exceed the stop budget ({budget:g} s)"
        )


def test_the_internal_port_is_reached_by_the_bridges_pods_alone() -> None:
    # Control requests are forwarded pod to pod at http://POD_IP:INTERNAL_PORT: the container
    # declares it, no Service or Ingress routes to it, and the NetworkPolicy admits only bridge pods.
    internal = int(k8s_env()["INTERNAL_PORT"])
    assert internal != default_port()
    assert {p["name"]: p["containerPort"] for p in container()["ports"]}["internal"] == internal
    assert "POD_IP" in {item["name"] for item in container()["env"]}
    docs = k8s()
    assert "internal" not in {p["targetPort"] for p in docs["Service"]["spec"]["ports"]}
    backends = [
        path["backend"]["service"]["port"]["name"]
        for rule in docs["Ingress"]["spec"]["rules"]
        for path in rule["http"]["paths"]
    ]
    assert backends and set(backends) == {"http"}
    policy = docs["NetworkPolicy"]["spec"]
    pods = docs["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert policy["podSelector"]["matchLabels"].items() <= pods.items()
    for rule in policy["ingress"]:
        ports = {p["port"] for p in rule["ports"]}
        if "internal" in ports:
            assert ports == {"internal"}
            assert [source["podSelector"]["matchLabels"] for source in rule["from"]] == [pods]
        else:
            assert "from" not in rule  # PORT and the metrics port stay open as before
    assert sum("internal" in {p["port"] for p in rule["ports"]} for rule in policy["ingress"]) == 1


def test_compose_replicas_sit_behind_haproxy_and_share_postgresql() -> None:
    services = compose(REPLICAS_COMPOSE)["services"]
    bridge, env = services["bridge"], compose_env(REPLICAS_COMPOSE)
    assert bridge["deploy"]["replicas"] > 1 and "ports" not in bridge  # reached through HAProxy only
    assert env["CALL_LOG_URL"] == compose_env()["CALL_LOG_URL"]
    assert bridge["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert env["ADMIN_TOKEN"].startswith("${ADMIN_TOKEN:?")  # one token for every replica, or no start
    assert env["INTERNAL_PORT"] != env["PORT"] and env["INTERNAL_PORT"] in bridge["expose"]
    assert services["haproxy"]["ports"] == [f"{env['PORT']}:{env['PORT']}"]
    assert (
        "./deploy/haproxy/haproxy.cfg:/usr/local/etc/haproxy/haproxy.cfg:ro" in services["haproxy"]["volumes"]
    )


def test_haproxy_keeps_calls_and_follows_readiness() -> None:
    config = (DEPLOY / "haproxy" / "haproxy.cfg").read_text()
    lines = [line.split("#")[0].strip() for line in config.splitlines()]
    # Silence on a tunnelled websocket: longer than the bridge's heartbeat, which finds a dead stream.
    tunnel = next(line for line in lines if line.startswith("timeout tunnel"))
    assert seconds(tunnel.split()[-1]) > HEARTBEAT_S
    assert "balance roundrobin" in lines
    assert "option httpchk GET /readyz" in lines and "http-check expect status 200" in lines
    assert "shutdown-sessions" not in config  # a replica marked down (draining) keeps its calls
    port = compose_env(REPLICAS_COMPOSE)["PORT"]
    assert f"bind :{port}" in lines
    assert any(
        line.startswith("server-template bridge ") and f"bridge:{port} check" in line for line in lines
    )


def test_compose_waits_for_a_healthy_database() -> None:
    services = compose()["services"]
    assert bridge_service()["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])
    assert compose_env()["CALL_LOG_URL"] == "postgresql+asyncpg://bridge:bridge@postgres:5432/bridge"
    assert bridge_service()["build"]["dockerfile"] == "deploy/Dockerfile"


def test_hpa_scales_on_the_active_calls_gauge() -> None:
    metrics = k8s()["HorizontalPodAutoscaler"]["spec"]["metrics"]
    assert [m["pods"]["metric"]["name"] for m in metrics if m["type"] == "Pods"] == [ACTIVE_CALLS]
    from prometheus_client import generate_latest

    assert f"\n{ACTIVE_CALLS} " in generate_latest(BridgeMetrics().registry).decode()


# ---- the image ---------------------------------------------------------------------------------------


def test_dockerfile_builds_a_venv_and_runs_the_console_script_as_non_root() -> None:
    stages = dockerfile()
    assert len(stages) >= 2, "multi-stage: build in one stage, run from another"
    builder, final = stages[0], stages[-1]
    assert any(re.search(r"\bpip install\b.*(\s|^)\.(\s|$)", run) for run in instructions(builder, "RUN"))
    assert any("--from=builder" in copy for copy in instructions(final, "COPY"))
    for stage in stages:
        assert instructions(stage, "FROM")[0].split()[0] == "python:3.12-slim"

    users = instructions(final, "USER")
    assert users, "the runtime stage must switch to a non-root user"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0")

    cmd = json.loads(instructions(final, "CMD")[-1])
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert cmd[0] in scripts and scripts[cmd[0]] == "bridge.cli:main"
    assert cmd == ["bridge", "serve"]
    assert container().get("args", cmd) == cmd


# ---- the routes the probes call ----------------------------------------------------------------------


def app_settings(tmp_path: Path) -> Settings:
    return load_settings(
        {
            # A key and a non-OpenAI URL: no in-process demo emulator, nothing dialled at start-up.
            "OPENAI_API_KEY": "sk-test",
            "REALTIME_URL": "ws://127.0.0.1:9/v1/realtime",
            "CALL_LOG_URL": f"sqlite+aiosqlite:///{tmp_path}/calls.db",
            "ADMIN_TOKEN": "test-admin-token",
        }
    )


async def test_app_serves_the_probe_routes(tmp_path: Path) -> None:
    async with TestClient(TestServer(create_app(app_settings(tmp_path)))) as client:
        health = await client.get(container()["livenessProbe"]["httpGet"]["path"])
        assert health.status == 200
        ready = await client.get(container()["readinessProbe"]["httpGet"]["path"])
        assert ready.status == 200


async def test_dockerfile_healthcheck_command_passes_against_the_app(tmp_path: Path) -> None:
    healthcheck = instructions(dockerfile()[-1], "HEALTHCHECK")[0]
    command = json.loads(healthcheck[healthcheck.index("CMD") + 3 :])
    assert command[0] == "python"
    runner = web.AppRunner(create_app(app_settings(tmp_path)), access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        ok = await asyncio.create_subprocess_exec(
            sys.executable, *command[1:], env={**os.environ, "PORT": str(port)}
        )
        assert await asyncio.wait_for(ok.wait(), 10) == 0
        # And it fails when nothing answers, or the check would be worthless.
        await site.stop()
        env = {**os.environ, "PORT": str(port)}
        dead = await asyncio.create_subprocess_exec(
            sys.executable, *command[1:], env=env, stderr=asyncio.subprocess.DEVNULL
        )
        assert await asyncio.wait_for(dead.wait(), 10) != 0
    finally:
        await runner.cleanup()
