"""torch stays out until a SAM2 service is built: importing vrsjax.services, the bridge, the wire format, the server
client and the reward scorer, and scoring without SAM2, import neither torch nor sam2."""

import subprocess
import sys

NO_TORCH = "bad = [m for m in ('torch', 'sam2') if m in sys.modules]; assert not bad, bad"


def run(code: str) -> None:
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_services_import_without_torch():
    run(
        "import sys, vrsjax, vrsjax.rewards, vrsjax.rewards.scorer, vrsjax.services, vrsjax.services.bridge, "
        f"vrsjax.services.wire, vrsjax.services.server; {NO_TORCH}"
    )


def test_scoring_without_sam2_imports_no_torch():
    run(
        "import sys\n"
        "from vrsjax.rewards.scorer import RewardGroup, RewardScorer\n"
        "group = RewardGroup(['<think>x</think><answer>[]</answer>'], {'gt_objects': []})\n"
        "with RewardScorer('vision_reasoner', sam2=None) as scorer:\n"
        "    assert scorer.score([group], timeout=30).scores.shape == (1,)\n"
        "with RewardScorer('ablation_keyframe_sft_sam_mod_compute_score') as scorer:\n"  # no SAM2 term: no SAM2 built
        "    pass\n"
        f"{NO_TORCH}\n"
    )


def test_the_sam2_service_module_is_where_torch_comes_in():
    run("import sys, vrsjax.services.sam2; assert 'torch' in sys.modules and 'sam2' in sys.modules")
