"""`loranet`: submit jobs, read records, look up adapters and balances, run the devnet."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any, NoReturn

from . import devnet as dn

# 2: a bad argument; 1: a refused request or an unreachable network (what to do is on the line).
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNAVAILABLE = 0, 1, 2, 1


def _nats_url(args: argparse.Namespace) -> str:
    if getattr(args, "nats", None):
        return args.nats
    if os.environ.get("LORANET_NATS_URL"):
        return os.environ["LORANET_NATS_URL"]
    state_dir = getattr(args, "state_dir", dn.DEFAULT_STATE_DIR)
    state = dn.read_state(state_dir)
    # No password: the client authenticates with its own key (Client.connect, the devnet's auth service).
    return state["nats_url"] if state else f"nats://127.0.0.1:{dn.DEFAULT_NATS_PORT}"


def _identity(args: argparse.Namespace):
    from loranet.signing import Identity

    path = Path(args.key or os.environ.get("LORANET_CLIENT_KEY") or Path(args.state_dir) / "client.key")
    if path.exists():
        return Identity.from_file(path)
    identity = Identity.generate()
    identity.save(path)
    return identity


def _print(obj: Any, as_json: bool, table=None) -> None:
    if as_json or table is None:
        print(json.dumps(obj, indent=None if as_json else 2, default=str))
    else:
        table()


async def _client(args: argparse.Namespace):
    from loranet.client import Client

    try:
        # A one-shot command: a devnet that is down is said within about a second (3 tries, 0.5 s apart).
        return await Client.connect(_nats_url(args), _identity(args), reconnect_time_wait=0.5)
    except Exception as exc:
        where = _nats_url(args).split("@")[-1]
        raise SystemExit(
            _fail(
                f"cannot reach NATS at {where}: {exc}. Is the devnet up? (loranet devnet up --detach)", EXIT_UNAVAILABLE
            )
        ) from None


def _one_line(exc: Exception) -> str:
    """A validation error as one line: the first failing field and why."""
    field = getattr(exc, "field", "")
    if field and not callable(getattr(exc, "errors", None)):
        return f"{field}: {str(exc).splitlines()[0]}"
    errors = getattr(exc, "errors", None)
    if callable(errors):
        try:
            first = errors()[0]
            return f"{'.'.join(str(x) for x in first.get('loc', ())) or 'value'}: {first.get('msg', '')}"
        except Exception:
            pass
    return str(exc).splitlines()[0]


def _fail(message: str, code: int = EXIT_FAILED) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


# -- commands ---------------------------------------------------------------


def _model(args: argparse.Namespace) -> str:
    """--model, else the running devnet's model, else "" (the client's default: $LORANET_MODEL or SmolLM2)."""
    if getattr(args, "model", ""):
        return args.model
    state = dn.read_state(args.state_dir) or {}
    model = str(state.get("config", {}).get("model") or "")
    return Path(model).name if "/" in model else model


async def cmd_submit(args: argparse.Namespace) -> int:
    return await _run_job(args, args.prompt, chat=False)


async def cmd_chat(args: argparse.Namespace) -> int:
    return await _run_job(args, args.message, chat=True)


async def _run_job(args: argparse.Namespace, prompt: str, chat: bool) -> int:
    from rich.console import Console

    from loranet import protocol as p
    from loranet.client import JobFailed
    from loranet.errors import RemoteError

    console = Console(stderr=True)
    # Everything the arguments decide is checked before connecting, so nothing is reserved or billed.
    if not prompt.strip():
        return _fail(f"{'message' if chat else 'prompt'}: must not be empty", EXIT_USAGE)
    if not 1 <= args.max_tokens <= p.MAX_TOKENS_LIMIT:
        return _fail(f"max_tokens: between 1 and {p.MAX_TOKENS_LIMIT}, got {args.max_tokens}", EXIT_USAGE)
    if args.max_fee < 1:
        return _fail(f"max_fee: at least 1 wei, got {args.max_fee}", EXIT_USAGE)
    try:
        sampling = p.SamplingParams(
            temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, seed=args.seed, stop=args.stop or []
        )
    except ValueError as exc:
        return _fail(f"invalid sampling options: {_one_line(exc)}", EXIT_USAGE)
    client = await _client(args)
    async with client:
        if args.deposit:
            await client.faucet(args.deposit, args.deposit)
        try:
            job_id = await client.submit(
                args.adapter,
                prompt,
                args.max_tokens,
                sampling=sampling,
                model=_model(args),
                max_fee=args.max_fee,
                confidential=args.confidential,
                chat=chat,
            )
        except ValueError as exc:
            return _fail(f"invalid job: {_one_line(exc)}", EXIT_USAGE)
        except JobFailed as exc:
            return _fail(str(exc), EXIT_UNAVAILABLE)
        except RemoteError as exc:
            return _fail(
                f"{exc.code}: {exc.message}", EXIT_USAGE if exc.code in ("not_found", "invalid") else EXIT_FAILED
            )
        if not args.wait:
            _print(
                {"job_id": job_id, "status": "submitted"},
                args.json,
                lambda: print(f"submitted {job_id}; follow it with: loranet job {job_id}"),
            )
            return EXIT_OK
        if args.json:
            outcome = await client.wait(job_id, args.timeout)
        else:
            with console.status(f"job {job_id[:12]}… submitted") as status:
                outcome = await client.wait(
                    job_id, args.timeout, on_event=lambda e: status.update(f"job {job_id[:12]}… {e.stage}")
                )
        result = outcome.as_dict()
        _print(result, args.json, lambda: _show_outcome(result))
        return EXIT_OK if outcome.status == "settled" else EXIT_FAILED


def _show_outcome(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(f"[bold]{result['job_id']}[/]  status: [bold]{result['status']}[/]  {result.get('reason', '')}")
    console.print(f"output: {result['output']!r}")
    if result["verdict"]:
        console.print(f"verdict: {result['verdict']}")
    if result["payouts"]:
        table = Table("party", "amount (wei)")
        for party, amount in result["payouts"].items():
            table.add_row(party, amount)
        table.add_row("[bold]fee[/]", result["fee"])
        console.print(table)


async def cmd_job(args: argparse.Namespace) -> int:
    from loranet import protocol as p
    from loranet.client import outcome_of
    from loranet.errors import RemoteError

    p.JobGet(job_id=args.job_id)  # a bad id is refused before connecting
    client = await _client(args)
    async with client:
        try:
            record = await client.job(args.job_id)
        except RemoteError as exc:
            return _fail(f"{exc.code}: {exc.message}")
        result = outcome_of(record, client.identity).as_dict()  # opens a confidential job's output
        _print(result, args.json, lambda: _show_outcome(result))
    return EXIT_OK


async def cmd_adapters(args: argparse.Namespace) -> int:
    client = await _client(args)
    async with client:
        adapters = await client.adapters()
    rows = [
        {
            "name": a.name,
            "adapter_id": a.adapter_id,
            "rank": a.rank,
            "targets": a.target_modules,
            "owner": a.owner_address,
            "contributors": len(a.contributors),
        }
        for a in adapters
    ]

    def table() -> None:
        from rich.console import Console
        from rich.table import Table

        t = Table("name", "adapter_id", "rank", "targets", "owner")
        for r in rows:
            t.add_row(r["name"], r["adapter_id"][:16] + "…", str(r["rank"]), ",".join(r["targets"]), r["owner"])
        Console().print(t)

    _print(rows, args.json, table)
    return EXIT_OK


async def cmd_adapter_register(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from loranet.errors import RemoteError

    try:
        manifest = json.loads(Path(args.manifest).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        return _fail(f"cannot read the manifest {args.manifest}: {exc}", EXIT_USAGE)
    client = await _client(args)
    async with client:
        try:
            stored = await client.register_adapter(args.path, manifest)
        except (KeyError, ValueError, ValidationError, OSError) as exc:
            return _fail(f"invalid adapter or manifest: {exc}", EXIT_USAGE)
        except RemoteError as exc:
            return _fail(f"{exc.code}: {exc.message}" + (f" (field {exc.field})" if exc.field else ""))
    row = {
        "name": stored.name,
        "adapter_id": stored.adapter_id,
        "base_model_id": stored.base_model_id,
        "rank": stored.rank,
        "targets": stored.target_modules,
        "owner": stored.owner_address,
        "contributors": [c.to_wire() for c in stored.contributors],
    }
    _print(row, args.json, lambda: print(f"registered {stored.name}: {stored.adapter_id}"))
    return EXIT_OK


async def cmd_models(args: argparse.Namespace) -> int:
    from loranet.errors import RemoteError

    client = await _client(args)
    async with client:
        nodes = await client.nodes()
        served: dict[str, list[str]] = {}
        for n in nodes:
            for model_id in n.model_ids:
                served.setdefault(model_id, []).append(n.node_id)
        rows = []
        for model_id, node_ids in sorted(served.items()):
            try:
                m = await client.model(model_id)
                rec = {
                    "name": m.name,
                    "model_id": m.model_id,
                    "architecture": m.architecture,
                    "tokenizer_id": m.tokenizer_id,
                    "vocab_size": m.vocab_size,
                    "chat": bool(m.chat_template),
                }
            except RemoteError:
                rec = {"name": "(unregistered)", "model_id": model_id}
            rows.append({**rec, "nodes": sorted(node_ids)})

    def table() -> None:
        from rich.console import Console
        from rich.table import Table

        t = Table("name", "model_id", "tokenizer_id", "vocab", "chat", "nodes")
        for r in rows:
            t.add_row(
                r["name"],
                r["model_id"][:16] + "…",
                str(r.get("tokenizer_id", ""))[:16] + "…",
                str(r.get("vocab_size", "")),
                str(r.get("chat", "")),
                ",".join(r["nodes"]),
            )
        Console().print(t)

    _print(rows, args.json, table)
    return EXIT_OK


async def cmd_model_register(args: argparse.Namespace) -> int:
    from loranet.model.catalog import ModelRefused, register_checkpoint
    from loranet.model.tokenizers import TokenizerError

    try:
        model, tok = await asyncio.to_thread(register_checkpoint, args.path, args.name)
    except (ModelRefused, TokenizerError) as exc:
        return _fail(str(exc), EXIT_USAGE)
    row = {
        "name": model.name,
        "model_id": model.model_id,
        "tokenizer_id": tok.tokenizer_id,
        "vocab_size": tok.vocab_size,
        "path": str(model.path),
        "registered": False,
    }
    if not args.offline:
        import nats

        from loranet import protocol as p
        from loranet.errors import RemoteError
        from loranet.runtime import request

        from .demo import model_manifest

        state = dn.read_state(args.state_dir)
        if not state:
            return _fail("no devnet running to register with (start one, or pass --offline)", EXIT_UNAVAILABLE)
        try:
            nc = await nats.connect(dn.role_url(args.state_dir, "init", state["nats_url"]))
            try:
                await request(nc, p.DATASTORE_MODEL_PUT, p.ModelPut(manifest=model_manifest(model)), timeout=30)
            finally:
                await nc.close()
        except RemoteError as exc:
            return _fail(f"{exc.code}: {exc.message}")
        except Exception as exc:
            return _fail(f"cannot register with the devnet: {exc}", EXIT_UNAVAILABLE)
        row["registered"] = True
    _print(
        row,
        args.json,
        lambda: print(
            f"registered {model.name}: model {model.model_id}, tokenizer {tok.tokenizer_id} ({tok.vocab_size} tokens)\n"
            f"serve it with: loranet devnet up --model {model.name}"
        ),
    )
    return EXIT_OK


async def _datanet_to_jsonl(args: argparse.Namespace, name: str, version: int) -> tuple[str, dict[str, Any]]:
    """A datanet version's chat records as one training file: each line names its contribution and is paid to
    that contribution's payout address. Text records are left out (training takes chat turns)."""
    import tempfile

    client = await _client(args)
    lines: list[str] = []
    async with client:
        got = await client.datanet(name, version)
        for entry in got.contributions:
            for line in (await client.contribution_records(entry.contribution_id)).decode().splitlines():
                row = json.loads(line) if line.strip() else None
                if isinstance(row, dict) and "messages" in row:
                    row.update(contributor=entry.payout_address.lower(), contribution=entry.contribution_id)
                    lines.append(json.dumps(row))
    fd, path = tempfile.mkstemp(prefix=f"datanet-{name}-{version}-", suffix=".jsonl")
    with os.fdopen(fd, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path, {"name": name, "version": version, "merkle_root": got.merkle_root}


def cmd_adapter_train(args: argparse.Namespace) -> int:
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from loranet.model.catalog import ModelRefused, resolve_model
    from loranet.model.train import TrainingRefused, TrainOptions, train_adapter

    options = TrainOptions(
        rank=args.rank,
        alpha=args.alpha,
        targets=tuple(t for t in args.targets.split(",") if t),
        epochs=args.epochs,
        lr=args.lr,
        seed=args.seed,
    )
    # The arguments are checked before the base model is loaded (or built).
    if min(args.rank, args.alpha, args.epochs) < 1 or args.lr <= 0:
        return _fail("rank, alpha and epochs must be >= 1 and the learning rate > 0", EXIT_USAGE)
    if bool(args.data) == bool(args.datanet):
        return _fail("data: give one of --data FILE or --datanet NAME@VERSION", EXIT_USAGE)
    datanet = None
    if args.datanet:
        name, version = _datanet_ref(args.datanet)
        if version < 0:
            return _fail("datanet: name the version to train on: NAME@VERSION (versions never change)", EXIT_USAGE)
        args.data, datanet = asyncio.run(_datanet_to_jsonl(args, name, version))
    if not Path(args.data).is_file():
        return _fail(f"{args.data}: no such dataset file", EXIT_USAGE)
    try:
        base = resolve_model(args.base)
        with Progress(
            TextColumn("training"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total} steps"),
            TextColumn("loss {task.fields[loss]}"),
            TimeRemainingColumn(),
            disable=args.json,
        ) as bar:
            task = bar.add_task("train", total=None, loss="-")
            report = train_adapter(
                base.path,
                args.data,
                args.out,
                options,
                name=args.name,
                progress=lambda i, n, loss: bar.update(task, completed=i, total=n, loss=f"{loss:.3f}"),
                datanet=datanet,
            )
    except (ModelRefused, TrainingRefused, ValueError) as exc:
        return _fail(str(exc).splitlines()[0], EXIT_USAGE)
    row = {
        "out": str(report.out_dir),
        "adapter_id": report.adapter_id,
        "base_model_id": base.model_id,
        "examples": report.examples,
        "steps": report.steps,
        "first_loss": round(report.first_loss, 4),
        "last_loss": round(report.last_loss, 4),
    }
    _print(
        row,
        args.json,
        lambda: print(
            f"trained {report.out_dir}: adapter {report.adapter_id}, loss {report.first_loss:.3f} -> "
            f"{report.last_loss:.3f}\n"
            f"register it with: loranet adapter register {report.out_dir} --manifest "
            f"{report.out_dir}/manifest.draft.json"
        ),
    )
    return EXIT_OK


async def cmd_nodes(args: argparse.Namespace) -> int:
    import time

    from loranet import protocol as p
    from loranet.errors import RemoteError

    client = await _client(args)
    async with client:
        nodes = sorted(await client.nodes(), key=lambda n: n.node_id)
        declared: list[p.Stake | None] = []
        for n in nodes:  # the on-chain map: what each node staked and declared in the Registry
            try:
                declared.append(await client.stake_of_key(n.node_key))
            except (RemoteError, TimeoutError):
                declared.append(None)
    now = time.time()
    rows = []
    for n, d in zip(nodes, declared):
        row = n.summary(now)
        row["declared"] = (
            {
                "device": d.device,
                "memory_mb": d.memory_mb,
                "region": d.region,
                "dtype": d.dtype,
                "price": str(d.price),
                "stake": str(d.stake),
            }
            if d is not None and d.device
            else None
        )
        rows.append(row)

    def table() -> None:
        from rich.console import Console
        from rich.table import Table

        t = Table(
            "node",
            "device",
            "region",
            "declared (chain)",
            "slots free",
            "queue",
            "tokens/s",
            "adapters hot",
            "heartbeat",
        )
        for r in rows:
            d = r["declared"]
            t.add_row(
                r["node_id"],
                r["device"],
                r["region"] or "-",
                f"{d['device']}, {d['memory_mb'] >> 10} GiB, {d['region']}, {d['dtype'] or '?'}" if d else "-",
                f"{r['slots_free']}/{r['slots_total']}",
                str(r["queue_depth"]),
                str(r["tokens_per_s"]),
                str(r["adapters_hot"]),
                f"{r['heartbeat_age_s']}s ago",
            )
        Console().print(t)

    _print(rows, args.json, table)
    return EXIT_OK


def _datanet_ref(ref: str) -> tuple[str, int]:
    """NAME or NAME@VERSION, checked before connecting."""
    from loranet import protocol as p
    from loranet.errors import Invalid

    name, _, version = ref.partition("@")
    if version and not version.isdigit():
        raise Invalid(f"{ref[:60]!r}: the version after @ is a whole number", "name")
    p.DatanetGet(name=name, version=int(version) if version else -1)  # the name's rule
    return name, int(version) if version else -1


async def cmd_datanet(args: argparse.Namespace) -> int:
    from loranet import protocol as p

    name, version = _datanet_ref(args.name)
    records = b""
    if args.datanet_command == "contribute":
        if version >= 0:
            return _fail("name: contribute to NAME (a new version is made), not NAME@VERSION", EXIT_USAGE)
        path = Path(args.file)
        if not path.is_file():
            return _fail(f"file: {args.file}: no such file", EXIT_USAGE)
        records = path.read_bytes()
        if not records.strip() or len(records) > p.MAX_CONTRIBUTION_BYTES:
            return _fail(f"file: {args.file}: empty, or over {p.MAX_CONTRIBUTION_BYTES} bytes", EXIT_USAGE)
        if args.payout:
            _check_address(args.payout)
    client = await _client(args)
    async with client:
        if args.datanet_command == "create":
            got = await client.create_datanet(name, args.description)
        elif args.datanet_command == "contribute":
            got = await client.contribute(name, records, args.payout, args.license)
            recorded = await client.record_datanet(name, got.version)  # the new version's root, on chain
        else:
            got = await client.datanet(name, version)
    row = {
        "name": got.name,
        "version": got.version,
        "description": got.description,
        "merkle_root": got.merkle_root,
        "contributions": [
            {
                "contribution_id": c.contribution_id,
                "contributor_key": c.contributor_key.hex(),
                "payout_address": c.payout_address,
                "license": c.license,
                "records": c.records,
                "bytes": c.bytes,
            }
            for c in got.contributions
        ],
    }
    if args.datanet_command == "contribute":
        row["recorded"] = {"tx_hash": recorded.tx_hash, "block": recorded.block}

    def table() -> None:
        print(f"{got.name}@{got.version}  {len(got.contributions)} contributions  root {got.merkle_root or '-'}")
        for c in got.contributions:
            print(f"  {c.contribution_id[:16]}…  {c.records:5} records  {c.payout_address}  {c.license}")

    _print(row, args.json, table)
    return EXIT_OK


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text[:40]!r}") from None
    if not 0.2 <= value <= 60:
        raise argparse.ArgumentTypeError(f"must be 0.2 to 60 seconds, got {value}")
    return value


async def cmd_top(args: argparse.Namespace) -> int:
    from . import top

    if args.json and not args.once:
        return _fail("--json: only with --once (the live view is for a terminal)", EXIT_USAGE)
    url = args.nats or os.environ.get("LORANET_NATS_URL") or ""
    if not url:
        state = dn.read_state(args.state_dir)
        if not state:
            return _fail(
                f"no devnet running in {args.state_dir}: start one with `loranet devnet up --detach`, "
                "or pass --nats with an operator's URL",
                EXIT_FAILED,
            )
        url = dn.role_url(args.state_dir, "admin", state["nats_url"])
    try:
        await top.run(url, url.split("@")[-1], args.interval, args.once, args.json)
    except KeyboardInterrupt:
        pass
    return EXIT_OK


def _check_address(address: str) -> None:
    from loranet import protocol as p

    if address:
        p.BalanceGet(address=address)  # 0x and 40 hex digits, refused before connecting


async def cmd_balance(args: argparse.Namespace) -> int:
    _check_address(args.address)
    client = await _client(args)
    async with client:
        balance = await client.balance(args.address or None)
    row = {k: str(v) if isinstance(v, int) else v for k, v in balance.to_wire().items() if k != "v"}
    _print(row, args.json, lambda: print("\n".join(f"{k:8} {v}" for k, v in row.items())))
    return EXIT_OK


async def cmd_claim(args: argparse.Namespace) -> int:
    _check_address(args.address)
    client = await _client(args)
    async with client:
        claimed = await client.claim(args.address or None)
    row = {k: str(v) if isinstance(v, int) else v for k, v in claimed.to_wire().items() if k != "v"}

    def table() -> None:
        if claimed.amount:
            print(
                f"claimed {claimed.amount} wei for {claimed.address} (tx {claimed.tx_hash}); "
                f"credit now {claimed.credit}"
            )
        else:
            print(f"nothing to claim for {claimed.address}; credit {claimed.credit}")

    _print(row, args.json, table)
    return EXIT_OK


async def cmd_stake(args: argparse.Namespace) -> int:
    from loranet import codec
    from loranet import protocol as p
    from loranet.errors import RemoteError
    from loranet.runtime import request
    from loranet.signing import devnet_address

    _check_address(args.address)
    client = await _client(args)
    async with client:
        address = args.address
        if args.node:
            # The node's payout address from its heartbeat (KV `nodes`), else the devnet's derivation.
            address = devnet_address(args.node)
            try:
                entry = await (await client.js.key_value(p.NODES_BUCKET)).get(args.node)
                address = codec.decode(p.NodeHeartbeat, entry.value).payout_address
            except Exception:
                pass
        address = address or client.address
        try:
            stake = await request(client.nc, p.SETTLEMENT_STAKE, p.StakeGet(address=address))
        except RemoteError as exc:
            return _fail(f"{exc.code}: {exc.message}")
    row = {
        k: str(v) if isinstance(v, int) and not isinstance(v, bool) else v
        for k, v in stake.to_wire().items()
        if k != "v"
    }
    if args.node:
        row["node_id"] = args.node
    _print(row, args.json, lambda: print("\n".join(f"{k:16} {v}" for k, v in row.items())))
    return EXIT_OK


def cmd_devnet(args: argparse.Namespace) -> int:
    config = dn.DevnetConfig(
        state_dir=args.state_dir,
        inference_nodes=args.nodes,
        verifiers=args.verifiers,
        demo_adapters=args.adapters,
        model=args.model,
        gateway_port=args.gateway_port,
    )
    if args.action == "up":
        existing = dn.running_supervisor(args.state_dir)
        if existing:
            print(
                f"devnet already running (supervisor pid {existing['supervisor_pid']}, NATS {existing['nats_url']}); "
                "reusing it. Stop it with: loranet devnet down"
            )
            return EXIT_OK
        if not args.detach:
            return dn.Supervisor(config).run()
        return _devnet_up_detached(config)
    if args.action == "down":
        stopped = dn.stop(args.state_dir)
        print("devnet stopped" if stopped else "no devnet running")
        return EXIT_OK
    if args.action == "status":
        state = dn.status(args.state_dir)
        _print(state, args.json, lambda: _show_status(state))
        return EXIT_OK if state.get("running") else EXIT_FAILED
    if args.action == "demo":
        if _devnet_up_detached(config) != EXIT_OK:
            return EXIT_FAILED
        from .demo_run import run_demo

        return asyncio.run(run_demo(_nats_url(args), _identity(args), n_jobs=args.jobs, model=_model(args)))
    return EXIT_USAGE


def cmd_gateway(args: argparse.Namespace) -> int:
    from services.gateway.main import main
    from services.gateway.settings import GatewaySettings

    url = _nats_url(args)  # --nats, else LORANET_NATS_URL, else the running devnet (as its `gateway` NATS user)
    overrides: dict[str, Any] = {"nats_url": url}
    if not getattr(args, "nats", None) and not os.environ.get("LORANET_NATS_URL"):
        overrides["nats_url"] = dn.role_url(args.state_dir, "gateway", url)
        if overrides["nats_url"] != url and not os.environ.get("LORANET_GATEWAY_CLIENT_NATS_URL"):
            overrides["gateway_client_nats_url"] = url  # each key's client as itself, through the callout
    keys_file = Path(args.state_dir) / dn.GATEWAY_KEYS_FILE
    if not os.environ.get("LORANET_GATEWAY_KEYS") and not os.environ.get("LORANET_GATEWAY_KEYS_FILE"):
        if keys_file.exists():  # the running devnet's API key works here too
            overrides["gateway_keys_file"] = str(keys_file)
    asyncio.run(main(GatewaySettings.from_env(**overrides)))
    return EXIT_OK


def _devnet_up_detached(config: dn.DevnetConfig) -> int:
    from rich.console import Console

    console = Console()
    labels = {
        "servers": "starting nats-server and redis-server",
        "services": "starting the chain process, datastore and settlement",
        "catalogue": "building the seeded model and demo adapters, registering them",
        "nodes": "starting scheduler, verifiers and inference nodes",
        "ready": "ready",
    }
    try:
        with console.status("starting the devnet") as status:
            state = dn.start_detached(config, progress=lambda phase: status.update(labels.get(phase, phase)))
    except Exception as exc:
        return _fail(str(exc))
    console.print(
        f"devnet up: NATS {state['nats_url']}, Redis {state['redis_url']}, "
        f"{len(state['services'])} services (state in {state['state_dir']})"
    )
    if state.get("gateway"):
        from loranet.model.catalog import default_model_name

        model = Path(str(state["config"].get("model") or "")).name or default_model_name()
        print(gateway_help(state["gateway"]["url"], state["gateway"]["api_key_file"], model))
    return EXIT_OK


def gateway_help(url: str, key_file: str, model: str = "smollm2-135m-instruct") -> str:
    """How to reach the devnet's OpenAI-compatible gateway: its URL, key file, a curl line, a Python snippet."""
    return (
        f"OpenAI-compatible gateway: {url} (API key in {key_file})\n"
        f'  curl -s {url}/chat/completions -H "Authorization: Bearer $(cat {key_file})" \\\n'
        f'    -H "Content-Type: application/json" -d \'{{"model": "{model}", '
        '"messages": [{"role": "user", "content": "What is the capital of France?"}]}\'\n'
        f'  python -c \'import openai; c = openai.OpenAI(base_url="{url}", '
        f'api_key=open("{key_file}").read().strip()); '
        f'print(c.chat.completions.create(model="{model}", messages=[{{"role": "user", '
        '"content": "What is the capital of France?"}]).choices[0].message.content)\'  (pip install openai)'
    )


def _show_status(state: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table("name", "state", "pid", "restarts")
    for group in ("servers", "services"):
        for name, info in state.get(group, {}).items():
            t.add_row(name, info["state"], str(info.get("pid", "")), str(info.get("restarts", "")))
    Console().print(f"devnet {'running' if state.get('running') else 'not running'}")
    Console().print(t)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="loranet", description="A verifiable, decentralized multi-LoRA inference network.")
    parser.add_argument("--nats", help="NATS URL (default: the running devnet's, or LORANET_NATS_URL)")
    parser.add_argument("--state-dir", default=dn.DEFAULT_STATE_DIR, help="devnet state directory (default .devnet)")
    parser.add_argument("--key", help="client key file (default <state-dir>/client.key)")
    sub = parser.add_subparsers(dest="command", required=True)

    def job_options(s: argparse.ArgumentParser, max_tokens: int) -> None:
        s.add_argument("--adapter", default="", help="adapter id or registered name (e.g. pirate); empty = base model")
        s.add_argument("--model", default="", help="base model name or id (default: the devnet's)")
        s.add_argument("--max-tokens", type=int, default=max_tokens)
        s.add_argument("--temperature", type=float, default=0.0)
        s.add_argument("--top-k", type=int, default=0)
        s.add_argument("--top-p", type=float, default=1.0)
        s.add_argument("--seed", type=int, default=0)
        s.add_argument("--stop", action="append", help="stop string (repeatable, at most 4)")
        s.add_argument("--max-fee", type=int, default=10**18, help="most the job may cost, in OPEN wei")
        s.add_argument(
            "--deposit",
            type=int,
            default=10**19,
            help="devnet faucet: OPEN wei to receive and deposit into escrow first (0 = none)",
        )
        s.add_argument(
            "--confidential",
            action="store_true",
            help="seal the prompt to one live node and the verifier committee; the output comes back "
            "sealed to this identity (scheduler, NATS, Redis see ciphertext)",
        )
        s.add_argument("--timeout", type=float, default=300)
        s.add_argument("--json", action="store_true")

    s = sub.add_parser("submit", help="submit a job (a raw prompt, no chat template)")
    s.add_argument("--prompt", required=True)
    s.add_argument("--wait", action="store_true", help="wait until the job is settled or refused")
    job_options(s, 32)
    s.set_defaults(func=cmd_submit)

    c = sub.add_parser("chat", help="one user turn through the model's chat template; waits for the settled answer")
    c.add_argument("message")
    job_options(c, 64)
    c.set_defaults(func=cmd_chat, wait=True)

    m = sub.add_parser("models", help="base models served by live nodes, with their registry records")
    m.add_argument("--json", action="store_true")
    m.set_defaults(func=cmd_models)

    mr = sub.add_parser("model", help="model commands").add_subparsers(dest="model_command", required=True)
    mreg = mr.add_parser(
        "register",
        help="check a Llama-family HF checkpoint directory, copy it into the model "
        "cache and register it (serve it with: loranet devnet up --model NAME)",
    )
    mreg.add_argument("path", help="directory with config.json, *.safetensors and tokenizer files")
    mreg.add_argument("--name", default="", help="registered name (default: the directory's name, lower case)")
    mreg.add_argument("--offline", action="store_true", help="only check and copy into the cache; no datastore")
    mreg.add_argument("--json", action="store_true")
    mreg.set_defaults(func=cmd_model_register)

    j = sub.add_parser("job", help="read a job's record")
    j.add_argument("job_id")
    j.add_argument("--json", action="store_true")
    j.set_defaults(func=cmd_job)

    a = sub.add_parser("adapters", help="list registered adapters")
    a.add_argument("--json", action="store_true")
    a.set_defaults(func=cmd_adapters)

    ar = sub.add_parser("adapter", help="adapter commands").add_subparsers(dest="adapter_command", required=True)
    reg = ar.add_parser("register", help="register a PEFT adapter directory with its attribution manifest")
    reg.add_argument("path", help="directory with adapter_config.json and adapter_model.safetensors")
    reg.add_argument(
        "--manifest",
        required=True,
        help='JSON: {"name", "base_model" (id or name), "owner_address", "license", '
        '"contributors": [{"contributor_id", "address", "weight_bps"}] (weights sum to 10000)}',
    )
    reg.add_argument("--json", action="store_true")
    reg.set_defaults(func=cmd_adapter_register)
    tr = ar.add_parser("train", help="fine-tune a LoRA adapter on the CPU from a chat JSONL dataset")
    tr.add_argument("--base", default="", help="base model name or checkpoint directory (default: the default model)")
    tr.add_argument("--data", default="", help='JSONL: {"messages": [...], "contributor": "0x..."} per line')
    tr.add_argument("--datanet", default="", help="NAME@VERSION: train on a datanet version's chat records instead")
    tr.add_argument("--out", required=True, help="new directory for the PEFT adapter and manifest.draft.json")
    tr.add_argument("--name", default="", help="adapter name in the manifest draft (default: the --out name)")
    tr.add_argument("--rank", type=int, default=8)
    tr.add_argument("--alpha", type=int, default=16)
    tr.add_argument("--targets", default="q_proj,k_proj,v_proj,o_proj", help="comma-separated module names")
    tr.add_argument("--epochs", type=int, default=6)
    tr.add_argument("--lr", type=float, default=2e-3)
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--json", action="store_true")
    tr.set_defaults(func=cmd_adapter_train)

    dn_ = sub.add_parser("datanet", help="datanets: named, versioned collections of signed contributions")
    dnc = dn_.add_subparsers(dest="datanet_command", required=True)
    dcreate = dnc.add_parser("create", help="create an empty datanet (version 0)")
    dcreate.add_argument("name")
    dcreate.add_argument("--description", default="")
    dcreate.add_argument("--json", action="store_true")
    dcreate.set_defaults(func=cmd_datanet)
    dcontrib = dnc.add_parser("contribute", help="sign and add a JSONL file of records: a new version")
    dcontrib.add_argument("name")
    dcontrib.add_argument("file", help="chat JSONL ({messages: [...]}) or text JSONL ({text: ...}), one record a line")
    dcontrib.add_argument("--license", default="cc-by-4.0")
    dcontrib.add_argument("--payout", default="", help="payout address (default: this client's)")
    dcontrib.add_argument("--json", action="store_true")
    dcontrib.set_defaults(func=cmd_datanet)
    dshow = dnc.add_parser("show", help="a datanet version: NAME or NAME@VERSION")
    dshow.add_argument("name")
    dshow.add_argument("--json", action="store_true")
    dshow.set_defaults(func=cmd_datanet)

    n = sub.add_parser("nodes", help="live inference nodes from the node registry")
    n.add_argument("--json", action="store_true")
    n.set_defaults(func=cmd_nodes)

    cl = sub.add_parser(
        "claim", help="claim a data contributor's balance (paid per answer through the balances tree) into its credit"
    )
    cl.add_argument("address", nargs="?", default="", help="default: this client's address")
    cl.add_argument("--json", action="store_true")
    cl.set_defaults(func=cmd_claim)

    b = sub.add_parser("balance", help="OPEN balance, escrow, credit, stake and claimable balance of an address")
    b.add_argument("address", nargs="?", default="", help="default: this client's address")
    b.add_argument("--json", action="store_true")
    b.set_defaults(func=cmd_balance)

    st = sub.add_parser("stake", help="a node's stake in the Registry: staked, unbonding, active, bound key")
    st.add_argument("address", nargs="?", default="", help="payout address (default: this client's address)")
    st.add_argument("--node", default="", help="a node id instead: its payout address from its heartbeat")
    st.add_argument("--json", action="store_true")
    st.set_defaults(func=cmd_stake)

    d = sub.add_parser("devnet", help="the embedded devnet (no containers)")
    d.add_argument("action", choices=["up", "down", "status", "demo"])
    d.add_argument("--detach", action="store_true", help="with up: run in the background")
    d.add_argument("--nodes", type=int, default=2, help="inference nodes")
    d.add_argument("--verifiers", type=int, default=3)
    d.add_argument("--adapters", type=int, default=4, help="demo adapters to build and register")
    d.add_argument("--jobs", type=int, default=6, help="with demo on a model without a chat template: jobs to submit")
    d.add_argument(
        "--model",
        default="",
        help="base model the nodes serve: a name or checkpoint directory "
        "(default smollm2-135m-instruct; loranet-tiny-llama = the test model)",
    )
    d.add_argument(
        "--gateway-port",
        type=int,
        default=dn.DEFAULT_GATEWAY_PORT,
        help=f"the gateway's HTTP port (default {dn.DEFAULT_GATEWAY_PORT}; 0 = a free one)",
    )
    d.add_argument("--json", action="store_true")
    d.set_defaults(func=cmd_devnet)

    tp = sub.add_parser("top", help="a live view: jobs/s, tokens/s, queues, nodes, verifier rejections, epochs")
    tp.add_argument("--interval", type=_seconds, default=2.0, help="seconds between readings (0.2 to 60)")
    tp.add_argument("--once", action="store_true", help="print one reading and exit")
    tp.add_argument("--json", action="store_true", help="with --once: one JSON object")
    tp.set_defaults(func=cmd_top)

    g = sub.add_parser("gateway", help="run the OpenAI-compatible HTTP gateway (settings: LORANET_GATEWAY_*)")
    g.set_defaults(func=cmd_gateway)
    return parser


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: `error: <what>: <rule>` and exit 2, no usage block (--help has it)."""

    def error(self, message: str) -> NoReturn:
        print(f"error: {message} (see: {self.prog} --help)", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def refusal(exc: BaseException) -> tuple[str, int]:
    """The one line and exit code for an error a command let through: never a traceback.

    Bad input (a field that fails its rule) exits 2; a refused request, an unreachable devnet or anything
    else exits 1, with what to do where we know it."""
    from nats.errors import Error as NatsError
    from pydantic import ValidationError

    from loranet.errors import Invalid, LoranetError, RemoteError

    if isinstance(exc, ValidationError | Invalid):
        field = getattr(exc, "field", "")
        line = _one_line(exc) if isinstance(exc, ValidationError) else f"{field}: {exc}" if field else str(exc)
        return line, EXIT_USAGE
    if isinstance(exc, RemoteError):
        return f"{exc.code}: {exc.message}", EXIT_USAGE if exc.code == "invalid" else EXIT_FAILED
    if isinstance(exc, NatsError | ConnectionError | TimeoutError | asyncio.TimeoutError):
        return (
            f"no answer from the network ({type(exc).__name__}: {str(exc) or 'timed out'}); is the devnet up? "
            "start one with: loranet devnet up --detach",
            EXIT_FAILED,
        )
    if isinstance(exc, LoranetError | ValueError | OSError):
        return str(exc).splitlines()[0] if str(exc) else type(exc).__name__, EXIT_FAILED
    return (
        f"internal: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''} (a bug: please report it)",
        (EXIT_FAILED),
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result = args.func(args)
        if asyncio.iscoroutine(result):
            result = asyncio.run(result)
        return int(result or 0)
    except KeyboardInterrupt:
        return 130
    except SystemExit:
        raise
    except Exception as exc:  # the last resort: one line, never a traceback
        line, code = refusal(exc)
        return _fail(line, code)


if __name__ == "__main__":
    sys.exit(main())
