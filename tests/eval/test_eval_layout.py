"""vrsjax.eval.layout: the prediction folders `vrsjax predict` writes and `vrsjax eval` reads."""

import numpy as np
import pytest
from PIL import Image

from vrsjax.eval import layout

FRAMES = ["00000", "00001", "00002"]


def masks(seed: int = 0, shape=(3, 7, 9)) -> np.ndarray:
    return np.random.default_rng(seed).random(shape) > 0.5


def test_round_trip_with_nested_video_ids(tmp_path):
    m = masks()
    folder = layout.write_masks(tmp_path, "UVO/all/-fbscFfkh4M", "3", FRAMES, m)
    assert folder == tmp_path / "UVO" / "all" / "-fbscFfkh4M" / "3"
    assert folder == layout.prediction_dir(tmp_path, "UVO/all/-fbscFfkh4M", "3")
    assert sorted(p.name for p in folder.iterdir()) == [f"{f}.png" for f in FRAMES]
    with Image.open(folder / "00001.png") as image:  # the benchmarks' uint8 0/255 grayscale
        assert image.mode == "L"
        assert set(np.unique(np.asarray(image))) <= {0, 255}
        np.testing.assert_array_equal(np.asarray(image) == 255, m[1])
    np.testing.assert_array_equal(layout.read_masks(tmp_path, "UVO/all/-fbscFfkh4M", "3", FRAMES, (7, 9)), m)
    assert [p.name for p in folder.parent.iterdir()] == ["3"]  # no temporary folders left


def test_is_complete_and_rewrite(tmp_path):
    assert not layout.is_complete(tmp_path, "v", "0", FRAMES)
    layout.write_masks(tmp_path, "v", "0", FRAMES, masks(0))
    assert layout.is_complete(tmp_path, "v", "0", FRAMES)
    assert not layout.is_complete(tmp_path, "v", "0", [*FRAMES, "00003"])
    layout.write_masks(tmp_path, "v", "0", FRAMES, masks(1))  # replaces the older prediction
    np.testing.assert_array_equal(layout.read_masks(tmp_path, "v", "0", FRAMES, (7, 9)), masks(1))
    (tmp_path / "v" / "0" / "00002.png").unlink()
    assert not layout.is_complete(tmp_path, "v", "0", FRAMES)


def test_interrupted_write_never_looks_finished(tmp_path, monkeypatch):
    calls = []
    real_save = Image.Image.save

    def failing_save(self, fp, *args, **kwargs):  # the disk fills up after the first frame
        calls.append(fp)
        if len(calls) == 2:
            raise OSError("No space left on device")
        return real_save(self, fp, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", failing_save)
    with pytest.raises(OSError, match="No space"):
        layout.write_masks(tmp_path, "v", "0", FRAMES, masks())
    assert not layout.is_complete(tmp_path, "v", "0", FRAMES)
    assert list((tmp_path / "v").iterdir()) == []  # the partial folder is removed, never renamed into place
    with pytest.raises(layout.MissingPrediction):
        layout.read_masks(tmp_path, "v", "0", FRAMES, (7, 9))


def test_missing_prediction_is_a_file_not_found_error_naming_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"v[/\\]0"):
        layout.read_masks(tmp_path, "v", "0", FRAMES, (7, 9))
    layout.write_masks(tmp_path, "v", "0", FRAMES, masks())
    (tmp_path / "v" / "0" / "00001.png").unlink()
    with pytest.raises(layout.MissingPrediction, match="00001.png"):
        layout.read_masks(tmp_path, "v", "0", FRAMES, (7, 9))


def test_wrong_size_and_unreadable_pngs_name_the_file(tmp_path):
    folder = layout.write_masks(tmp_path, "v", "0", FRAMES, masks())
    with pytest.raises(layout.BadPrediction, match=r"00000\.png is 7x9 .* 8x9"):
        layout.read_masks(tmp_path, "v", "0", FRAMES, (8, 9))
    (folder / "00002.png").write_bytes(b"not a png")
    with pytest.raises(layout.BadPrediction, match=r"00002\.png is not a readable PNG"):
        layout.read_masks(tmp_path, "v", "0", FRAMES, (7, 9))


def test_other_png_modes_read_as_grayscale_nonzero(tmp_path):
    folder = tmp_path / "v" / "0"
    folder.mkdir(parents=True)
    rgb = np.zeros((4, 5, 3), np.uint8)
    rgb[1, 2] = (200, 0, 0)
    Image.fromarray(rgb).save(folder / "a.png")
    palette = Image.fromarray(np.array([[0, 1], [2, 0]], np.uint8), mode="P")
    palette.putpalette([0, 0, 0, 128, 0, 0, 0, 0, 0])  # index 2 is black: background, as cv2 reads it
    palette.save(folder / "b.png")
    np.testing.assert_array_equal(layout.read_masks(tmp_path, "v", "0", ["a"], (4, 5))[0], rgb.any(axis=2))
    np.testing.assert_array_equal(layout.read_masks(tmp_path, "v", "0", ["b"], (2, 2))[0], [[0, 1], [0, 0]])


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="leave the prediction root"):
        layout.prediction_dir(tmp_path, "../x", "0")
    with pytest.raises(ValueError, match="T = 3 frame names"):
        layout.write_masks(tmp_path, "v", "0", FRAMES, masks(shape=(2, 7, 9)))
    with pytest.raises(ValueError, match="frame names repeat"):
        layout.write_masks(tmp_path, "v", "0", ["a", "a", "b"], masks())
