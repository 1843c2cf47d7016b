import importlib

import pytest

import crossgap_lib


@pytest.mark.parametrize("name", crossgap_lib.__all__)
def test_every_public_name_resolves(name):
    assert getattr(crossgap_lib, name) is not None


def test_unknown_attribute_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        crossgap_lib.nope  # noqa: B018


def test_import_is_cheap():
    module = importlib.reload(crossgap_lib)
    assert "crossgap_lib.train" not in module.__dict__
