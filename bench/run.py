"""Run every benchmark module under bench/: ``bench/bench_*.py``, each with a ``main()``.

Each module prints its own table (with the baseline measured in the same run) and writes
``bench/results/<name>.json``. Modules run one after the other, in name order, so they do not
compete for the machine's cores. ``python bench/run.py NAME ...`` runs only those modules
(``sandboxd`` for ``bench_sandboxd.py``). Exits non-zero if any module failed.
"""

from __future__ import annotations

import importlib.util
import sys
import time
import traceback
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent


def discover(names: list[str]) -> list[Path]:
    """The bench_*.py files to run: all of them, or only those named."""
    modules = sorted(BENCH_DIR.glob("bench_*.py"))
    if not names:
        return modules
    wanted = {name.removeprefix("bench_").removesuffix(".py") for name in names}
    chosen = [m for m in modules if m.stem.removeprefix("bench_") in wanted]
    missing = wanted - {m.stem.removeprefix("bench_") for m in chosen}
    if missing:
        raise SystemExit(f"no such benchmark: {', '.join(sorted(missing))}")
    return chosen


def run_module(path: Path) -> bool:
    """Import `path` and call its main(); False (with the traceback printed) if it failed."""
    spec = importlib.util.spec_from_file_location(f"bench.{path.stem}", path)
    if spec is None or spec.loader is None:
        print(f"{path.name}: cannot be imported", file=sys.stderr)
        return False
    module = importlib.util.module_from_spec(spec)
    started = time.monotonic()
    print(f"== {path.name}", flush=True)
    try:
        spec.loader.exec_module(module)
        module.main()
    except Exception:
        traceback.print_exc()
        print(f"== {path.name}: FAILED after {time.monotonic() - started:.0f} s", flush=True)
        return False
    print(f"== {path.name}: done in {time.monotonic() - started:.0f} s", flush=True)
    return True


def main(argv: list[str]) -> int:
    """Run the benchmarks named in argv (all when none); 1 if any failed."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    (BENCH_DIR / "results").mkdir(exist_ok=True)
    results = [run_module(path) for path in discover(argv)]
    return 0 if all(results) else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
