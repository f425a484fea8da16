"""Synthetic datasets shared by the data tests, written once per session into temporary folders."""

import pytest

from vrsjax.data import synthetic
from vrsjax.data.revos import read_revos


@pytest.fixture(scope="session")
def synth(tmp_path_factory):
    """A 6-video synthetic ReVOS-layout dataset (seed 0) and what the generator drew."""
    return synthetic.write_dataset(tmp_path_factory.mktemp("synth") / "revos", num_videos=6, seed=0)


@pytest.fixture(scope="session")
def revos_train(synth):
    return read_revos(synth.root, "train")


@pytest.fixture(scope="session")
def records_dir(revos_train, tmp_path_factory):
    from vrsjax.data.records import build_records

    return build_records(revos_train, tmp_path_factory.mktemp("records"))
