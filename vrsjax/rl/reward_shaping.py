"""What happens to the scores between the reward and the advantages: the in-reward KL penalty with its fixed or
adaptive coefficient, and online filtering of whole groups (EasyR1 HEAD `verl/trainer/ray_trainer.py`,
`apply_kl_penalty` and `_make_batch_data`; the controllers in `verl/trainer/core_algos.py`).

With `worker.actor.use_kl_loss=false` EasyR1 puts the outcome score on a response's last token and subtracts
`kl_coef * kl` from every response token; GRPO then sums the token rewards, so a response's score becomes
`score - kl_coef * sum_t kl_t`. Online filtering (DAPO's dynamic sampling) keeps the groups whose mean score under
`filter_key` lies strictly inside (filter_low, filter_high). Pure numpy; the trainer owns the loop that samples more.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from vrsjax.rl import grpo


@dataclasses.dataclass
class KLController:
    """EasyR1's KL coefficient: fixed, or adaptive (TRL v0.11's proportional controller towards `target`).

    adaptive: `kl_coef *= 1 + clip(current_kl / target - 1, -0.2, 0.2) * n_steps / horizon` after each step."""

    kl_coef: float
    kind: str = "fixed"
    target: float = 0.0
    horizon: float = 0.0

    def update(self, current_kl: float, n_steps: int) -> None:
        if self.kind == "adaptive":
            error = float(np.clip(current_kl / self.target - 1, -0.2, 0.2))
            self.kl_coef *= 1 + error * n_steps / self.horizon

    @classmethod
    def from_config(cls, algorithm) -> KLController:
        """From an `AlgorithmConfig` (kl_coef, kl_type, kl_target, kl_horizon)."""
        if algorithm.kl_type == "adaptive" and algorithm.kl_target <= 0:
            raise ValueError("algorithm.kl_type=adaptive needs algorithm.kl_target > 0 (the KL the controller aims at)")
        return cls(algorithm.kl_coef, algorithm.kl_type, algorithm.kl_target, algorithm.kl_horizon)


def kl_penalised_scores(
    scores: np.ndarray, logp: np.ndarray, ref_logp: np.ndarray, mask: np.ndarray, controller: KLController, kind: str
) -> tuple[np.ndarray, dict[str, float]]:
    """float[N] scores, float[N, T] old and reference log-probs, int[N, T] mask -> (float[N] scores minus
    kl_coef * the response's summed KL, metrics), then steps the controller (n_steps = N, as EasyR1 does).

    metrics: actor/kl_penalty = the batch mean of each response's masked-mean KL; actor/kl_coef = the coefficient
    that was applied (before the controller's update)."""
    mask = np.asarray(mask, np.float32)
    kld = np.asarray(grpo.kl_penalty(logp, ref_logp, kind), np.float32) * mask
    current = float(np.mean(kld.sum(-1) / (mask.sum(-1) + 1e-8)))
    coef = controller.kl_coef
    out = np.asarray(scores, np.float32) - np.float32(coef) * kld.sum(-1)
    controller.update(current, len(scores))
    return out, {"actor/kl_penalty": current, "actor/kl_coef": coef}


def kept_groups(values: np.ndarray, group_size: int, low: float, high: float) -> np.ndarray:
    """float[G * n] filter scores (responses of a group adjacent) -> bool[G]: low < group mean < high."""
    means = np.asarray(values, np.float64).reshape(-1, group_size).mean(axis=1)
    return (means > low) & (means < high)


def filter_values(parts: list[dict[str, float]], key: str) -> np.ndarray:
    """The per-response values online filtering looks at: "overall" is the total score, else one component."""
    if key == "overall":
        return np.array([sum(p.values()) for p in parts], np.float64)
    if key not in parts[0]:
        raise KeyError(
            f"algorithm.filter_key={key!r} is not a reward component; use overall or one of {sorted(parts[0])}"
        )
    return np.array([p[key] for p in parts], np.float64)
