"""Messages/s through the validator over the 271 public samples: in process, and `gateway validate` end to end.

.venv/bin/python bench/validate_samples.py [--rounds 20]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gateway.model.kinds import load_catalog  # noqa: E402
from gateway.validation.schemas import SchemaSet  # noqa: E402
from gateway.validation.validator import Validator  # noqa: E402

SAMPLES = ROOT.parent / "shared" / "standards" / "samples"
BUNDLE = ROOT.parent / "shared" / "standards" / "xsd"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    paths = sorted(SAMPLES.rglob("*.xml"))
    documents = [p.read_bytes() for p in paths]
    started = time.perf_counter()
    catalog = load_catalog(ROOT / "schemas" / "catalog.toml")
    validator = Validator(catalog, SchemaSet(catalog, BUNDLE))
    compiled = time.perf_counter() - started
    for data in documents:  # warm: xmlschema (the explanation path) loads on the first refusal
        validator.judge(data)
    rates, accepted_rates = [], []
    accepted = [d for d in documents if validator.judge(d).accepted]
    for _ in range(args.rounds):
        t = time.perf_counter()
        for data in documents:
            validator.judge(data)
        rates.append(len(documents) / (time.perf_counter() - t))
        t = time.perf_counter()
        for data in accepted:
            validator.judge(data)
        accepted_rates.append(len(accepted) / (time.perf_counter() - t))
    t = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "gateway.cli", "validate", "--quiet", "--schemas", str(BUNDLE), *map(str, paths)],
        capture_output=True,
        check=False,
        cwd=ROOT,
    )
    cli = time.perf_counter() - t
    machine = platform.processor() or platform.machine()
    print(f"machine: {machine}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(f"schemas compiled in {compiled * 1000:.0f} ms")
    print(f"{len(documents)} samples, all verdicts: median {statistics.median(rates):,.0f} messages/s in process")
    print(
        f"{len(accepted)} accepted samples (the hot path, no explanation): median "
        f"{statistics.median(accepted_rates):,.0f} messages/s"
    )
    print(
        f"`gateway validate` on all {len(paths)} files, process start to exit: {cli:.2f} s "
        f"({len(paths) / cli:,.0f} messages/s including start-up)"
    )


if __name__ == "__main__":
    main()
