"""The demo server's memory as a host sees it: its true peak while a visitor opens every page and classifies a
photo (``tests/test_demo.py``'s visit), and whether it still serves that visit under a host's memory limit.

    python -m bench.demo_memory                          # no limit, then 1,024 and 690 MiB (Streamlit's range)
    python -m bench.demo_memory --limits 768 --venv DIR  # a server from another environment (requirements.txt)

Why the limited runs: the peak resident memory counts TensorFlow's library code mapped from disk, which a host's
kernel drops and reads again when a memory limit presses; what cannot go is the anonymous memory. Only running
under a limit shows which of the two decides. A limit is a Linux memory cgroup, as container hosts set one
(v1 ``memory`` controller or v2 ``memory.max``); making one needs root, otherwise those rows say "not measured".
The page cache is dropped first where allowed, so that the libraries are read (and charged) inside the limit as
on a fresh host. Every run is timed; the ratio is its time over the unlimited run's, measured in the same run.
Needs Playwright and Chromium (requirements-dev.txt; ``apt-get install chromium``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

V1 = Path("/sys/fs/cgroup/memory")
V2 = Path("/sys/fs/cgroup")


def make_cgroup(limit_mib: int) -> tuple[Path | None, str]:
    """A fresh memory cgroup limited to ``limit_mib`` (no swap), or ``(None, why not)``."""
    name = f"two_stage_bench_{uuid.uuid4().hex[:8]}"
    limit = str(limit_mib * 2**20)
    try:
        if (V1 / "memory.limit_in_bytes").exists():
            group = V1 / name
            group.mkdir()
            (group / "memory.limit_in_bytes").write_text(limit)
        elif "memory" in (V2 / "cgroup.subtree_control").read_text():
            group = V2 / name
            group.mkdir()
            (group / "memory.max").write_text(limit)
            (group / "memory.swap.max").write_text("0")
        else:
            return None, "no memory cgroup controller here"
    except OSError as exc:
        return None, f"cannot make a memory cgroup ({exc.strerror}; run as root)"
    return group, ""


def oom_kills(group: Path) -> int:
    for name in ("memory.oom_control", "memory.events"):
        path = group / name
        if path.exists():
            for line in path.read_text().splitlines():
                if line.startswith("oom_kill "):
                    return int(line.split()[1])
    return 0


def drop_page_cache() -> bool:
    try:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("1")
        return True
    except OSError:
        return False


def one_visit(streamlit: str, limit_mib: int | None) -> dict:
    """Serve the app in demo mode (inside a limited cgroup when ``limit_mib``), make the visit, measure."""
    from tests.test_browser import running_app
    from tests.test_classify import jpeg_with_exif_rotation
    from tests.test_demo import status_field, visit_and_classify

    row: dict = {"limit_mib": limit_mib}
    group, why = make_cgroup(limit_mib) if limit_mib else (None, "")
    if limit_mib and group is None:
        return {**row, "result": f"not measured: {why}"}
    launch = [streamlit]
    if group is not None:
        launch = ["sh", "-c", f'echo $$ > {group}/cgroup.procs && exec "$0" "$@"', streamlit]
    row["page_cache_dropped"] = drop_page_cache()
    base = Path(tempfile.mkdtemp(prefix="demo_memory_"))
    photo = base / "photo.jpg"
    photo.write_bytes(jpeg_with_exif_rotation())
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env.update(TWO_STAGE_DEMO="1", TWO_STAGE_CACHE=str(base / "cache"), TF_CPP_MIN_LOG_LEVEL="3")
    steps: list[str] = []
    started = time.perf_counter()
    try:
        with running_app(launch, env, base / "streamlit.log") as (url, proc):
            try:
                visit_and_classify(url, photo, steps.append)
                row["result"] = "served the whole visit"
            except Exception as exc:  # noqa: BLE001 - a failed visit is this benchmark's finding
                row["result"] = f"failed after {steps[-1] if steps else 'the start'}: {str(exc).splitlines()[0]}"
            row["seconds"] = round(time.perf_counter() - started, 1)
            if proc.poll() is None:
                row["peak_rss_mib"] = round((status_field(proc.pid, "VmHWM") or 0) / 2**20)
                row["anonymous_mib_at_end"] = round((status_field(proc.pid, "RssAnon") or 0) / 2**20)
            else:
                row["result"] += f" (the server died, exit {proc.returncode})"
    finally:
        if group is not None:
            row["oom_kills"] = oom_kills(group)
            time.sleep(1)
            try:
                group.rmdir()
            except OSError:
                pass
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--venv", type=Path, help="serve with this environment's streamlit (default: this one's)")
    parser.add_argument("--limits", type=int, nargs="*", default=[1024, 690], help="memory limits in MiB")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "demo_memory.json")
    args = parser.parse_args(argv)
    streamlit = str(args.venv / "bin" / "streamlit") if args.venv else str(Path(sys.executable).parent / "streamlit")
    rows = [one_visit(streamlit, None)] + [one_visit(streamlit, limit) for limit in args.limits]
    reference = rows[0].get("seconds")
    for row in rows:
        if reference and row.get("seconds"):
            row["time_ratio"] = round(row["seconds"] / reference, 2)
        limit = f"{row['limit_mib']} MiB" if row["limit_mib"] else "none"
        print(f"limit {limit:>9} | {row['result']} | peak RSS {row.get('peak_rss_mib', '-')} MiB | anonymous at "
              f"end {row.get('anonymous_mib_at_end', '-')} MiB | OOM kills {row.get('oom_kills', '-')} | "
              f"{row.get('seconds', '-')} s (x{row.get('time_ratio', '-')})")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"date": time.strftime("%Y-%m-%d %H:%M"), "rows": rows}, indent=2))
    print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
