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


def test_a_tensorflow_run_has_no_float32_note():
    assert env.backend() == "tensorflow"
    env.use_exact_float32("float32")
    assert env.precision_support("float32") == {"name": "float32", "bf16_units": None, "note": None}


@pytest.mark.parametrize("accelerator", ["gpu", "cpu"])
def test_a_float32_jax_run_on_a_gpu_computes_in_full_float32_and_its_record_says_so(monkeypatch, jax_precision,
                                                                                    accelerator):
    monkeypatch.setattr(env, "backend", lambda: "jax")
    monkeypatch.setattr(jax, "default_backend", lambda: accelerator)
    jax.config.update("jax_default_matmul_precision", None)
    env.use_exact_float32("bfloat16")
    assert jax.config.jax_default_matmul_precision is None  # bfloat16 stays as asked
    env.use_exact_float32("float32")
    if accelerator == "gpu":  # XLA could otherwise use TF32 for float32 products on an NVIDIA GPU
        assert jax.config.jax_default_matmul_precision == "highest"
        assert env.precision_support("float32")["note"] == env.EXACT_FLOAT32
    else:  # a CPU computes float32 in float32 anyway
        assert jax.config.jax_default_matmul_precision is None
        assert env.precision_support("float32")["note"] is None


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
