"""A noisy serial line for tests and `make soak`: a pty the host opens, forwarding to a device (a pty path,
or socket://HOST:PORT), that drops, bit-flips and inserts random bytes in both directions.

    python tests/fault_proxy.py DEVICE [--rate 0.003] [--seed 1]    # prints the pty to give as --port

Each byte is hit with probability `rate` (settable while it runs; 0 makes a healthy line), by one fault
drawn evenly from drop, flip (one random bit) and insert (a random byte before it). `faults` counts them.
`drive` runs inferences through it with edgekit.link.Device and counts what came back.
"""
from __future__ import annotations

import argparse
import os
import random
import select
import socket
import threading
import traceback
import tty
from collections import Counter


class FaultProxy:
    def __init__(self, device: str, rate: float, seed: int = 1):
        self.rate, self.rng, self.faults = rate, random.Random(seed), 0
        if device.startswith("socket://"):
            host, port = device[len("socket://"):].rsplit(":", 1)
            self.sock = socket.create_connection((host, int(port)))
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.dev = self.sock.fileno()
        else:
            self.sock, self.dev = None, os.open(device, os.O_RDWR | os.O_NOCTTY)
            tty.setraw(self.dev)
        self.master, self.slave = os.openpty()  # we hold the slave open: the master never reads EOF between hosts
        tty.setraw(self.master)
        tty.setraw(self.slave)
        self.url = os.ttyname(self.slave)
        self.stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def damage(self, data: bytes, way: str) -> bytes:
        """data as passed on, on its way "in" (host to device) or "out"."""
        out = bytearray()
        for b in data:
            if self.rng.random() < self.rate:
                self.faults += 1
                kind = self.rng.randrange(3)
                if kind == 0:
                    continue
                if kind == 1:
                    b ^= 1 << self.rng.randrange(8)
                else:
                    out.append(self.rng.randrange(256))
            out.append(b)
        return bytes(out)

    def _run(self) -> None:
        try:
            while not self.stop:
                for fd in select.select([self.dev, self.master], [], [], 0.05)[0]:
                    data = os.read(fd, 4096)
                    if not data:
                        return
                    if fd == self.dev:
                        _write_all(self.master, self.damage(data, "out"))
                    else:
                        _write_all(self.dev, self.damage(data, "in"))
        except OSError:
            pass  # an end went away: the host sees its port go too once we close

    def close(self) -> None:
        """Stop forwarding and close every end: to the host, the board has gone."""
        self.stop = True
        self.thread.join()
        for fd in (self.master, self.slave):
            os.close(fd)
        self.sock.close() if self.sock else os.close(self.dev)

    def __enter__(self) -> "FaultProxy":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data):]


errors = Counter()  # messages of the errors raised


def outcome(fn, want) -> str:
    """exact, silent (a wrong answer and no error), error (edgekit's own) or exception (any other)."""
    from edgekit.errors import UsageError, WorkError
    try:
        got = fn()
    except (UsageError, WorkError) as e:
        errors[str(e)[:90]] += 1
        return "error"
    except Exception:
        traceback.print_exc()
        return "exception"
    return "exact" if got == want else "silent"


def drive(device: str, rate: float, seed: int, faults: int, n_in: int, reference, timeout: float = 0.5) -> Counter:
    """Inferences of random inputs (n_in float32) through a FaultProxy on `device` until `faults` faults are
    injected; every tenth call asks ek-info instead. After each error one inference on a healthy line must be
    exact (recovered), or the link is stuck."""
    import numpy as np
    from edgekit.link import Device
    rng, n = np.random.default_rng(seed), Counter()

    def infer():
        x = rng.standard_normal(n_in).astype(np.float32)
        return outcome(lambda: dev.infer(x.tobytes()), reference(x).tobytes())

    with FaultProxy(device, 0, seed) as proxy, Device(proxy.url, timeout=timeout, infer_timeout=10 * timeout) as dev:
        truth = dev.info()
        proxy.rate = rate
        while proxy.faults < faults:
            if n["calls"] % 10 == 9:
                got = outcome(dev.info, truth)
                n["info ok" if got == "exact" else got] += 1
            else:
                n[infer()] += 1
                n["inferences"] += 1
            n["calls"] += 1
            if n["error"] > n["recovered"] + n["stuck"]:
                proxy.rate = 0
                n["recovered" if infer() == "exact" else "stuck"] += 1
                proxy.rate = rate
        n["faults"] = proxy.faults
        n["retried"] = dev.retried
    return n


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("device", help="the device's pty path or socket://HOST:PORT")
    ap.add_argument("--rate", type=float, default=0.003, help="fault probability per byte")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    proxy = FaultProxy(args.device, args.rate, args.seed)
    print(proxy.url, flush=True)
    try:
        proxy.thread.join()
    except KeyboardInterrupt:
        pass
    finally:
        print(f"{proxy.faults} faults injected", flush=True)
