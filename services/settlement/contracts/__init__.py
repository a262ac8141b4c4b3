"""The settlement contracts' Vyper sources, compiled at runtime by the `vyper` package.

Compiled output (ABI + bytecode) is cached on disk keyed by the sha256 of the
source, the compiler version and its settings, under $LORANET_CACHE_DIR,
else $XDG_CACHE_HOME/loranet, else ~/.cache/loranet, else the temp directory.
LORANET_VENOM=1 compiles with Vyper's experimental Venom backend instead
(measured: about 750 gas less per settled job; off by default as experimental).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path

SOURCES = Path(__file__).resolve().parent
# Contract name -> source path relative to this directory.
CONTRACTS = {
    "OpenToken": "OpenToken.vy",
    "Registry": "Registry.vy",
    "Settlement": "Settlement.vy",
}
EVM_VERSION = "prague"


@dataclass(frozen=True)
class Compiled:
    name: str
    abi: list
    bytecode: str
    source_hash: str


def cache_dir() -> Path:
    """Where compiled contracts are cached (created on first use)."""
    for candidate in (
        os.environ.get("LORANET_CACHE_DIR"),
        os.environ.get("XDG_CACHE_HOME") and str(Path(os.environ["XDG_CACHE_HOME"]) / "loranet"),
        str(Path.home() / ".cache" / "loranet"),
        str(Path(tempfile.gettempdir()) / "loranet-cache"),
    ):
        if not candidate:
            continue
        path = Path(candidate) / "vyper"
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if os.access(path, os.W_OK):
            return path
    raise RuntimeError("no writable cache directory for compiled contracts; set LORANET_CACHE_DIR")


def compile_contract(name: str) -> Compiled:
    """ABI and deploy bytecode of contract `name` (a key of CONTRACTS), compiled once per source."""
    try:
        relative = CONTRACTS[name]
    except KeyError:
        raise ValueError(f"unknown contract {name!r}; known: {', '.join(CONTRACTS)}") from None
    return compile_source(SOURCES / relative)


@cache
def compile_source(source_path: Path) -> Compiled:
    """ABI and deploy bytecode of the Vyper file `source_path` (named by its stem), compiled once per source
    (the benchmarks' own contracts live outside this package: bench/contracts)."""
    import vyper
    from vyper.compiler.settings import Settings

    name = source_path.stem
    source = source_path.read_text()
    key = hashlib.sha256(
        f"{vyper.__version__}\0{EVM_VERSION}\0{os.environ.get('LORANET_VENOM')}\0{source}".encode()
    ).hexdigest()
    path = cache_dir() / f"{name}-{key[:24]}.json"
    if path.exists():
        try:
            cached = json.loads(path.read_text())
            return Compiled(name, cached["abi"], cached["bytecode"], key)
        except (OSError, ValueError, KeyError):
            pass  # a torn or foreign file: compile again and overwrite it
    out = vyper.compile_code(
        source,
        contract_path=str(source_path),
        output_formats=["abi", "bytecode"],
        settings=Settings(evm_version=EVM_VERSION, experimental_codegen=os.environ.get("LORANET_VENOM") == "1"),
    )
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"abi": out["abi"], "bytecode": out["bytecode"]}))
    os.replace(tmp, path)
    return Compiled(name, out["abi"], out["bytecode"], key)
