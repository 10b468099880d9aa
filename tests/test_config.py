import pytest

from core.protocol.config import Protocol


def test_defaults_are_the_papers():
    p = Protocol()
    assert (p.epochs, p.batch_size, p.validation_split, p.patience) == (50, 32, 0.2, 10)
    assert (p.stage1_eval, p.features_from, p.head_init) == ("last", "last", "fresh")
    assert not p.use_augmentation
    assert Protocol(dataset="dogs-cats", data_path="/x").use_augmentation
    v2 = Protocol.paper_v2(data_path="/x")
    assert (v2.dataset, v2.patience, v2.reduce_lr) == ("face-mask", 5, True)


def test_key_changes_with_what_changes_numbers_only():
    base = Protocol()
    assert base.key() == Protocol().key()
    assert base.key() != Protocol(epochs=49).key()
    assert base.key() != Protocol(head_init="warm").key()
    # Fashion-MNIST has one form, the same wherever it is read from; a CIFAR-10 path may be a re-encoded copy
    assert base.key() == Protocol(data_path="/somewhere/else").key()
    cifar = Protocol(dataset="cifar10")
    assert cifar.key() != cifar.with_(data_path="/data/cifar10-jpg").key() != cifar.with_(data_path="/b").key()
    # augment=None resolves to the paper's choice, so spelling it out is the same experiment
    assert base.key() == Protocol(augment=False).key()


def test_round_trip_through_dict():
    p = Protocol(dataset="face-mask", data_path="/d", reduce_lr=True, limit=100)
    assert Protocol.from_dict(p.to_dict()) == p
    assert Protocol.from_dict({**p.to_dict(), "unknown_future_field": 1}) == p


@pytest.mark.parametrize("bad", [dict(dataset="mnist"), dict(dataset="folder"), dict(epochs=0),
                                 dict(validation_split=1.0), dict(limit=3)])
def test_invalid_protocols_say_why(bad):
    with pytest.raises(ValueError):
        Protocol(**bad)


def test_records_made_before_the_report_options_keep_their_keys():
    """Keys computed before the related reports' fields existed (issue 13): adding fields changes none."""
    assert Protocol().key() == "331fd390860ac1bc"
    assert Protocol(dataset="face-mask", data_path="/x").key() == "ff3269187f856e8b"
    assert Protocol(dataset="cifar10", architecture="cifar10").key() == "c320fb7e0bdb4877"
    assert Protocol(resplit=True).key() == "445b6e84a466a610"


@pytest.mark.parametrize("changes", [dict(optimizer="sgd"), dict(learning_rate=1e-4), dict(momentum=0.99),
                                     dict(weight_decay=0.05), dict(augment_preset="aug2"), dict(per_class=41),
                                     dict(gan_images=10), dict(architecture="004-model1")])
def test_each_report_option_is_a_new_experiment_when_set(changes):
    assert Protocol(dataset="cifar10", **changes).key() != Protocol(dataset="cifar10").key()


def test_no_augmentation_is_one_experiment_however_it_is_asked_for():
    base = Protocol(dataset="cifar10")
    assert base.key() == Protocol(dataset="cifar10", augment_preset="none").key() == \
        Protocol(dataset="cifar10", augment=False, augment_preset="aug1").key()
    photo = Protocol(dataset="dogs-cats", data_path="/x")
    assert photo.use_augmentation and not photo.with_(augment_preset="none").use_augmentation
    assert Protocol(dataset="cifar10", augment_preset="aug2").use_augmentation  # a named preset turns it on


def test_stage_one_learning_rate_defaults_to_the_optimizers_paper_value():
    assert Protocol().stage1_lr == 1e-3
    assert Protocol(optimizer="sgd").stage1_lr == 0.01
    assert Protocol(optimizer="sgd", learning_rate=0.5).stage1_lr == 0.5
    assert "stage-1 sgd lr 0.01 momentum 0.99" in Protocol(optimizer="sgd", momentum=0.99).describe()


@pytest.mark.parametrize("bad, says", [
    (dict(architecture="vgg99"), "unknown architecture"),
    (dict(dataset="cifar10", architecture="001-final"), "at least 128x128"),
    (dict(architecture="002-vgg16"), "colour images"),
    (dict(dataset="cifar10", architecture="002-vgg16", augment=True), "cached features"),
    (dict(weights="imagenet"), "ImageNet architectures only"),
    (dict(optimizer="adagrad"), "optimizer"),
    (dict(dataset="dogs-cats", data_path="/x", augment_preset="aug1", image_size=64), "ZCA"),
    (dict(augment=True, augment_preset="none"), "'none'"),
    (dict(per_class=1), "per_class"),
    (dict(dataset="cifar10", architecture="004-model2", engine="lockstep"), "lockstep"),
])
def test_report_options_that_cannot_work_say_why_in_one_line(bad, says):
    with pytest.raises(ValueError, match=says):
        Protocol(**bad)


def test_bn_momentum_is_a_new_experiment_when_set_and_is_checked():
    """The BatchNorm intervention's option: hashed only when set (older records keep their keys), described,
    refused outside [0, 1) in one line."""
    assert Protocol(bn_momentum=0.99).key() == Protocol().key() == "331fd390860ac1bc"
    assert Protocol(bn_momentum=0.9).key() != Protocol().key()
    assert "BatchNorm momentum 0.9" in Protocol(bn_momentum=0.9).describe()
    assert "BatchNorm" not in Protocol().describe()
    for bad, says in ((1.0, "must be in"), (-0.1, "must be in"), (True, "must be a number")):
        with pytest.raises(ValueError, match=f"bn_momentum {says}"):
            Protocol(bn_momentum=bad)


def test_tf32_is_a_precision_of_its_own():
    assert Protocol(precision="tf32").key() not in (Protocol().key(), Protocol(precision="bfloat16").key())
    assert "tf32" in Protocol(precision="tf32").describe()


def test_a_photo_run_at_another_image_size_says_so_in_its_description():
    """Runs at 64x64 px (the CPU's momentum and size experiments) must not read like the paper's 128x128 ones."""
    assert "64x64 px" in Protocol(dataset="dogs-cats", image_size=64).describe()
    assert "px" not in Protocol(dataset="dogs-cats").describe()
    assert "px" not in Protocol(dataset="fashion-mnist", image_size=64).describe()


def test_no_dropout_is_a_new_experiment_only_when_set():
    assert Protocol(no_dropout=False).key() == Protocol().key() == "331fd390860ac1bc"
    assert Protocol(no_dropout=True).key() != Protocol().key()
    assert "no dropout" in Protocol(no_dropout=True).describe() and "dropout" not in Protocol().describe()
