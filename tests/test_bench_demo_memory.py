"""bench.demo_memory's plumbing without a browser or root: the memory cgroup it makes (on a stand-in folder),
the OOM-kill count it reads, and the table it writes with each run's time over the unlimited run's."""

from __future__ import annotations

import json

from bench import demo_memory


def test_a_v1_memory_cgroup_gets_its_limit_and_its_oom_kills_are_read(tmp_path, monkeypatch):
    (tmp_path / "memory.limit_in_bytes").write_text("9223372036854771712")
    monkeypatch.setattr(demo_memory, "V1", tmp_path)
    group, why = demo_memory.make_cgroup(690)
    assert why == "" and group.parent == tmp_path
    assert (group / "memory.limit_in_bytes").read_text() == str(690 * 2**20)
    (group / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n")
    assert demo_memory.oom_kills(group) == 2


def test_without_a_memory_controller_the_limited_runs_say_why(tmp_path, monkeypatch):
    (tmp_path / "v2").mkdir()
    (tmp_path / "v2" / "cgroup.subtree_control").write_text("cpu pids")
    monkeypatch.setattr(demo_memory, "V1", tmp_path / "none")
    monkeypatch.setattr(demo_memory, "V2", tmp_path / "v2")
    assert demo_memory.make_cgroup(1024) == (None, "no memory cgroup controller here")
    row = demo_memory.one_visit("streamlit", 1024)
    assert row == {"limit_mib": 1024, "result": "not measured: no memory cgroup controller here"}


def test_the_table_puts_each_run_against_the_unlimited_one(tmp_path, monkeypatch, capsys):
    seconds = {None: 20.0, 1024: 22.0, 690: None}

    def visit(streamlit, limit):
        row = {"limit_mib": limit, "result": "served the whole visit"}
        if seconds[limit]:
            row["seconds"] = seconds[limit]
        return row

    monkeypatch.setattr(demo_memory, "one_visit", visit)
    out = tmp_path / "m.json"
    assert demo_memory.main(["--limits", "1024", "690", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r.get("time_ratio") for r in rows] == [1.0, 1.1, None]
    assert "limit  1024 MiB | served the whole visit" in capsys.readouterr().out
