#!/usr/bin/env python3
"""edgekit's model runner for Linux boards that run TVM's runtime (the Jetson path).

Shipped next to the compiled library and run there, so it imports only what the board has:
the `tvm` runtime from the aarch64 wheel and numpy (never edgekit). It loads the library into
the Relax VM and speaks, on stdin/stdout or on a TCP port, the part of edgekit's serial protocol
(EEMBC / MLPerf Tiny commands plus edgekit's `ek-` extensions, firmware/README.md) that
validation and benchmarking use, so the host drives a Jetson exactly like a microcontroller.

    python3 tvm_runner.py model.so [--meta model.json] [--device cuda|cpu]
                          [--kernels kernels.fatbin] [--tcp PORT]

TVM's runtime compiles the library's CUDA source when it loads (NVRTC: `pip install
cuda-bindings` on the board) unless a prebuilt kernels.fatbin is given or lies beside it.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import select
import socket
import sys
import threading
import time
import zlib
from pathlib import Path

import numpy as np

# Limits and texts as in firmware/common/ek_protocol.c, so hosts see one protocol everywhere
LINE_MAX = 80              # EEMBC: commands are at most 80 characters
MAX_ARGS = 6
MAX_ITERS = 100_000_000    # bounds infer/ek-time so a typo cannot wedge the board for days
LOAD_TIMEOUT_S = 0.5       # silence that ends a binary load
HEX_DIGITS = frozenset("0123456789abcdefABCDEF")
HELP = (
    "BOARD edgekit TVM runner, MLPerf Tiny / EEMBC protocol; end each command with %",
    "name                 print the board name",
    "profile              print the benchmark profile and model",
    "timestamp            print microseconds since start",
    "db load N            expect N input bytes, then db HEX... to send them",
    "db print [N] [off]   print N (16) input bytes from offset off as hex",
    "infer N [W]          W (10) warm-up runs, then N timed runs; print the results",
    "results              print the last results",
    "ek-* commands end with the CRC-32 (hex) of the text before it; replies end with m-ek-end-CRC",
    "ek-info              model name, hash, sizes, board, counter",
    "ek-load N CRC [off]  N raw input bytes at offset off, checked against CRC-32 (hex)",
    "ek-read [N] [off]    raw output bytes after a header with their input's CRC-32",
    "ek-time N [incrc]    N inferences, one counter reading (ns) each; incrc: the whole input's CRC-32",
    "ek-sync TOKEN        echo TOKEN",
)
EK_COMMANDS = ("ek-info", "ek-load", "ek-read", "ek-time", "ek-profile", "ek-sync")


class Model:
    """The compiled library in a Relax VM, with its single input tensor's shape and dtype."""

    def __init__(self, lib: Path, meta: dict, device: str, kernels: Path | None):
        import tvm
        from tvm.runtime.vm import VirtualMachine

        if kernels is not None:
            _use_prebuilt_kernels(kernels, meta.get("cuda_source_sha256"))
        self.tvm = tvm
        self.dev = tvm.cuda(0) if device == "cuda" else tvm.cpu(0)
        self.vm = VirtualMachine(tvm.runtime.load_module(str(lib)), self.dev)
        self.main = self.vm["main"]
        spec = meta["inputs"][0]
        self.name = meta.get("name", lib.stem)
        self.hash = meta.get("hash", "none")
        self.board = meta.get("target", "edgekit-tvm")
        self.timer = f"perf_counter_ns+{device}-sync"  # how ek-time's counter is made (no spaces)
        self.shape, self.dtype = tuple(spec["shape"]), np.dtype(spec["dtype"])
        self.in_bytes = int(np.prod(self.shape)) * self.dtype.itemsize
        self.out_bytes = sum(int(np.prod(o["shape"])) * np.dtype(o["dtype"]).itemsize
                             for o in meta.get("outputs", []))

    def upload(self, raw: bytes):
        """Raw little-endian input bytes as a device tensor (done once, outside timed loops)."""
        arr = np.frombuffer(raw, dtype=self.dtype).reshape(self.shape)
        return self.tvm.runtime.tensor(arr, self.dev)

    def run(self, x, n: int) -> bytes:
        """n inferences; the last one's outputs as raw bytes, concatenated in order."""
        out = None
        for _ in range(n):
            out = self.main(x)
        self.dev.sync()  # GPU launches are asynchronous: the timed window must include the work
        # a single-output model returns a Tensor, a multi-output one an Array of them
        outs = [out] if hasattr(out, "numpy") else list(out)
        return b"".join(np.ascontiguousarray(o.numpy()).tobytes() for o in outs)


def _use_prebuilt_kernels(path: Path, expected_sha: str | None) -> None:
    """Serve TVM's load-time CUDA compile hook from a fatbin built ahead of time with nvcc.

    TVM's exported library carries the CUDA source; the CUDA runtime calls the global function
    `tvm_callback_cuda_compile` (NVRTC by default) on first use. Overriding it with the prebuilt
    fatbin skips runtime compilation; if the source is not the one the fatbin was built from,
    fall back to TVM's own compiler rather than load mismatched kernels.
    """
    import tvm_ffi

    blob = path.read_bytes()
    fallback = tvm_ffi.get_global_func("tvm_callback_cuda_compile", allow_missing=True)

    def compile_hook(code, *rest):
        text = code.encode() if isinstance(code, str) else bytes(code)
        if expected_sha is None or hashlib.sha256(text).hexdigest() == expected_sha:
            return blob
        if fallback is None:
            raise RuntimeError(f"{path} was built from other CUDA source: rerun build_on_device.sh")
        print(f"tvm_runner: {path} was built from other CUDA source; compiling at load time",
              file=sys.stderr)
        return fallback(code, *rest)

    tvm_ffi.register_global_func("tvm_callback_cuda_compile", compile_hook, override=True)


class Link:
    """Byte stream with EEMBC framing: commands end in '%', replies are CRLF lines.

    `recv(n, timeout)` returns b"" at end of stream and None when `timeout` seconds pass idle.
    """

    def __init__(self, recv, send):
        self.recv, self.send, self.buf = recv, send, b""
        self.crc = None  # inside an ek-* reply: the CRC-32 of its bytes so far, for its m-ek-end- line

    def out(self, data: bytes) -> None:
        if self.crc is not None:
            self.crc = zlib.crc32(data, self.crc)
        self.send(data)

    def command(self) -> str | None:
        """The next command without its '%' (CR/LF dropped, as the firmware does); None at end of stream."""
        while b"%" not in self.buf:
            data = self.recv(65536, None)
            if not data:
                return None
            self.buf += data
        cmd, self.buf = self.buf.split(b"%", 1)
        return cmd.replace(b"\r", b"").replace(b"\n", b"").decode("latin-1")

    def exact(self, n: int, idle_s: float) -> bytes:
        """Up to n bytes; fewer when the stream stays silent for idle_s (a dropped byte must not wedge us)."""
        while len(self.buf) < n:
            data = self.recv(65536, idle_s)
            if not data:
                break
            self.buf += data
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def line(self, text: str) -> None:
        self.out((text + "\r\n").encode("latin-1"))


def _float(v: float) -> str:
    """The firmware's put_float: 7 significant digits, d.dddddde+XX; 0, nan, inf spelt out."""
    if v != v:
        return "nan"
    if v == 0:
        return "0"
    if abs(v) == float("inf"):
        return "-inf" if v < 0 else "inf"
    return f"{v:.6e}"


class Session:
    """One connection's protocol state; replies follow firmware/common/ek_protocol.c line for line."""

    def __init__(self, model: Model, link: Link, t0: float):
        self.model, self.link, self.t0 = model, link, t0
        self.inp = bytearray(model.in_bytes)   # the input buffer, whole, as on the boards
        self.db_want = self.db_have = 0        # db load: bytes announced / received so far
        self.out = b""                          # raw bytes of the last results, b"" when none
        self.res_crc = 0                        # CRC-32 of the input those results came from

    def err(self, msg: str) -> None:
        self.link.line(f"e-[{msg}]")

    def lap(self) -> None:
        self.link.line(f"m-lap-us-{(time.perf_counter_ns() - self.t0) // 1000}")

    def serve(self, boot: bool = True) -> None:
        say = self.link.line
        if boot:
            say("m-timestamp-mode-performance")
            say("m-init-done")
            say("m-ready")
        while (cmd := self.link.command()) is not None:
            if len(cmd) > LINE_MAX:
                self.err(f"Command too long: at most {LINE_MAX} characters")
            else:
                argv = [w for w in cmd.split(" ") if w]  # spaces only, as the firmware splits
                if len(argv) > MAX_ARGS:
                    self.err("Too many arguments")
                elif argv and argv[0] in EK_COMMANDS:  # framed: CRC of the text before the last word, reply CRC
                    self.link.crc = 0
                    if argv[-1] != f"{zlib.crc32(cmd[:cmd.rfind(' ')].encode('latin-1')):08x}":
                        self.err("damaged command: crc mismatch, send it again")
                    else:
                        self.run(argv[:-1])
                    crc, self.link.crc = self.link.crc, None
                    say(f"m-ek-end-{crc:08x}")
                elif argv:  # a bare % only asks for m-ready
                    self.run(argv)
            say("m-ready")

    def run(self, argv: list[str]) -> None:
        try:
            self.dispatch(argv)
        except Exception as e:  # a failed run is one error line; the runner keeps serving
            self.out = b""
            self.err(f"Model run failed: {str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__}")

    def dispatch(self, argv: list[str]) -> None:
        say, m, c = self.link.line, self.model, argv[0]
        if c == "name":
            say(f"m-name-dut-[{m.board}]")
        elif c == "profile":
            say("m-profile-[ULPMark for tinyML Firmware V0.0.1]")
            say(f"m-model-[{m.name}]")
        elif c == "help":
            for text in HELP:
                say(text.replace("BOARD", m.board))
        elif c == "timestamp":
            self.lap()
        elif c == "db":
            self.db(argv)
        elif c == "infer":
            self.infer(argv)
        elif c == "results":
            self.results() if self.out else self.err("No results: run infer first")
        elif c == "ek-info":
            say(f"m-ek-info-name={m.name} hash={m.hash} board={m.board} input={m.in_bytes}"
                f" output={m.out_bytes} arena=0 layers=0 counter=ns per_us=1000 timer={m.timer}")
        elif c == "ek-load":
            self.load(argv)
        elif c == "ek-read":
            self.read(argv)
        elif c == "ek-time":
            self.time(argv)
        elif c == "ek-profile":
            self.err("ek-profile: the TVM runner has no per-layer counters (layers=0)")
        elif c == "ek-sync":
            self.link.line(f"m-ek-sync-{argv[1]}") if len(argv) == 2 and len(argv[1]) <= 16 else \
                self.err("ek-sync: use ek-sync TOKEN (at most 16 characters)")
        else:
            self.err(f"Unknown command: {c}")

    def db(self, argv: list[str]) -> None:
        argc, cap = len(argv), self.model.in_bytes
        if argc == 3 and argv[1] == "load":
            n = _u32(argv[2])
            if n is None or not 0 < n <= cap:
                self.err(f"db load: N must be 1..{cap}")
                return
            self.db_want, self.db_have = n, 0
            self.link.line(f"m-[Expecting {n} bytes]")
        elif 2 <= argc <= 4 and argv[1] == "print":
            n = _u32(argv[2]) if argc > 2 else 16
            off = _u32(argv[3]) if argc > 3 else 0
            if n is None or off is None or n > cap or off > cap - n:
                self.err("db print: N offset out of range")
                return
            chunk = self.inp[off:off + n]
            for i in range(0, n, 8):
                self.link.line("m-buffer-" + "-".join(f"{b:02x}" for b in chunk[i:i + 8]))
        elif argc == 2 and argv[1] != "load":
            digits = argv[1]
            if not self.db_want:
                self.err("db: no load in progress, send db load N first")
            elif len(digits) % 2:
                self.err("db: odd number of hex digits")
            elif any(ch not in HEX_DIGITS for ch in digits):
                self.err("db: not a hex digit")
            elif len(digits) // 2 > self.db_want - self.db_have:
                self.err("db: more bytes than db load announced")
            else:
                data = bytes.fromhex(digits)
                self.inp[self.db_have:self.db_have + len(data)] = data
                self.db_have += len(data)
                if self.db_have == self.db_want:
                    self.db_want = 0
                    self.link.line("m-load-done")
        else:
            self.err("db: use db load N, db HEX or db print [N] [offset]")

    def infer(self, argv: list[str]) -> None:
        say, argc = self.link.line, len(argv)
        n = _u32(argv[1]) if argc >= 2 else None
        if argc > 3 or not n:
            self.err("Inference iterations must be >0")
            return
        w = _u32(argv[2]) if argc == 3 else 10
        if w is None:
            self.err("infer: warmup W must be a number >= 0")
            return
        if n > MAX_ITERS or w > MAX_ITERS:
            self.err("infer: too many iterations")
            return
        x = self.model.upload(bytes(self.inp))  # outside the timed window, like a board's input buffer
        self.res_crc = zlib.crc32(self.inp)
        say(f"m-warmup-start-{w}")
        if w:
            self.model.run(x, w)
        say("m-warmup-done")
        say(f"m-infer-start-{n}")
        self.lap()
        self.out = self.model.run(x, n)
        self.lap()
        say("m-infer-done")
        self.results()

    def results(self) -> None:
        vals = np.frombuffer(self.out[:len(self.out) // 4 * 4], dtype="<f4")  # outputs read as float32, as on boards
        self.link.line("m-results-[" + ",".join(_float(float(v)) for v in vals) + "]")

    # --- edgekit extensions ---------------------------------------------------------------
    def load(self, argv: list[str]) -> None:
        """ek-load N CRC32HEX [OFFSET]: N raw bytes follow m-ek-load-ready-N."""
        argc, cap = len(argv), self.model.in_bytes
        n = _u32(argv[1]) if argc >= 3 else None
        crc = _hex32(argv[2]) if argc >= 3 else None
        off = _u32(argv[3]) if argc == 4 else 0
        if argc > 4 or n is None or crc is None or off is None or n == 0 or n > cap or off > cap - n:
            self.err(f"ek-load: use ek-load N CRC32HEX [OFFSET] with 0 < N, N+OFFSET <= {cap}")
            return
        self.link.line(f"m-ek-load-ready-{n}")
        data = self.link.exact(n, LOAD_TIMEOUT_S)
        self.inp[off:off + len(data)] = data
        if len(data) < n:
            self.err(f"damaged ek-load: timeout after {len(data)} of {n} bytes")
            return
        have = zlib.crc32(data)
        if have != crc:
            self.err(f"damaged ek-load: crc mismatch, got {have:08x} expected {crc:08x}")
            return
        self.link.line(f"m-ek-load-done-{have:08x}")

    def read(self, argv: list[str]) -> None:
        """ek-read [N [OFFSET]]: header with N and the CRC-32 of the results' input, N raw bytes, CRLF."""
        argc, cap = len(argv), self.model.out_bytes
        n = _u32(argv[1]) if argc > 1 else cap
        off = _u32(argv[2]) if argc > 2 else 0
        if argc > 3 or n is None or off is None or n > cap or off > cap - n:
            self.err("ek-read: N offset out of range")
            return
        if not self.out:
            self.err("ek-read: no results, run infer or ek-time first")
            return
        raw = self.out[off:off + n]
        self.link.line(f"m-ek-read-{n}-{self.res_crc:08x}")
        self.link.out(raw + b"\r\n")

    def time(self, argv: list[str]) -> None:
        """ek-time N [INCRC]: the input checked against INCRC, then one m-ek-time-COUNT line (nanoseconds,
        GPU work included) per inference."""
        n = _u32(argv[1]) if 2 <= len(argv) <= 3 else None
        want = _hex32(argv[2]) if len(argv) == 3 else None
        if not n or n > MAX_ITERS or (len(argv) == 3 and want is None):
            self.err("ek-time: use ek-time N [INPUT_CRC32HEX] with N > 0")
            return
        have = zlib.crc32(self.inp)
        if want is not None and want != have:
            self.err(f"damaged input: crc {have:08x} expected {want:08x}, load it again")
            return
        self.link.line(f"m-ek-input-{have:08x}")
        x = self.model.upload(bytes(self.inp))
        self.res_crc = have
        for _ in range(n):
            t0 = time.perf_counter_ns()
            self.out = self.model.run(x, 1)
            self.link.line(f"m-ek-time-{time.perf_counter_ns() - t0}")


def _u32(s: str) -> int | None:
    """Decimal, no sign, fits 32 bits: the firmware's parse_u32."""
    return int(s) if s.isdigit() and s.isascii() and int(s) <= 0xFFFFFFFF else None


def _hex32(s: str) -> int | None:
    return int(s, 16) if 0 < len(s) <= 8 and all(ch in HEX_DIGITS for ch in s) else None


def serve_stdio(model: Model, t0: int, out_fd: int) -> None:
    def recv(n: int, timeout: float | None) -> bytes | None:
        if timeout is not None and not select.select([0], [], [], timeout)[0]:
            return None
        return os.read(0, n)

    def send(data: bytes) -> None:
        while data:
            data = data[os.write(out_fd, data):]

    Session(model, Link(recv, send), t0).serve()


def serve_tcp(model: Model, port: int, t0: int) -> None:
    """One client at a time on 127.0.0.1 (reached through `ssh -L`), until stdin closes."""
    # The ssh session that started us closes our stdin when it ends: leave then, so a dropped
    # connection never strands a runner holding the GPU.
    def watch_stdin() -> None:
        while os.read(0, 4096):
            pass
        os._exit(0)

    threading.Thread(target=watch_stdin, daemon=True).start()
    srv = socket.create_server(("127.0.0.1", port))
    print(f"m-listening-{srv.getsockname()[1]}", flush=True)
    while True:
        conn, _ = srv.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        def recv(n: int, timeout: float | None, conn=conn) -> bytes | None:
            conn.settimeout(timeout)
            try:
                return conn.recv(n)
            except socket.timeout:
                return None

        with conn:
            try:
                # no boot lines per connection: the runner booted once (m-listening), like a
                # board whose port is opened after boot, the same as the stdio bridge shows
                Session(model, Link(recv, conn.sendall), t0).serve(boot=False)
            except OSError:
                pass  # the client went away mid-reply: wait for the next one


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("lib", type=Path, help="library exported by edgekit (model.so)")
    ap.add_argument("--meta", type=Path, help="input/output description (default: LIB with .json)")
    ap.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    ap.add_argument("--kernels", type=Path,
                    help="CUDA fatbin built ahead of time for this library (default: kernels.fatbin beside it)")
    ap.add_argument("--tcp", type=int, metavar="PORT", help="listen on 127.0.0.1:PORT instead of stdio")
    args = ap.parse_args(argv)
    t0 = time.perf_counter_ns()  # m-lap-us counts from start, like a board from boot
    meta_path = args.meta or args.lib.with_suffix(".json")
    beside = args.lib.parent / "kernels.fatbin"  # made by edgekit's nvcc or by build_on_device.sh
    if args.kernels is None and args.device == "cuda" and beside.is_file():
        args.kernels = beside
    for p in (args.lib, meta_path, args.kernels):
        if p is not None and not p.is_file():
            print(f"tvm_runner: {p} not found: deploy it next to the runner", file=sys.stderr)
            return 2
    out_fd = None
    if args.tcp is None:
        # stdout is the protocol: keep a private handle on it and send everything else that
        # writes to fd 1 (TVM's or a library's prints) to stderr, where it cannot corrupt a reply
        out_fd = os.dup(1)
        os.dup2(2, 1)
    model = Model(args.lib, json.loads(meta_path.read_text()), args.device, args.kernels)
    try:
        if args.tcp is not None:
            serve_tcp(model, args.tcp, t0)
        else:
            serve_stdio(model, t0, out_fd)
    except (BrokenPipeError, EOFError, KeyboardInterrupt):
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
