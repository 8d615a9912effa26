"""Per-processor benchmark cases built from tests/support/models.py's tiny real models.

Each framework's in-process time is measured in a fresh Python process: TensorFlow and
Paddle cannot share one (both bundle native runtimes), exactly as each service runs in
its own instance process.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

REPO = Path(__file__).resolve().parents[1]
FRAMEWORKS = ("xgboost", "lightgbm", "pmml", "pytorch", "tensorflow", "paddle")
TIMER = """
import pickle, sys, time, statistics
from tests.support.models import native_call
built = pickle.loads(open(sys.argv[1], 'rb').read())
call = native_call(built)
for _ in range(20):
    call()
samples = []
for _ in range(200):
    t0 = time.perf_counter(); call(); samples.append(time.perf_counter() - t0)
print(statistics.median(samples) * 1000)
"""


@dataclass
class Case:
    name: str
    spec: dict[str, Any]
    body: bytes
    content_type: str
    built_pickle: Path

    def in_process_ms(self) -> float:
        out = subprocess.run([sys.executable, "-c", TIMER, str(self.built_pickle)], capture_output=True,
                             text=True, timeout=300, cwd=REPO, check=True).stdout
        return float(out.strip().splitlines()[-1])


def cases(workdir: Path) -> Iterator[Case]:
    from tests.support.models import BUILDERS, build_isolated

    for name in ("sklearn", "onnx", *FRAMEWORKS):
        if name not in BUILDERS:
            continue
        directory = workdir / f"model-{name}"
        try:
            built = build_isolated(name, directory)
        except Exception as exc:  # a framework missing from this venv: say so, go on
            print(f"  (skipping {name}: {str(exc).splitlines()[0]})")
            continue
        spec = built.service(f"bench_{name}")
        spec["metadata"]["cpu"] = 1
        yield Case(name, spec, built.body, built.content_type, directory / f"{name}.built.pickle")



