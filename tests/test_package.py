import subprocess
import sys

import pytest

import crossgap_lib


@pytest.mark.parametrize("name", crossgap_lib.__all__)
def test_every_public_name_resolves(name):
    assert getattr(crossgap_lib, name) is not None


def test_unknown_attribute_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        crossgap_lib.nope  # noqa: B018


def test_import_is_cheap():
    code = "import sys, crossgap_lib; print(sorted(m for m in sys.modules if m.startswith(('crossgap_lib.', 'torch'))))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"  # no submodule, not even torch, until a public name is used
