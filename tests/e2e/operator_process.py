"""Run `infercycle run` as a real subprocess against the local cluster, and kill it at will."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class OperatorProcess:
    """One operator; ``start`` after ``kill`` resumes from what status recorded."""

    def __init__(
        self,
        kubeconfig: str,
        prometheus_url: str,
        log_dir: Path,
        *,
        namespaces: list[str] | None = None,
        cycle_interval: str = "2s",
        dry_run: bool = False,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.extra_env = dict(extra_env or {})
        self.kubeconfig = kubeconfig
        self.prometheus_url = prometheus_url
        self.log_dir = log_dir
        self.namespaces = namespaces or []
        self.cycle_interval = cycle_interval
        self.dry_run = dry_run
        self.metrics_port = free_port()
        self.health_port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def log_path(self) -> Path:
        return self.log_dir / f"operator-{self.starts}.log"

    def start(self) -> None:
        self.starts += 1
        env = {
            **os.environ,
            "KUBECONFIG": self.kubeconfig,
            "INFERCYCLE_PROMETHEUS_URL": self.prometheus_url,
            "INFERCYCLE_CYCLE_INTERVAL": self.cycle_interval,
            "INFERCYCLE_METRICS_PORT": str(self.metrics_port),
            "INFERCYCLE_HEALTH_PORT": str(self.health_port),
            "INFERCYCLE_NAMESPACES": ",".join(self.namespaces),
            "INFERCYCLE_DRY_RUN": "true" if self.dry_run else "false",
            "INFERCYCLE_QUERY_TIMEOUT": "3s",
            "INFERCYCLE_AGENT_TIMEOUT": "10s",
            "INFERCYCLE_LOG_FORMAT": "text",
            **self.extra_env,
        }
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "infercycle.cli", "run"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.wait_healthy()

    def wait_healthy(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                msg = f"operator exited with {self.process.returncode}:\n{self.tail()}"
                raise RuntimeError(msg)
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{self.health_port}/healthz", timeout=2
                ) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.5)
        msg = f"operator not healthy within {timeout}s:\n{self.tail()}"
        raise RuntimeError(msg)

    def kill(self) -> None:
        """SIGKILL: no cleanup, no chance to finish the step in hand."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()

    def metrics(self) -> str:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5
        ) as answer:
            return str(answer.read().decode())

    def metric_value(self, name: str, **labels: str) -> float:
        total = 0.0
        for line in self.metrics().splitlines():
            if not line.startswith(name) or line.startswith("#"):
                continue
            head, _, value = line.rpartition(" ")
            if all(f'{key}="{val}"' in head for key, val in labels.items()):
                total += float(value)
        return total

    def tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"
