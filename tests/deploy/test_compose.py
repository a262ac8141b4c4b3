"""docker-compose.yml, the GPU override and the Dockerfile, checked without a Docker engine.

The Compose specification's JSON schema is read from ../shared/compose-spec.json
beside the repository root (skipped with a reason when it is absent).
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
GPU_OVERRIDE = ROOT / "docker-compose.gpu.yml"
DOCKERFILE = ROOT / "Dockerfile"
SCHEMA = ROOT.parent / "shared" / "compose-spec.json"

# The loranet services: each may be started N times with --scale.
SCALED = ("datastore", "scheduler", "inference", "verifier", "settlement", "gateway")
NATS_NODES = ("nats-1", "nats-2", "nats-3")


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


@pytest.fixture(scope="module")
def compose() -> dict:
    return load(COMPOSE)


def command_of(service: dict) -> str:
    command = service.get("command", "")
    return command if isinstance(command, str) else shlex.join(command)


@pytest.mark.parametrize("path", [COMPOSE, GPU_OVERRIDE], ids=lambda p: p.name)
def test_valid_against_the_compose_spec(path):
    if not SCHEMA.exists():
        pytest.skip(f"compose spec schema not found at {SCHEMA}")
    jsonschema = pytest.importorskip("jsonschema", reason="jsonschema is needed to validate against the compose spec")
    schema = json.loads(SCHEMA.read_text())
    cls = (
        jsonschema.Draft7Validator
        if "draft-07" in schema.get("$schema", "")
        else jsonschema.validators.validator_for(schema)
    )
    validator = cls(schema)
    errors = [
        f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in validator.iter_errors(load(path))
    ]
    assert not errors, "\n".join(errors)


def test_every_command_runs_code_that_exists(compose):
    seen = set()
    for name, service in compose["services"].items():
        if service.get("image", "").startswith("loranet:"):
            command = command_of(service)
            modules = re.findall(r"python -m ([\w.]+)", command)
            scripts = re.findall(r"python ([\w./-]+\.py)", command)
            assert modules or scripts, f"{name}: command {command!r} runs no python module or script"
            for module in modules:
                path = ROOT.joinpath(*module.split("."))
                assert (path / "__main__.py").exists() or path.with_suffix(".py").exists(), (
                    f"{name}: `python -m {module}` but {path.relative_to(ROOT)}/__main__.py does not exist"
                )
                seen.add(module)
            for script in scripts:
                assert (ROOT / script).exists(), f"{name}: runs {script}, which does not exist"
    assert {f"services.{s}" for s in SCALED} <= seen


def test_images_are_pinned(compose):
    for path in (COMPOSE, GPU_OVERRIDE):
        for name, service in load(path)["services"].items():
            image = service.get("image")
            assert image, f"{path.name}: {name} has no image"
            repo, _, tag = image.rpartition(":")
            assert repo and "/" not in tag and tag and tag != "latest", (
                f"{path.name}: {name} image {image!r} is not pinned to a tag"
            )
            assert re.search(r"\d", tag), f"{path.name}: {name} image {image!r}: pin a version, not a moving tag"
    base = re.findall(r"^FROM\s+(\S+)", DOCKERFILE.read_text(), re.M)
    assert base and all(re.fullmatch(r"python:3\.11\.\d+-slim(-\w+)?", b) for b in base), base


def test_dockerfile_installs_pinned_cpu_torch_then_the_repository():
    text = DOCKERFILE.read_text()
    assert "ARG TORCH_VERSION=2.13.0" in text and '"torch==${TORCH_VERSION}"' in text
    assert "ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu" in text
    torch_at, repo_at = text.index("torch==${TORCH_VERSION}"), text.index("RUN pip install .")
    assert torch_at < repo_at
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ".venv" in ignored and ".git" in ignored


def test_scaled_services_have_no_container_name_or_fixed_host_port(compose):
    for path in (COMPOSE, GPU_OVERRIDE):
        for name, service in load(path)["services"].items():
            assert "container_name" not in service, f"{path.name}: {name} has a container_name"
            if name not in SCALED:
                continue
            for port in service.get("ports", []):
                spec = port if isinstance(port, str) else f"{port.get('published', '')}:{port.get('target')}"
                parts = spec.split(":")
                published = parts[-2] if len(parts) >= 2 else ""
                assert published == "" or "-" in published, (
                    f"{path.name}: {name} publishes fixed host port {published} ({spec}); --scale would collide"
                )


def test_start_order_and_health(compose):
    services = compose["services"]
    for node in NATS_NODES:
        check = " ".join(services[node]["healthcheck"]["test"])
        assert "8222/healthz" in check
        assert "nats" in services[node]["networks"]["default"]["aliases"]
    assert "--appendonly yes" in " ".join(services["redis"]["command"])
    assert services["redis"]["healthcheck"]
    assert services["anvil"]["image"].startswith("ghcr.io/foundry-rs/foundry:")
    init_deps = services["init"]["depends_on"]
    assert all(init_deps[n]["condition"] == "service_healthy" for n in (*NATS_NODES, "anvil"))
    assert services["init"]["restart"] == "no"
    for name in ("scheduler", "inference", "verifier", "settlement", "gateway"):
        assert services[name]["depends_on"]["init"]["condition"] == "service_completed_successfully", name
    # The datastore does not wait for init: init registers the catalogue through it.
    assert all(services["datastore"]["depends_on"][n]["condition"] == "service_healthy" for n in (*NATS_NODES, "redis"))
    for name in SCALED + ("init",):
        assert services[name]["environment"]["LORANET_JS_REPLICAS"] == "3", name


def test_nats_server_config_is_durable_and_clustered():
    conf = (ROOT / "deploy" / "nats" / "server.conf").read_text()
    assert re.search(r"^\s*sync_interval:\s*always\s*$", conf, re.M)
    assert re.search(r"^\s*http_port:\s*8222", conf, re.M)
    for node in NATS_NODES:
        assert f"nats-route://{node}:6222" in conf
    assert "include auth.conf" in conf


def test_every_service_connects_as_its_own_nats_user(compose):
    auth = (ROOT / "deploy" / "nats" / "auth.conf").read_text()
    users = set(re.findall(r"^\s*user:\s*(\w+)", auth, re.M))
    services = compose["services"]
    for name in SCALED + ("init",):
        url = services[name]["environment"]["LORANET_NATS_URL"]
        m = re.fullmatch(r"nats://(\w+):\$\{(LORANET_NATS_PASSWORD_\w+):-[\w-]+\}@nats:4222", url)
        assert m, f"{name}: {url}"
        user, password_var = m.groups()
        assert user == name, f"{name} connects as {user}"
        assert user in users
        assert re.search(rf"user:\s*{user}\s+password:\s*\${password_var}\b", auth), (
            f"{user}'s password is not {password_var}"
        )
        for node in NATS_NODES:
            assert password_var in services[node]["environment"], f"{node} lacks {password_var}"


def test_settlement_attaches_to_the_contracts_init_deployed(compose):
    import importlib.util

    spec = importlib.util.spec_from_file_location("loranet_deploy_init", ROOT / "deploy" / "init.py")
    init = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(init)
    services = compose["services"]
    path = services["init"]["environment"]["LORANET_DEPLOYMENT_FILE"]
    assert f". {path}" in command_of(services["settlement"])
    assert (
        services["settlement"]["environment"]["LORANET_RPC_URL"] == services["init"]["environment"]["LORANET_RPC_URL"]
    )
    written = init.format_deployment("0x" + "1" * 40, "0x" + "2" * 40, "0x" + "3" * 40, 31337)
    values = init.parse_deployment(written)
    # Exactly the settings settlement reads (LORANET_<FIELD>).
    from services.settlement.settings import SettlementSettings

    settings = SettlementSettings.from_env({k: v for k, v in values.items()})
    assert (settings.token_address, settings.registry_address, settings.settlement_address) == (
        "0x" + "1" * 40,
        "0x" + "2" * 40,
        "0x" + "3" * 40,
    )
    for line in written.splitlines():
        assert line.startswith("#") or re.fullmatch(r"LORANET_[A-Z_]+=[0-9a-zA-Zx]+", line), line


def test_scaled_replicas_name_themselves(compose):
    services = compose["services"]
    assert "LORANET_NODE_ID=$${LORANET_NODE_ID:-node-$$(hostname)}" in command_of(services["inference"]).replace(
        "'", ""
    )
    assert "LORANET_VERIFIER_ID=$${LORANET_VERIFIER_ID:-verifier-$$(hostname)}" in command_of(
        services["verifier"]
    ).replace("'", "")


def test_gpu_override_reserves_a_gpu_for_inference_only():
    gpu = load(GPU_OVERRIDE)["services"]
    assert set(gpu) == {"inference"}
    devices = gpu["inference"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["capabilities"] == ["gpu"]
    assert gpu["inference"]["environment"]["LORANET_DEVICE"] == "cuda"


def test_gateway_keys_file_is_a_json_map():
    keys = json.loads((ROOT / "deploy" / "gateway" / "keys.json").read_text())
    assert keys and all(isinstance(k, str) and isinstance(v, str) for k, v in keys.items())


def test_clients_get_their_identity_from_the_auth_service(compose):
    """No client user: the servers hand client connections to the `auth` service (auth callout), whose
    issuer and own NKEY are the public halves of the seeds compose gives it."""
    from loranet import natsauth

    auth = (ROOT / "deploy" / "nats" / "auth.conf").read_text()
    assert "user: client" not in auth and "LORANET_NATS_PASSWORD_CLIENT" not in auth
    assert re.search(r"auth_callout\s*\{\s*issuer:\s*\$LORANET_NATS_AUTH_ISSUER", auth)
    callout_users = re.search(r"auth_users:\s*\[([^\]]*)\]", auth).group(1).replace(",", " ").split()
    static = set(re.findall(r"^\s*user:\s*(\w+)", auth, re.M))
    assert set(callout_users) == static | {"$LORANET_NATS_AUTH_NKEY"}  # every static user bypasses the callout
    services = compose["services"]
    assert command_of(services["auth"]) == "python -m services.auth"
    env = services["auth"]["environment"]
    assert env["LORANET_NATS_URL"] == "nats://nats:4222"  # no password: it signs in with its NKEY

    def default(value: str) -> str:
        return re.fullmatch(r"\$\{\w+:-(\w+)\}", value).group(1)

    issuer = natsauth.issuer_from_seed(default(env["LORANET_AUTH_ISSUER_SEED"]))
    service_seed = default(env["LORANET_AUTH_NKEY_SEED"])
    for node in NATS_NODES:
        node_env = services[node]["environment"]
        assert default(node_env["LORANET_NATS_AUTH_ISSUER"]) == natsauth.encode_public(
            bytes(issuer.verify_key), natsauth.PREFIX_ACCOUNT
        )
        import nkeys

        assert (
            default(node_env["LORANET_NATS_AUTH_NKEY"])
            == nkeys.from_seed(bytearray(service_seed.encode())).public_key.decode()
        )
        assert "LORANET_NATS_PASSWORD_CLIENT" not in node_env
