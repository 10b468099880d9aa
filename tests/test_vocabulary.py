"""The vocabulary is declared once and agrees with what the rest of the code knows about each dataset."""

from __future__ import annotations

import ast
from pathlib import Path

from core.data import datasets
from core.protocol import config, vocabulary
from core.protocol.arch_spec import ARCH_INFO
from core.protocol.vocabulary import (
    DATASETS,
    METHOD_NAMES,
    STAGE_WORDS,
    TRAINING_STAGES,
    dataset_title,
    is_keras_dataset,
    is_photo_dataset,
    method_title,
    stage_words,
)

ROOT = Path(__file__).resolve().parent.parent


def test_every_dataset_has_a_title_and_each_paper_dataset_its_cnns_shape():
    assert set(vocabulary.DATASET_TITLES) == set(DATASETS)
    assert dataset_title("dogs-cats") == "Dogs & Cats" and dataset_title("unknown") == "unknown"
    for name in vocabulary.PAPER_DATASETS:
        assert vocabulary.INPUT_SHAPES[name] == ARCH_INFO[name].input_shape
        assert len(vocabulary.KNOWN_CLASSES[name]) == vocabulary.NUM_CLASSES[name]
    assert "folder" not in vocabulary.PAPER_DATASETS


def test_keras_and_photo_datasets_split_the_list():
    assert [d for d in DATASETS if is_keras_dataset(d)] == ["fashion-mnist", "cifar10"]
    assert all(is_photo_dataset(d) != is_keras_dataset(d) for d in DATASETS)


def test_the_protocol_and_the_loaders_name_the_same_datasets_and_classes():
    """Until config and datasets import these from the vocabulary, they must agree with it."""
    assert tuple(config.DATASETS) == DATASETS and tuple(config.PHOTO_DATASETS) == vocabulary.PHOTO_DATASETS
    assert datasets.FASHION_CLASSES == vocabulary.FASHION_CLASSES
    assert datasets.CIFAR_CLASSES == vocabulary.CIFAR_CLASSES


def test_stages_and_methods_read_as_words():
    assert stage_words("stage2_adam") == "stage two, Adam head" == METHOD_NAMES["adam"]
    assert stage_words("some_new_stage") == "some new stage" and stage_words(None) == ""
    assert all(s in STAGE_WORDS for s in TRAINING_STAGES)
    assert method_title("stage1") == "Stage one (CNN)"


def test_no_page_or_ui_module_spells_a_dataset_list_again():
    """The vocabulary's lists are imported, never written again (a copy drifts: another order, one missing)."""
    for path in [*sorted((ROOT / "app_pages").glob("*.py")), *sorted((ROOT / "ui").glob("*.py"))]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Tuple | ast.List) and all(isinstance(e, ast.Constant) for e in node.elts):
                values = {e.value for e in node.elts}
                assert not {"fashion-mnist", "cifar10"} <= values, f"{path.name}:{node.lineno} lists datasets"
                assert not {"stage1", "adam", "sgd"} <= values, f"{path.name}:{node.lineno} lists the methods"
