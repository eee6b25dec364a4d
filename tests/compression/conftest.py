"""Fixtures for the compression tests: a tiny LLaMa-2-structured model folder and text files."""

import pytest

from workloads.loading import load_model, save_random_llama

CORPUS = (
    "The tower is 324 metres tall , about the same height as an 81 @-@ storey building . "
    "Its base is square , measuring 125 metres on each side . Senjo no Valkyria 3 is a "
    "tactical role @-@ playing video game developed by Sega . "
)

# Calibration text other than the evaluation text (calibration from the test text is refused).
CALIB_CORPUS = (  # written for these tests: calibration text must not come from the test split
    "The harbour town grew around a stone bridge built over the river in the twelfth century . "
    "Its market sold wool , salt and timber to merchants who sailed up from the coast each spring "
    ". A railway reached the town in 1862 , and the old quay was later turned into a park . "
)


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory):
    return save_random_llama(tmp_path_factory.mktemp("tiny") / "tiny-llama", seed=0)


@pytest.fixture(scope="session")
def tiny_model(tiny_folder):
    """A factory: a fresh copy of the tiny model (tests may modify it)."""
    return lambda: load_model(tiny_folder).model


@pytest.fixture(scope="session")
def text_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("text")
    (folder / "calib.txt").write_text((CALIB_CORPUS + "\n") * 40)
    (folder / "eval.txt").write_text(("\n" + CORPUS) * 30)
    (folder / "empty.txt").write_text("\n \n")
    (folder / "short.txt").write_text("The tower .\n")
    return folder
