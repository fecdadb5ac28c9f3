"""The side-by-side run: LiteLLM's proxy in front of the same emulator (`bench --litellm`).

LiteLLM is never a portal dependency, so it gets a venv of its own under .bench/ (git-ignored),
made on first use with pip. Its proxy forwards the OpenAI shape to the emulator's
`/v1/chat/completions`, so the same directive paces the same upstream on every path. It runs
without a database (no spend logs): less work per request than the portal does.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from gateway_portal.bench.processes import BENCH_DIR
from gateway_portal.child_processes import ChildProcess, HttpAnswers, free_port

VENV = BENCH_DIR / "litellm-venv"
MASTER_KEY = "sk-bench"


def ensure_venv(say) -> Path:
    """The venv's `litellm` executable, installing `litellm[proxy]` the first time."""
    executable = VENV / "bin" / "litellm"
    if executable.exists():
        return executable
    say(f"Installing LiteLLM's proxy into {VENV} (first time only, a minute or two) …")
    BENCH_DIR.mkdir(exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    with open(BENCH_DIR / "litellm-install.log", "wb") as log:
        subprocess.run([str(VENV / "bin" / "pip"), "install", "litellm[proxy]"], check=True, stdout=log, stderr=subprocess.STDOUT)
    return executable


def version() -> str:
    result = subprocess.run([str(VENV / "bin" / "python"), "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
                            capture_output=True, text=True)
    return result.stdout.strip() or "unknown"


def write_config(emulator_url: str) -> Path:
    path = BENCH_DIR / "litellm.yaml"
    path.write_text(
        "model_list:\n"
        "  - model_name: gpt-4\n"
        "    litellm_params:\n"
        "      model: openai/gpt-4\n"
        f"      api_base: {emulator_url}/v1\n"
        "      api_key: x\n"
    )
    return path


@dataclass
class LiteLLM:
    child: ChildProcess
    port: int
    workers: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command_line(self) -> str:
        return " ".join(self.child.args)

    def stop(self) -> None:
        self.child.stop(grace=15)


def start(executable: Path, emulator_url: str, workers: int, *, startup_timeout: float = 240) -> LiteLLM:
    config = write_config(emulator_url)
    port = free_port()
    args = [str(executable), "--config", str(config), "--host", "127.0.0.1", "--port", str(port)]
    if workers > 1:
        args += ["--num_workers", str(workers)]
    env = dict(os.environ, LITELLM_MASTER_KEY=MASTER_KEY, LITELLM_LOCAL_MODEL_COST_MAP="True")
    env.pop("DATABASE_URL", None)  # LiteLLM would try to use the portal's database
    child = ChildProcess.start(args, name=f"LiteLLM ({workers} worker(s))", cwd=BENCH_DIR, env=env,
                               output=BENCH_DIR / f"litellm-{workers}.log", die_with_parent=True)
    proxy = LiteLLM(child, port, workers)
    child.wait_ready(HttpAnswers(proxy.url + "/health/liveliness"), startup_timeout, interval=0.1)
    return proxy
