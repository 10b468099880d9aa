import pytest

from core.config import Protocol


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
    # the canonical dataset is the same wherever it is read from
    assert base.key() == Protocol(data_path="/somewhere/else").key()
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
