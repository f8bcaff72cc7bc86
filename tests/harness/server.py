"""A real bildwerk server in a subprocess (uvicorn on 127.0.0.1), so tests can kill it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

BILDWERK = str(Path(sys.executable).parent / "bildwerk")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    def __init__(self, root: Path, model: str | None, *, api_key: str | None = None,
                 max_queue: int | None = None, extra_env: dict[str, str] | None = None,
                 warmup: bool = True) -> None:
        self.root = root
        self.store = root / "store"
        self.model = model
        self.api_key = api_key
        self.max_queue = max_queue
        self.extra_env = extra_env or {}
        self.warmup = warmup
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.log = root / f"server-{self.port}.log"

    def start(self, timeout: float = 90.0) -> ServerProcess:
        args = [BILDWERK, "serve", "--port", str(self.port), "--store", str(self.store)]
        if self.model:
            args += ["--model", self.model]
        if self.api_key:
            args += ["--api-key", self.api_key]
        if self.max_queue:
            args += ["--max-queue", str(self.max_queue)]
        if not self.warmup:
            args.append("--no-warmup")
        env = {**os.environ, "BILDWERK_HOME": str(self.root / "home"), "BILDWERK_DEVICE": "cpu",
               "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
               **self.extra_env}
        env.pop("BILDWERK_API_KEY", None)
        self.proc = subprocess.Popen(args, env=env, stdout=self.log.open("ab"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"server did not start:\n{self.log.read_text()[-3000:]}")

    def wait_ready(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            r = httpx.get(self.url + "/ready", timeout=5)
            if r.status_code == 200:
                return
            time.sleep(0.2)
        raise RuntimeError(f"server not ready: {r.text}\n{self.log.read_text()[-2000:]}")

    def client(self, **kw) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        return httpx.Client(base_url=self.url, timeout=120, headers=headers, **kw)

    def signal(self, sig: int) -> int | None:
        assert self.proc is not None
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def wait_job(client: httpx.Client, job_id: str, timeout: float = 120.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/api/v1/jobs/{job_id}").json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not end: {job}")


def counting_openai_client(base_url: str) -> tuple[object, list[httpx.Request]]:
    """The official openai SDK as users run it (default retries), and every HTTP request it
    sends: how a test tells one call from a retried one."""
    import openai

    sent: list[httpx.Request] = []
    client = openai.OpenAI(base_url=base_url + "/v1", api_key="unused",
                           http_client=httpx.Client(event_hooks={"request": [sent.append]}))
    return client, sent
