"""Test-wide setup: 8 simulated CPU devices and float32 matmuls for parity tests."""

import os

# Must be set before jax is imported anywhere: multi-device tests run on 8 simulated CPU devices.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402

jax.config.update("jax_default_matmul_precision", "float32")
