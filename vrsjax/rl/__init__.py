"""Reinforcement learning: GRPO loss functions (`vrsjax.rl.grpo`) and, later, the trainer that uses them."""
