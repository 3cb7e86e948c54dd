"""Boards as data: one TOML file per board under targets/ (adding a board is adding a file)."""
from __future__ import annotations

import difflib
import tomllib
from dataclasses import dataclass
from pathlib import Path

from .errors import UsageError

TARGETS_DIR = Path(__file__).resolve().parent.parent / "targets"
KINDS = ("mcu", "linux", "cuda")
REQUIRED = ("name", "description", "kind", "core", "clock_hz", "flash_bytes", "ram_bytes", "tvm")


@dataclass(frozen=True)
class Target:
    name: str
    data: dict  # the whole TOML document; sections: tvm, toolchain, memory, firmware, emulator, flasher, link

    @property
    def kind(self) -> str: return self.data["kind"]
    @property
    def core(self) -> str: return self.data["core"]
    @property
    def clock_hz(self) -> int: return self.data["clock_hz"]
    @property
    def flash_bytes(self) -> int: return self.data["flash_bytes"]
    @property
    def ram_bytes(self) -> int: return self.data["ram_bytes"]
    @property
    def emulator(self) -> dict | None: return self.data.get("emulator")

    def section(self, name: str) -> dict:
        return self.data.get(name, {})

    def summary(self) -> dict:
        return {"name": self.name, "description": self.data["description"], "kind": self.kind,
                "core": self.core, "clock_hz": self.clock_hz, "flash_bytes": self.flash_bytes,
                "ram_bytes": self.ram_bytes, "emulated": self.emulator is not None}


def _load(path: Path) -> Target:
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise UsageError(f"target file {path} is not valid TOML ({e}): fix the file") from None
    missing = [k for k in REQUIRED if k not in data]
    if missing:
        raise UsageError(f"target file {path} lacks {', '.join(missing)}: add them")
    if data["kind"] not in KINDS:
        raise UsageError(f"target file {path}: kind must be one of {', '.join(KINDS)}")
    if data["name"] != path.stem:
        raise UsageError(f"target file {path}: name '{data['name']}' must match the file name '{path.stem}'")
    tvm = data["tvm"] if isinstance(data["tvm"], dict) else {}
    keys = ("vector_floats", "vector_registers", "spare_registers")
    if any(tvm.get(k) == "native" for k in keys):  # only then read /proc/cpuinfo
        tvm.update((k, v) for k, v in zip(keys, native_simd()) if tvm.get(k) == "native")
    return Target(data["name"], data)


def native_simd(machine: str | None = None, cpuinfo: str | None = None) -> tuple[int, int, int]:
    """(float32 lanes per SIMD register, SIMD registers, registers a register tile leaves free) of this CPU, as
    gcc -march=native uses it: a board built for the machine it runs on (host) tiles for the registers it has.
    An AVX-512 file holds twice the lanes and twice the registers of an AVX2 one: tiles for one spill on the
    other (V2 1.0 160, AVX2: 3.6 x ONNX Runtime with AVX-512's tiles). A tile over x86 needs two free registers
    (a broadcast input, a weight vector: its FMA reads any other weight from memory); over AArch64, whose FMA
    reads only registers, four."""
    import platform
    machine = machine or platform.machine()
    if machine in ("aarch64", "arm64"):
        return 4, 32, 4
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    flags = set(next((line.split(":", 1)[1].split() for line in cpuinfo.splitlines() if line.startswith("flags")), []))
    if "avx512f" in flags:
        return 16, 32, 2
    if "avx" in flags:
        return 8, 16, 2
    return 4, 16, 2  # SSE (x86-64's baseline)


def names() -> list[str]:
    return sorted(p.stem for p in TARGETS_DIR.glob("*.toml"))


def all_targets() -> list[Target]:
    return [_load(TARGETS_DIR / f"{n}.toml") for n in names()]


def get(name: str) -> Target:
    path = TARGETS_DIR / f"{name}.toml"
    if not path.is_file():
        close = difflib.get_close_matches(name, names(), n=3, cutoff=0.6)
        hint = f"did you mean {' or '.join(close)}?" if close else "see `edgekit targets`"
        raise UsageError(f"unknown target '{name}': {hint}")
    return _load(path)
