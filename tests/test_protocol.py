"""The protocol core: every EEMBC command and ek-* extension on both QEMU boards, and the core under
AddressSanitizer (random and malformed commands) and libFuzzer."""
import random
import shutil
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pytest

from edgekit import firmware, flash, target
from edgekit.link import Device, DeviceError, TransferError, frame

HASH = "c0ffee00" * 8
COMMON = firmware.FIRMWARE / "common"
needs_qemu = pytest.mark.skipif(not (shutil.which("arm-none-eabi-gcc") and shutil.which("qemu-system-arm")),
                                reason="arm-none-eabi-gcc and qemu-system-arm needed (apt-get install "
                                       "gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm)")


def reference(x: np.ndarray, n_out: int = 4) -> np.ndarray:
    """The fake model in float32, summing in the firmware's order."""
    s = np.float32(0)
    for v in x * np.float32(0.5):
        s = np.float32(s + v)
    return s * np.arange(1, n_out + 1, dtype=np.float32)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return firmware.fake_model(tmp_path_factory.mktemp("fake"))


# "+arena": the core keeps the input in the model's arena slot (what a board short of RAM gets)
@pytest.fixture(scope="module", params=["mps2-an386", "mps2-an500", "mps2-an386+arena"])
def board(request, model, tmp_path_factory):
    if not (shutil.which("arm-none-eabi-gcc") and shutil.which("qemu-system-arm")):
        pytest.skip("arm-none-eabi-gcc and qemu-system-arm needed")
    name, arena = request.param.removesuffix("+arena"), request.param.endswith("+arena")
    t = target.get(name)
    r = firmware.build_firmware(t, model, "fake", HASH, tmp_path_factory.mktemp(t.name), input_in_arena=arena)
    assert r["memory"]["input_in_arena"] == arena
    with flash.emulate(t, r["firmware"]) as url, Device(url, timeout=3) as dev:
        yield t, r["firmware"], dev


@needs_qemu
def test_results_before_any_inference(board):
    t, elf, _ = board
    with flash.emulate(t, elf) as url, Device(url, timeout=3) as dev:  # a fresh boot
        with pytest.raises(DeviceError, match=r"e-\[No results"):
            dev.command("results")
        with pytest.raises(DeviceError, match=r"e-\[ek-read: no results"):
            dev.command("ek-read")


@needs_qemu
def test_standard_commands(board):
    t, _, dev = board
    assert dev.command("name") == [f"m-name-dut-[{t.name}]"]
    assert dev.command("profile") == ["m-profile-[ULPMark for tinyML Firmware V0.0.1]", "m-model-[fake]"]
    assert any(ln.startswith("infer N [W]") for ln in dev.command("help"))
    t0, t1 = (int(dev.command("timestamp")[0].removeprefix("m-lap-us-")) for _ in range(2))
    assert 0 < t0 <= t1
    x = np.random.default_rng(1).standard_normal(64).astype(np.float32)
    raw = x.tobytes()
    assert dev.command(f"db load {len(raw)}") == [f"m-[Expecting {len(raw)} bytes]"]
    for i in range(0, len(raw), 31):  # the EEMBC runner's 31 bytes a line
        reply = dev.command("db " + raw[i:i + 31].hex())
        assert reply == (["m-load-done"] if i + 31 >= len(raw) else [])
    assert dev.command("db print 10 3") == ["m-buffer-" + "-".join(f"{b:02x}" for b in raw[3:11]),
                                            "m-buffer-" + "-".join(f"{b:02x}" for b in raw[11:13])]
    assert len(dev.command("db print")) == 2  # 16 bytes by default
    lines = dev.command("infer 3 2")
    assert [ln.split("-", 2)[1] for ln in lines] == ["warmup", "warmup", "infer", "lap", "lap", "infer", "results"]
    assert lines[:3] == ["m-warmup-start-2", "m-warmup-done", "m-infer-start-3"] and lines[5] == "m-infer-done"
    assert int(lines[3][9:]) <= int(lines[4][9:])
    got = np.array([float(v) for v in lines[6].removeprefix("m-results-[").removesuffix("]").split(",")])
    np.testing.assert_allclose(got, reference(x), rtol=2e-6)
    assert dev.command("results") == [lines[6]]
    assert dev.command("infer 1")[0] == "m-warmup-start-10"  # W defaults to 10


@needs_qemu
@pytest.mark.parametrize("cmd,error", [
    ("infer 0", "e-[Inference iterations must be >0]"), ("infer", "e-[Inference iterations must be >0]"),
    ("infer x", "e-[Inference iterations must be >0]"), ("infer 1 -1", "e-[infer: warmup"),
    ("infer 4294967296", "e-[Inference iterations must be >0]"), ("infer 1000000000", "e-[infer: too many"),
    ("bogus 1 2", "e-[Unknown command: bogus]"), ("a b c d e f g", "e-[Too many arguments]"),
    ("db load 0", "e-[db load: N must be 256, the input's size in bytes]"),
    ("db load 255", "e-[db load: N must be 256"), ("db load 257", "e-[db load: N must be 256"),
    ("db load -1", "e-[db load"), ("db print 17 240", "e-[db print"), ("db print x", "e-[db print"),
    ("db 0g", "e-[db"), ("db abc", "e-[db"), ("db load", "e-[db: use"), ("db", "e-[db: use"),
    ("ek-load", "e-[ek-load: use"), ("ek-load 4 xyz", "e-[ek-load: use"), ("ek-load 4 123456789", "e-[ek-load: use"),
    ("ek-load 257 0", "e-[ek-load: use"), ("ek-load 4 0 253", "e-[ek-load: use"), ("ek-load 0 0", "e-[ek-load: use"),
    ("ek-read 17", "e-[ek-read: N offset"), ("ek-read 4 13", "e-[ek-read: N offset"), ("ek-read 1 2 3", "e-[ek-read"),
    ("ek-time 0", "e-[ek-time"), ("ek-time", "e-[ek-time"), ("ek-time 99999999999", "e-[ek-time"),
])
def test_bad_commands_get_an_error_and_the_board_keeps_serving(board, cmd, error):
    _, _, dev = board
    with pytest.raises(DeviceError) as e:
        dev.command(cmd)
    assert str(e.value).endswith(error) or error in str(e.value)
    assert dev.command("name")[0].startswith("m-name-dut-")


@needs_qemu
def test_db_protocol_order_and_overrun(board):
    _, _, dev = board
    dev.command("db load 256")
    assert dev.command("db " + "00" * 30) == []
    with pytest.raises(DeviceError, match=r"e-\[db load incomplete: 30 of 256 bytes"):  # a partial input never runs
        dev.command("infer 1 0")
    for _ in range(7):
        assert dev.command("db " + "00" * 31) == []
    with pytest.raises(DeviceError, match="more bytes than"):
        dev.command("db " + "00" * 10)
    assert dev.command("db " + "00" * 9) == ["m-load-done"]
    assert dev.command("infer 1 0")[-1] == "m-results-[0,0,0,0]"
    with pytest.raises(DeviceError, match="no load in progress"):
        dev.command("db 00")


@needs_qemu
def test_oversize_and_garbage_lines(board):
    _, _, dev = board
    dev.port.write(b"x" * 200 + b"%")
    with pytest.raises(DeviceError, match=r"Command too long"):
        dev._reply("x" * 200)
    dev.port.write(b"\r\n%")  # an empty command only answers m-ready
    assert dev._reply("") == []
    dev.port.write(bytes(range(1, 37)) + b"%")  # control bytes and NUL-free binary junk
    with pytest.raises(DeviceError, match="Unknown command"):
        dev._reply("junk")
    assert dev.command("name")


@needs_qemu
def test_extensions(board):
    t, _, dev = board
    info = dev.info()
    assert info == {**info, "name": "fake", "hash": HASH[:16], "board": t.name, "input": 256, "output": 16,
                    "arena": 256, "layers": 3, "counter": "instructions", "per_us": 1000}
    assert dev.counter == "instructions" and "SysTick" in info["timer"]
    x = np.random.default_rng(2).uniform(-9, 9, 64).astype(np.float32)
    dev.load_input(x.tobytes())
    assert dev.command("db print 8") == ["m-buffer-" + "-".join(f"{b:02x}" for b in x.tobytes()[:8])]
    np.testing.assert_array_equal(np.frombuffer(dev.infer(), np.float32), reference(x))
    counts = dev.measure(4)
    assert len(counts) == 4 and min(counts) > 0
    assert max(counts) - min(counts) <= 80  # icount: instruction counts repeat to a SysTick tick (40) or so
    prof = dev.profile()
    assert [name for name, _ in prof] == ["scale", "sum", "dense"] and all(c >= 0 for _, c in prof)
    assert sum(c for _, c in prof) <= max(counts) + 200
    dev._send("ek-read 4 4")  # the reply's CRC covers the raw bytes too
    assert dev._next("ek-read", 3) == f"m-ek-read-4-{zlib.crc32(x.tobytes()):08x}"  # the results' input
    assert dev._raw(6, 3, "ek-read") == reference(x)[1:2].tobytes() + b"\r\n"
    dev._end("ek-read")


@needs_qemu
def test_ek_commands_and_replies_carry_crcs(board):
    _, _, dev = board
    x = np.random.default_rng(5).standard_normal(64).astype(np.float32)
    dev.load_input(x.tobytes())
    for text in ("ek-info", "ek-info 0badc0de", "ek-time 1 0badc0de", frame("ek-time 1")[:-1]):  # no or a wrong CRC
        dev.port.write(text.encode() + b"%")
        assert dev.port.read_until(b"m-ready\r\n").startswith(b"e-[damaged command: crc mismatch, send it again]\r\n")
    with pytest.raises(TransferError, match=r"e-\[damaged input: crc [0-9a-f]{8} expected 0badc0de, load it again\]"):
        dev.command("ek-time 1 0badc0de")  # the whole input is checked before a run
    assert dev.command(f"ek-time 1 {zlib.crc32(x.tobytes()):08x}")[0] == f"m-ek-input-{zlib.crc32(x.tobytes()):08x}"
    assert dev.command("ek-sync 1234abcd") == ["m-ek-sync-1234abcd"]
    dev.port.write(frame("ek-sync 5").encode() + b"%")
    reply = dev.port.read_until(b"m-ready\r\n")
    body, end = reply[:reply.index(b"m-ek-end-")], reply[reply.index(b"m-ek-end-"):]
    assert end == f"m-ek-end-{zlib.crc32(body):08x}\r\nm-ready\r\n".encode()
    with pytest.raises(DeviceError, match="ek-sync: use"):
        dev.command("ek-sync " + "x" * 17)


def results(lines):
    line = next(ln for ln in lines if ln.startswith("m-results-["))
    return np.array([float(v) for v in line.removeprefix("m-results-[").removesuffix("]").split(",")], np.float32)


@needs_qemu
def test_input_in_the_arena_serves_repeated_runs(tmp_path):
    """The input in the model's arena slot, which each run overwrites: repeated runs on one load still see
    it (restored from the core's compact copy), or are refused when no copy fits; never run on garbage."""
    n_in = 1024
    model = firmware.fake_model(tmp_path / "m", n_in=n_in)
    t = target.get("mps2-an386")
    elf = firmware.build_firmware(t, model, "fake", HASH, tmp_path / "fw", input_in_arena=True)["firmware"]
    rng = np.random.default_rng(3)
    pixels = (rng.integers(0, 256, n_in) / np.float32(127.5) - 1).astype(np.float32)  # 8-bit image data
    with flash.emulate(t, elf) as url, Device(url, timeout=10) as dev:
        dev.load_input(pixels.tobytes())
        np.testing.assert_allclose(results(dev.command("infer 3 2")), reference(pixels), rtol=2e-6)
        np.testing.assert_allclose(results(dev.command("infer 1 0")), reference(pixels), rtol=2e-6)
        counts = dev.measure(3)
        assert max(counts) - min(counts) <= 80  # the restore is not counted
        assert np.frombuffer(dev.read_output(), np.float32).tobytes() == reference(pixels).tobytes()
        assert dev.command("db print 8 4") == ["m-buffer-" + "-".join(f"{b:02x}" for b in pixels.tobytes()[4:12])]
        # a partial load after a run lands on the restored input, not on what the run left in the slot
        part = np.float32(0.25).tobytes()
        cmd = f"ek-load 4 {zlib.crc32(part):08x} 8"
        dev._send(cmd)
        dev._expect(cmd, "m-ek-load-ready-4", 3)
        dev.port.write(part)
        dev._expect(cmd, f"m-ek-load-done-{zlib.crc32(part):08x}", 3)
        dev._end(cmd)
        edited = pixels.copy()
        edited[2] = 0.25
        np.testing.assert_allclose(results(dev.command("infer 1 0")), reference(edited), rtol=2e-6)
        dev.load_input(edited.tobytes())
        assert len(dev.profile()) == 3
        np.testing.assert_array_equal(np.frombuffer(dev.infer(), np.float32), reference(edited))

        wide = rng.standard_normal(n_in).astype(np.float32)  # 1024 distinct values: no compact copy
        dev.load_input(wide.tobytes())
        for cmd in ("infer 2 0", "infer 1", "ek-time 2"):
            with pytest.raises(DeviceError, match=r"e-\[input has over 256 distinct"):
                dev.command(cmd)
        np.testing.assert_allclose(np.frombuffer(dev.infer(), np.float32), reference(wide), rtol=2e-6)
        for cmd in ("infer 1 0", "ek-time 1", "ek-profile", "db print 4"):
            with pytest.raises(DeviceError, match=r"e-\[input consumed by the last inference"):
                dev.command(cmd)
        assert dev.command("results") and dev.read_output() == reference(wide).tobytes()  # the results stay
        np.testing.assert_allclose(np.frombuffer(dev.infer(wide.tobytes()), np.float32), reference(wide), rtol=2e-6)


# ---- the core on the host, under sanitizers ----
WORDS = ["name", "profile", "help", "timestamp", "db", "load", "print", "infer", "results", "ek-info", "ek-read",
         "ek-time", "ek-profile", "0", "1", "3", "16", "255", "256", "257", "4294967295", "4294967296", "-1",
         "ff", "zz", "0102", "012", "deadbeef", "", " "]


def random_commands(rng: random.Random, n: int, binary: bool) -> bytes:
    out = bytearray()
    for _ in range(n):
        r = rng.random()
        if r < 0.6:
            cmd = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 8))).encode()
        elif r < 0.8:
            cmd = b"db " + bytes(rng.randrange(256) for _ in range(rng.randint(0, 45))).hex().encode()[:rng.randint(0, 90)]
        elif r < 0.9 or not binary:
            cmd = bytes(rng.choice(b"abcdefgz0123 \r\n\x00\xff-") for _ in range(rng.randint(0, 160)))
        else:  # a binary load, honest or not, followed by whatever
            cmd = f"ek-load {rng.randint(0, 300)} {rng.randrange(2**32):x} {rng.randint(0, 300)}%".encode()
            cmd += rng.randbytes(rng.randint(0, 300))
        out += cmd.replace(b"%", b"") + b"%" if not cmd.endswith(b"%") else cmd
    return bytes(out)


def host_build(tmp, model, cc, flags, sources):
    (tmp / "ek_model_config.h").write_text(firmware.model_config("fake", HASH, "host"))
    srcs = [COMMON / "ek_protocol.c", COMMON / "ek_crc32.c", COMMON / "ek_io.c", *sources, *sorted(model.glob("*.c"))]
    return firmware.compile_c(cc, srcs, [tmp, model, COMMON], flags, tmp / "prog")


@pytest.fixture(scope="module", params=[[], [firmware.IN_ARENA]], ids=["own-buffer", "in-arena"])
def asan_prog(request, model, tmp_path_factory):
    return host_build(tmp_path_factory.mktemp("asan"), model, "gcc",
                      ["-g", "-O1", "-fsanitize=address,undefined", "-fno-sanitize-recover=all", *request.param],
                      [COMMON / "ek_main.c", firmware.FIRMWARE / "ports" / "linux" / "ek_port.c"])


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("binary", [False, True])
def test_asan_random_and_malformed_commands(asan_prog, seed, binary):
    stream = random_commands(random.Random(seed), 2000, binary)
    p = subprocess.run([str(asan_prog)], input=stream, capture_output=True, timeout=120)
    assert p.returncode == 0, p.stderr.decode(errors="replace")[-2000:]
    assert b"Sanitizer" not in p.stderr and b"runtime error" not in p.stderr
    if not binary:  # every % gets exactly one m-ready (plus the boot one)
        assert p.stdout.count(b"m-ready\r\n") == stream.count(b"%") + 1


@pytest.mark.parametrize("flags", [[], [firmware.IN_ARENA]], ids=["own-buffer", "in-arena"])
def test_libfuzzer(model, tmp_path, flags):
    if not shutil.which("clang"):
        pytest.skip("clang not installed (apt-get install clang libclang-rt-14-dev)")
    runtime = subprocess.run(["clang", "-print-runtime-dir"], capture_output=True, text=True).stdout.strip()
    if not list(Path(runtime).glob("libclang_rt.fuzzer-*.a")):
        pytest.skip("libFuzzer runtime missing (apt-get install libclang-rt-14-dev)")
    # with the runtime there, a failing build is the core's fault: let it fail the test
    prog = host_build(tmp_path, model, "clang",
                      ["-g", "-O1", "-fsanitize=fuzzer,address,undefined", "-DEK_MAX_ITERS=64", *flags],
                      [firmware.FIRMWARE / "fuzz" / "ek_fuzz.c"])
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i, seed in enumerate([b"\x00name%infer 2 1%results%", b"\x00db load 4%db 01020304%db print 4 0%",
                              b"\x01ek-load 4 b63cfbcd%\x01\x02\x03\x04ek-read%", b"\x01ek-time 2%ek-profile%ek-info%",
                              b"\x01ek-time 1 b63cfbcd%ek-sync 1%ek-read 4 4%", b"\x00" + frame("ek-info").encode() + b"%"]):
        (corpus / str(i)).write_bytes(seed)
    p = subprocess.run([str(prog), "-max_total_time=8", "-seed=1", "-max_len=512", str(corpus)],
                       capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
