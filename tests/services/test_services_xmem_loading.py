"""Loading official XMem checkpoints: the 412-tensor layout, widths read from tensors, strict validation that lists
every mismatch, weights_only reading, clear errors for unreadable files, and no pretrained download anywhere."""

import subprocess
import sys

import pytest
import torch
from xmem_cases import official_layout, random_official_state

from vrsjax.services.xmem import XMem


@pytest.fixture(scope="module")
def state():
    return random_official_state(0)


def test_the_official_layout_has_412_tensors_and_vrsjax_uses_exactly_it():
    layout = official_layout()
    assert len(layout) == 412
    assert {k: tuple(v.shape) for k, v in XMem().state_dict().items()} == layout
    # A few shapes as the official checkpoint stores them.
    assert layout["value_encoder.conv1.weight"] == (64, 5, 7, 7)
    assert layout["decoder.fuser.block1.conv1.weight"] == (512, 1600, 3, 3)
    assert layout["decoder.hidden_update.transform.weight"] == (192, 320, 3, 3)
    assert layout["key_encoder.res2.0.downsample.0.weight"] == (256, 64, 1, 1)


def test_a_checkpoint_file_loads_every_tensor_as_is(state, tmp_path):
    path = tmp_path / "XMem.pth"
    torch.save(state, path)
    model = XMem.from_checkpoint(path, device="cpu")
    loaded = model.state_dict()
    assert set(loaded) == set(state)
    for name, tensor in state.items():
        assert torch.equal(loaded[name], tensor), name
    assert (model.key_dim, model.value_dim, model.hidden_dim) == (64, 512, 64)
    assert not model.training


def test_from_state_dict_copies_the_tensors(state):
    model = XMem.from_state_dict(state)
    before = state["decoder.pred.bias"].clone()
    model.decoder.pred.bias.data.add_(1.0)
    assert torch.equal(state["decoder.pred.bias"], before)


@pytest.mark.parametrize("widths", [dict(key_dim=32, value_dim=256, hidden_dim=16), dict(hidden_dim=0)])
def test_widths_are_read_from_the_tensors(widths):
    model = XMem.from_state_dict(random_official_state(1, **widths))
    assert model.key_dim == widths.get("key_dim", 64)
    assert model.value_dim == widths.get("value_dim", 512)
    assert model.hidden_dim == widths["hidden_dim"]
    assert (model.decoder.hidden_update is None) == (widths["hidden_dim"] == 0)


def test_every_mismatch_is_reported_at_once(state):
    broken = dict(state)
    del broken["decoder.pred.weight"], broken["key_encoder.layer3.5.bn3.running_var"]
    broken["decoder.extra.weight"] = torch.zeros(3)
    broken["value_encoder.fuser.block1.conv2.weight"] = torch.zeros(512, 511, 3, 3)
    with pytest.raises(ValueError) as error:
        XMem.from_state_dict(broken)
    message = str(error.value)
    assert "missing keys (2): decoder.pred.weight, key_encoder.layer3.5.bn3.running_var" in message
    assert "unexpected keys (1): decoder.extra.weight" in message
    assert "value_encoder.fuser.block1.conv2.weight: checkpoint (512, 511, 3, 3), expected (512, 512, 3, 3)" in message


def test_batch_norm_counters_are_optional_and_single_object_weights_are_widened(state):
    slim = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    slim["value_encoder.conv1.weight"] = state["value_encoder.conv1.weight"][:, :4].clone()
    model = XMem.from_state_dict(slim)
    conv = model.value_encoder.conv1.weight
    assert torch.equal(conv[:, :4], slim["value_encoder.conv1.weight"])
    assert not conv[:, 4].any()  # the official loader pads the other-objects channel with zeros


class NotATensor:
    pass


def test_unreadable_checkpoints_get_clear_errors(state, tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.pth does not exist"):
        XMem.from_checkpoint(tmp_path / "missing.pth")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot read XMem checkpoint .*garbage.pth"):
        XMem.from_checkpoint(garbage)
    # weights_only=True: a pickled object that is not a tensor is refused, not executed.
    pickled = tmp_path / "pickled.pth"
    torch.save({"key_proj.key_proj.weight": NotATensor()}, pickled)
    with pytest.raises(ValueError, match="cannot read XMem checkpoint .*pickled.pth"):
        XMem.from_checkpoint(pickled)
    training = tmp_path / "training.pth"
    torch.save({"it": 1, "network": {"decoder.pred.bias": torch.zeros(1)}}, training)
    with pytest.raises(ValueError, match="training checkpoint"):
        XMem.from_checkpoint(training)
    other = tmp_path / "other.pth"
    torch.save({"model.weight": torch.zeros(2)}, other)
    with pytest.raises(ValueError, match="lacks .*key_proj.key_proj.weight"):
        XMem.from_checkpoint(other)


def test_no_pretrained_weights_are_ever_downloaded(state, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    XMem()
    XMem.from_state_dict(state)
    code = "import sys, vrsjax.services.xmem as x; x.XMem(); assert 'torchvision' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
