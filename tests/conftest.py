"""Shared test settings: small thread counts (CI has 2 cores), no network, deterministic seeds."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Each test gets its own crossgap cache root unless it passes one explicitly."""
    monkeypatch.setenv("CROSSGAP_CACHE", str(tmp_path_factory.mktemp("crossgap_cache")))
    torch.manual_seed(0)
