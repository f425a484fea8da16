"""Rollout: jitted group sampling with a shared prompt prefix (`generate`)."""

from vrsjax.rollout.generate import RolloutOutput, generate

__all__ = ["RolloutOutput", "generate"]
