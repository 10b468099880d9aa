"""What a record says about where and how precisely it was computed (core/training/env.py)."""

from __future__ import annotations

import subprocess

import pytest

from core.training import env

jax = pytest.importorskip("jax", reason="the float32 setting concerns JAX runs")


@pytest.fixture
def jax_precision():
    """Restores JAX's matmul precision after a test that changes it."""
    before = jax.config.jax_default_matmul_precision
    yield
    jax.config.update("jax_default_matmul_precision", before)


def test_a_cpu_run_computes_float32_anyway_and_says_nothing_about_it():
    assert env.backend() == "tensorflow" and env.device().startswith("CPU")
    env.apply_precision("float32")
    assert env.precision_support("float32") == {"name": "float32", "bf16_units": None, "note": None}
    assert env.precision_support("tf32")["note"] == env.TF32_ON_CPU  # asked for, not available here


@pytest.mark.parametrize("precision, expected", [("float32", "highest"), ("tf32", "tensorfloat32")])
def test_a_jax_run_on_a_gpu_computes_at_its_protocol_s_precision_and_its_record_says_so(monkeypatch, jax_precision,
                                                                                       precision, expected):
    monkeypatch.setattr(env, "backend", lambda: "jax")
    monkeypatch.setattr(env, "device", lambda: "GPU: NVIDIA H200")
    jax.config.update("jax_default_matmul_precision", None)
    env.apply_precision("bfloat16")
    assert jax.config.jax_default_matmul_precision is None  # bfloat16 is a dtype policy, not this setting
    env.apply_precision(precision)  # XLA would otherwise use TF32 for float32 products on an NVIDIA GPU
    assert jax.config.jax_default_matmul_precision == expected
    note = env.precision_support(precision)["note"]
    assert note == (env.EXACT_FLOAT32 if precision == "float32" else env.TF32)


def test_on_a_cpu_jax_keeps_its_default_precision(monkeypatch, jax_precision):
    monkeypatch.setattr(env, "backend", lambda: "jax")
    jax.config.update("jax_default_matmul_precision", None)
    env.apply_precision("float32")
    assert jax.config.jax_default_matmul_precision is None


def test_the_code_version_is_the_checkout_s_commit_or_what_the_copier_said(monkeypatch):
    env.code_version.cache_clear()
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=env.PROJECT_ROOT, capture_output=True,
                              text=True).stdout.strip()
        if head:  # a git checkout: its own commit
            assert env.code_version()["commit"] == head and env.code_version()["source"] == "git"
        env.code_version.cache_clear()
        monkeypatch.setattr(env, "PROJECT_ROOT", env.PROJECT_ROOT / "no-such-folder")  # a bare copy
        monkeypatch.setenv(env.CODE_VERSION_VAR, "abc123-dirty")
        assert env.code_version() == {"commit": "abc123", "dirty": True, "source": env.CODE_VERSION_VAR}
    finally:
        env.code_version.cache_clear()


def test_a_cpu_run_names_no_accelerator():
    assert env.device().startswith("CPU") and env.accelerator() is None and "accelerator" not in env.info()
