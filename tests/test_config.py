"""Tests for vrsjax.config: recipes load, overrides, unknown and engine keys, validation, mesh, round trip."""

import dataclasses
import pathlib
import subprocess
import sys
import warnings

import pytest

from vrsjax import config as C

ROOT = pathlib.Path(__file__).resolve().parents[1]
RECIPES = sorted(
    p for p in (ROOT / "configs").glob("*.yaml") if not p.name.startswith("sft_")
)  # SFT: vrsjax.sft.config
THIRD_PARTY = pathlib.Path("/tmp/research/yamls")

# The shape of the Veason-R1 recipes (EasyR1 fork schema with Veason's data keys and engine keys), own values.
VEASON_LIKE = """\
data:
  name: video_seg_keyframe_sft_base_mod
  train_files: /data/revos
  val_files: None
  prompt_key: problem
  max_prompt_length: 4000
  max_response_length: 512
  rollout_batch_size: 8
  shuffle: true
  seed: 7
  max_pixels: 1000000
  min_pixels: 3136
  keyframe_resize: 448
  reference_image_resize: 448
  sam2_mode: "video"
  sampled_frames: 5
algorithm:
  adv_estimator: grpo
  kl_coef: 0.0
worker:
  actor:
    global_batch_size: 4
    micro_batch_size_per_device_for_update: 2
    micro_batch_size_per_device_for_experience: 4
    max_grad_norm: 0.5
    use_kl_loss: true
    kl_loss_coef: 2.0e-3
    kl_loss_type: low_var_kl
    model:
      model_path: /models/tiny
      enable_gradient_checkpointing: true
    optim:
      lr: 3.0e-6
      weight_decay: 0.0
    fsdp:
      param_offload: false # comment
      optimizer_offload: false
      torch_dtype: null
    offload:
      param_offload: true
      optimizer_offload: true
  rollout:
    temperature: 0.9
    tensor_parallel_size: 1
    gpu_memory_utilization: 0.3
    n: 4
    enable_chunked_prefill: true
  ref:
    offload:
      param_offload: true
  reward:
    reward_type: function
    compute_score: seg_strict
trainer:
  total_episodes: 2
  logger: ["console", "wandb"]
  project_name: shape_test
  n_gpus_per_node: 2
  nnodes: 1
  save_freq: 10
  test_freq: 100000
  val_before_train: false
  val_only: false"""  # no trailing newline, like the originals

SCRIPT_OVERRIDES = [
    "data.val_files=None",
    "worker.actor.model.model_path=/models/sft",
    "worker.actor.kl_loss_coef=5.0e-3",
    "worker.actor.optim.lr=1.0e-6",
    "worker.actor.micro_batch_size_per_device_for_update=1",
    "worker.actor.micro_batch_size_per_device_for_experience=1",
    "worker.rollout.enable_chunked_prefill=false",
    "worker.rollout.tensor_parallel_size=4",
    "worker.rollout.n=8",
    "trainer.experiment_name=run_x",
    "trainer.n_gpus_per_node=4",
    "trainer.total_episodes=1",
    "trainer.save_checkpoint_path=/work/run_x",
]


def _write(tmp_path, text, name="recipe.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def _load_quiet(*args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", C.IgnoredKeysWarning)
        return C.load_config(*args, **kwargs)


def _error(overrides, match):
    with pytest.raises(C.ConfigError, match=match) as info:
        _load_quiet(None, overrides)
    return str(info.value)


# ----- recipes -----


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_recipes_load_without_engine_keys(path):
    with warnings.catch_warnings():
        warnings.simplefilter("error", C.IgnoredKeysWarning)  # our recipes carry no dead keys
        cfg = C.load_config(path)
    assert cfg.worker.rollout.prompt_length == cfg.data.max_prompt_length
    assert cfg.mesh.resolve(8)["fsdp"] * cfg.mesh.resolve(8)["data"] * cfg.mesh.resolve(8)["tensor"] == 8


def test_base_yaml_equals_dataclass_defaults():
    assert C.load_config(ROOT / "configs/base.yaml") == C.load_config() == C.Config()


@pytest.mark.parametrize("name", ["veason_r1_3b.yaml", "veason_r1_7b.yaml"])
def test_veason_recipe_values(name):
    cfg = C.load_config(ROOT / "configs" / name)
    actor, rollout = cfg.worker.actor, cfg.worker.rollout
    assert (rollout.n, rollout.temperature, rollout.top_p) == (8, 1.0, 1.0)
    assert (actor.optim.lr, actor.optim.weight_decay) == (1e-6, 1e-2)
    assert cfg.data.rollout_batch_size == actor.global_batch_size == 16
    assert (actor.kl_loss_coef, actor.kl_loss_type, actor.clip_low, actor.clip_high) == (5e-3, "low_var_kl", 0.2, 0.2)
    assert actor.entropy_coeff == 1e-3 and actor.clip_ratio_dual is None
    assert (cfg.data.max_prompt_length, cfg.data.max_response_length) == (7100, 1024)
    assert cfg.worker.reward.compute_score == "video_match_keyframe_sft_sam_mod"
    assert (cfg.data.sampled_frames, cfg.data.keyframe_resize, cfg.data.reference_image_resize) == (6, 560, 560)
    assert C.batch_per_device(cfg, cfg.mesh.resolve(8)["fsdp"]) == 16


def test_demo_is_tiny():
    cfg = C.load_config(ROOT / "configs/demo.yaml")
    assert (cfg.data.rollout_batch_size, cfg.worker.rollout.n) == (2, 4)
    assert cfg.mesh.resolve(1) == {"data": 1, "fsdp": 1, "tensor": 1}
    assert all(C.batch_per_device(cfg, n) for n in (1, 2, 4, 8))


@pytest.mark.skipif(not THIRD_PARTY.is_dir(), reason="third-party EasyR1 recipes are not available here")
@pytest.mark.parametrize("path", sorted(THIRD_PARTY.glob("*/*.yaml")) or [None], ids=str)
def test_third_party_recipes_load_unchanged(path):
    with pytest.warns(C.IgnoredKeysWarning) as record:
        cfg = C.load_config(None, [f"config={path}", *SCRIPT_OVERRIDES])
    assert len(record) == 1 and "worker.rollout.gpu_memory_utilization" in str(record[0].message)
    assert cfg.data.val_files == "" and cfg.worker.rollout.n == 8
    assert cfg.worker.ref.micro_batch_size_per_device_for_experience == 1
    assert cfg.trainer.save_checkpoint_path == "/work/run_x"


def test_recipe_shape_fixture(tmp_path):
    path = _write(tmp_path, VEASON_LIKE)
    with pytest.warns(C.IgnoredKeysWarning) as record:
        cfg = C.load_config(path)
    assert len(record) == 1
    message = str(record[0].message)
    for key in (
        "worker.actor.fsdp.param_offload=False",
        "worker.actor.offload.optimizer_offload=True",
        "worker.ref.offload.param_offload=True",
        "worker.rollout.tensor_parallel_size=1",
        "worker.rollout.gpu_memory_utilization=0.3",
        "worker.rollout.enable_chunked_prefill=True",
        "worker.reward.reward_type='function'",
        "trainer.n_gpus_per_node=2",
        "trainer.nnodes=1",
    ):
        assert key in message
    assert message.startswith("ignoring 11 ")
    assert cfg.data.val_files == "" and cfg.data.sampled_frames == 5 and cfg.data.sam2_mode == "video"
    assert cfg.worker.actor.kl_loss_coef == pytest.approx(2e-3) and isinstance(cfg.worker.actor.kl_loss_coef, float)
    assert cfg.worker.actor.fsdp.torch_dtype is None and cfg.worker.actor.fsdp.param_dtype("ref") == "bfloat16"
    assert cfg.trainer.logger == ("console", "wandb") and cfg.trainer.test_freq == 100000


def test_recipe_shape_with_script_overrides(tmp_path):
    path = _write(tmp_path, VEASON_LIKE)
    cfg = _load_quiet(None, [f"config={path}", *SCRIPT_OVERRIDES])
    assert cfg.worker.actor.model.model_path == cfg.worker.actor.model.tokenizer_path == "/models/sft"
    assert cfg.worker.actor.micro_batch_size_per_device_for_update == 1
    assert cfg.worker.rollout.n == 8 and cfg.trainer.experiment_name == "run_x"


# ----- overrides -----


def test_dotted_overrides_nested_list_and_dict(tmp_path):
    cfg = C.load_config(
        None,
        [
            "worker.rollout.n=4",
            "trainer.logger=[console,tensorboard]",
            "worker.actor.optim.betas=[0.9,0.95]",
            "worker.actor.model.override_config.rope_theta=1000",
            "worker.reward.reward_function_kwargs={beta: 0.01}",
            "mesh.data=2",
            "data.system_prompt='a = b'",
        ],
    )
    assert cfg.worker.rollout.n == 4 and cfg.mesh.data == 2
    assert cfg.trainer.logger == ("console", "tensorboard")
    assert cfg.worker.actor.optim.betas == (0.9, 0.95)
    assert cfg.worker.actor.model.override_config == {"rope_theta": 1000}
    assert cfg.worker.reward.reward_function_kwargs == {"beta": 0.01}
    assert cfg.data.system_prompt == "a = b"


def test_overrides_beat_the_file_and_config_item(tmp_path):
    path = _write(tmp_path, "worker:\n  rollout:\n    n: 4\n    temperature: 0.5\n")
    cfg = C.load_config(None, ["worker.rollout.n=16", f"config={path}"])
    assert (cfg.worker.rollout.n, cfg.worker.rollout.temperature) == (16, 0.5)
    with pytest.raises(C.ConfigError, match="more than once"):
        C.load_config(path, [f"config={path}"])
    with pytest.raises(C.ConfigError, match="not key=value"):
        C.load_config(None, ["worker.rollout.n"])
    with pytest.raises(C.ConfigError, match="not found"):
        C.load_config(tmp_path / "missing.yaml")


def test_string_coercion_and_null_handling():
    cfg = C.load_config(None, ["worker.rollout.n='8'", "worker.actor.optim.lr='2e-6'", "data.shuffle=no"])
    assert cfg.worker.rollout.n == 8 and cfg.worker.actor.optim.lr == 2e-6 and cfg.data.shuffle is False
    cfg = C.load_config(None, ["data.val_files=None", "trainer.load_checkpoint_path=None", "trainer.max_steps=null"])
    assert cfg.data.val_files == "" and cfg.trainer.load_checkpoint_path is None and cfg.trainer.max_steps is None
    _error(["worker.rollout.n=None"], r"worker\.rollout\.n='None': must not be null")


def test_interpolation_resolves():
    cfg = C.load_config(None, ["trainer.experiment_name=${worker.rollout.n}_samples"])
    assert cfg.trainer.experiment_name == "8_samples"


def test_head_aliases(tmp_path):
    cfg = C.load_config(None, ["trainer.total_epochs=3", "trainer.val_freq=5", "worker.actor.loss_avg_mode=seq"])
    assert cfg.trainer.total_episodes == 3 and cfg.trainer.test_freq == 5
    assert cfg.worker.actor.loss_agg_mode == "seq-mean-token-mean"
    path = _write(tmp_path, "trainer:\n  total_episodes: 2\n")
    assert C.load_config(path, ["trainer.total_epochs=4"]).trainer.total_episodes == 4  # CLI alias beats file
    with pytest.raises(C.ConfigError, match="conflicts with trainer.total_episodes=2"):
        C.load_config(_write(tmp_path, "trainer:\n  total_episodes: 2\n  total_epochs: 3\n", "both.yaml"))


# ----- unknown and engine keys -----


def test_unknown_key_suggests_the_closest():
    message = _error(["worker.actor.entropy_coef=0.1"], "unknown")
    assert "worker.actor.entropy_coef: unknown key; did you mean worker.actor.entropy_coeff?" in message
    assert "did you mean trainer?" in _error(["trainr.save_freq=1"], "trainr")
    assert "did you mean worker.actor.kl_loss_coef?" in _error(["worker.rollout.kl_loss_coef=1"], "unknown")
    assert "use worker.actor.use_kl_loss" in _error(["algorithm.use_kl_loss=true"], "HEAD")


def test_all_unknown_keys_reported_at_once():
    message = _error(["data.nmae=x", "mesh.dat=2"], "config keys not accepted")
    assert "data.nmae: unknown key; did you mean data.name?" in message
    assert "mesh.dat: unknown key; did you mean mesh.data?" in message


def test_section_given_a_scalar():
    _error(["worker.actor.model=3"], r"worker\.actor\.model=3: is a section")


def test_engine_keys_warn_once_listing_all():
    overrides = ["worker.rollout.gpu_memory_utilization=0.4", "worker.rollout.enforce_eager=true"]
    overrides += ["worker.critic.optim.lr=1e-5", "trainer.nnodes=2", "worker.actor.padding_free=true"]
    with pytest.warns(C.IgnoredKeysWarning) as record:
        cfg = C.load_config(None, overrides)
    assert len(record) == 1
    message = str(record[0].message)
    assert message.startswith("ignoring 5 EasyR1 engine keys")
    for item in overrides:
        key, _, _ = item.partition("=")
        assert key in message
    assert not hasattr(cfg.worker.rollout, "gpu_memory_utilization") and not hasattr(cfg.worker, "critic")


def test_no_warning_without_engine_keys():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        C.load_config(None, ["worker.rollout.n=4"])


# ----- validation -----


@pytest.mark.parametrize(
    "override, match",
    [
        ("worker.rollout.n=eight", r"worker\.rollout\.n='eight': expected an integer"),  # type
        ("data.shuffle=maybe", r"data\.shuffle='maybe': expected true or false"),
        ("worker.actor.optim.betas=[0.9]", "expected a list of 2 values"),
        ("worker.actor.optim.lr=nan", "expected a number"),
        ("worker.actor.optim.lr=0", r"worker\.actor\.optim\.lr=0\.0: must be > 0"),  # ranges
        ("worker.rollout.temperature=-1", r"worker\.rollout\.temperature=-1\.0: must be >= 0"),
        ("worker.rollout.top_p=0", r"worker\.rollout\.top_p=0\.0: must be in \(0, 1\]"),
        ("worker.rollout.top_p=1.5", "top_p"),
        ("worker.actor.clip_ratio=-0.1", r"worker\.actor\.clip_ratio=-0\.1: must be in \[0\.0, 1\.0\)"),
        ("worker.actor.clip_ratio_dual=0.5", "must be > 1"),
        ("worker.rollout.n=0", r"worker\.rollout\.n=0: must be a positive integer"),
        ("worker.actor.kl_loss_type=k4", "must be one of kl, k1, abs"),  # enumerations
        ("algorithm.kl_penalty=low_var", "did you mean low_var_kl"),
        ("worker.actor.loss_agg_mode=token_mean", "did you mean token-mean"),
        ("algorithm.adv_estimator=gae", "needs a critic"),
        ("algorithm.adv_estimator=ppo", "must be one of grpo"),
        ("worker.actor.fsdp.mp_param_dtype=int8", "mp_param_dtype"),
        ("trainer.logger=[console,neptune]", "unknown backend 'neptune'"),
        ("data.sam2_mode=frames", "must be one of images, video"),
        ("worker.rollout.n=1", r"worker\.rollout\.n=1: grpo compares responses within a group"),  # cross-section
        ("worker.actor.global_batch_size=300", r"must divide data\.rollout_batch_size=512"),
        ("worker.actor.micro_batch_size_per_device_for_update=3", "must divide worker.actor.global_batch_size"),
        ("worker.actor.micro_batch_size_per_device_for_experience=3", r"rollout_batch_size \* worker\.rollout\.n"),
        ("mesh.tensor=0", r"mesh\.tensor=0: must be a positive axis size or -1"),  # mesh
        ("mesh.data=-1", r"mesh\.fsdp=-1: only one axis may be -1 \(mesh\.data already is\)"),
    ],
)
def test_validation_errors(override, match):
    _error([override], match)


def test_several_problems_in_one_section_reported_together():
    message = _error(["worker.rollout.top_p=2", "worker.rollout.temperature=-1"], "invalid config")
    assert "worker.rollout.top_p=2.0" in message and "worker.rollout.temperature=-1.0" in message


def test_direct_construction_validates_and_coerces():
    assert C.RolloutConfig(n="4").n == 4
    with pytest.raises(C.ConfigError, match=r"worker\.actor\.optim\.lr=-1\.0"):
        C.OptimConfig(lr=-1.0)
    with pytest.raises(C.ConfigError, match="expected a ModelConfig"):
        C.ActorConfig(model={"model_path": "x"})


def test_dtype_aliases_normalise():
    cfg = C.load_config(None, ["worker.actor.fsdp.torch_dtype=bf16", "worker.rollout.dtype=fp32"])
    assert cfg.worker.actor.fsdp.param_dtype() == "bfloat16" and cfg.worker.rollout.dtype == "float32"


# ----- derived keys -----


def test_post_init_copies_like_easyr1():
    cfg = C.load_config(None, ["data.max_prompt_length=100", "worker.rollout.prompt_length=5"])
    assert cfg.worker.rollout.prompt_length == 100  # auto key: always follows data.*
    cfg = C.load_config(None, ["worker.actor.micro_batch_size_per_device_for_experience=8"])
    assert cfg.worker.ref.micro_batch_size_per_device_for_experience == 8
    cfg = C.load_config(None, ["trainer.project_name=p", "trainer.experiment_name=e"])
    assert cfg.trainer.save_checkpoint_path == "checkpoints/p/e"
    assert cfg.worker.actor.model.tokenizer_path is None
    replaced = dataclasses.replace(cfg.data, max_response_length=64)
    assert dataclasses.replace(cfg, data=replaced).worker.rollout.response_length == 64


# ----- mesh -----


def test_mesh_resolve():
    assert C.MeshConfig().resolve(8) == {"data": 1, "fsdp": 8, "tensor": 1}
    assert C.MeshConfig(data=2, fsdp=-1, tensor=2).resolve(16) == {"data": 2, "fsdp": 4, "tensor": 2}
    assert C.MeshConfig(data=2, fsdp=2, tensor=1).resolve(4) == {"data": 2, "fsdp": 2, "tensor": 1}
    assert list(C.MeshConfig().resolve(1)) == list(C.MeshConfig.AXES)
    with pytest.raises(C.ConfigError, match="multiply to 6"):
        C.MeshConfig(data=2, fsdp=-1, tensor=3).resolve(8)
    with pytest.raises(C.ConfigError, match="does not fit 8 devices: the sized axes multiply to 4"):
        C.MeshConfig(data=2, fsdp=2, tensor=1).resolve(8)


def test_batch_per_device():
    cfg = C.load_config(None, ["data.rollout_batch_size=16", "worker.actor.global_batch_size=16"])
    assert C.batch_per_device(cfg, 8) == 16  # 16 prompts x 8 responses over 8 devices
    with pytest.raises(C.ConfigError, match="do not split over 3"):
        C.batch_per_device(cfg, 3)
    cfg = C.load_config(None, ["worker.actor.micro_batch_size_per_device_for_update=16"])
    with pytest.raises(C.ConfigError, match="must divide the 8 responses"):
        C.batch_per_device(cfg, 256)


# ----- saving -----


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_round_trip_yaml(tmp_path, path):
    cfg = C.load_config(path, ["worker.actor.model.override_config.vocab_size=64"])
    saved = _write(tmp_path, C.to_yaml(cfg), "saved.yaml")
    assert C.load_config(saved) == cfg
    assert C.from_dict(C.to_dict(cfg)) == cfg
    assert C.from_dict(cfg, ["worker.rollout.n=2"]).worker.rollout.n == 2


def test_to_dict_is_plain_and_ordered():
    values = C.to_dict(C.Config())
    assert list(values) == ["data", "worker", "algorithm", "trainer", "mesh"]
    assert values["worker"]["actor"]["optim"]["betas"] == [0.9, 0.999]


def test_get():
    cfg = C.Config()
    assert C.get(cfg, "worker.rollout.n") == 8 and C.get(cfg, "mesh") == cfg.mesh
    with pytest.raises(KeyError, match="did you mean worker.rollout.n"):
        C.get(cfg, "worker.rollout.nn")


def test_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        C.Config().worker.rollout.n = 3


def test_importing_config_does_not_import_jax():
    code = "import sys, vrsjax.config; assert 'jax' not in sys.modules and 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
