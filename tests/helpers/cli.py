"""The operators' CLI run as a process against the suite's database and broker."""
from __future__ import annotations

import os
import subprocess
import sys


def cli(stack, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "DATABASE_URL": stack.database_url, "KAFKA_BOOTSTRAP_SERVERS": stack.bootstrap_servers}
    result = subprocess.run([sys.executable, "-m", "tillstream.cli", *args], env=env, capture_output=True,
                            text=True, timeout=300, stdin=subprocess.DEVNULL)
    if check:
        assert result.returncode == 0, result.stderr[-2000:]
    return result
