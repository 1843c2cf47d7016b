import os
import stat

import pytest
import torch

from crossgap_lib.cache import (
    ChunkStore,
    atomic_save,
    cache_key,
    check_writable,
    module_fingerprint,
    safe_load,
    tensor_fingerprint,
)


def test_cache_key_is_order_independent_and_sensitive():
    assert cache_key(a=1, b=[1, 2]) == cache_key(b=[1, 2], a=1)
    assert cache_key(a=1, b=[1, 2]) != cache_key(a=1, b=[2, 1])
    assert cache_key(lr=0.02) != cache_key(lr=0.0200001)
    assert cache_key(x=torch.ones(3)) != cache_key(x=torch.zeros(3))


def test_fingerprints_follow_content():
    t = torch.arange(6.0)
    assert tensor_fingerprint(t) == tensor_fingerprint(t.clone())
    assert tensor_fingerprint(t) != tensor_fingerprint(t.view(2, 3))
    a, b = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    assert module_fingerprint(a) != module_fingerprint(b)
    b.load_state_dict(a.state_dict())
    assert module_fingerprint(a) == module_fingerprint(b)


def test_atomic_save_roundtrip_and_corrupt_file(tmp_path):
    path = tmp_path / "x.pt"
    atomic_save({"v": torch.ones(2)}, path)
    assert torch.equal(safe_load(path)["v"], torch.ones(2))
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    path.write_bytes(b"not a checkpoint")
    with pytest.warns(UserWarning, match="corrupt"):
        assert safe_load(path) is None


def _square(calls):
    def fn(start, stop):
        calls.append(start)
        return {"y": torch.arange(start, stop, dtype=torch.float32) ** 2}

    return fn


def test_chunkstore_resumes_after_interruption(tmp_path):
    calls = []
    store = ChunkStore(tmp_path, "k", n_items=10, chunk_size=3)

    def failing(start, stop):
        if start == 6:
            raise KeyboardInterrupt
        return _square(calls)(start, stop)

    with pytest.raises(KeyboardInterrupt):
        store.compute_chunks(failing, progress=False)
    assert calls == [0, 3]
    calls.clear()
    result = store.get_or_compute(_square(calls), progress=False)
    assert calls == [6, 9]  # only the chunks not yet stored
    assert torch.equal(result["y"], torch.arange(10, dtype=torch.float32) ** 2)
    calls.clear()
    again = ChunkStore(tmp_path, "k", n_items=10, chunk_size=3).get_or_compute(_square(calls), progress=False)
    assert calls == [] and torch.equal(again["y"], result["y"])


def test_corrupt_chunk_is_recomputed_not_used(tmp_path):
    calls = []
    store = ChunkStore(tmp_path, "k", n_items=4, chunk_size=2)
    store.compute_chunks(_square(calls), progress=False)
    store.chunk_path(1).write_bytes(b"garbage")
    calls.clear()
    with pytest.warns(UserWarning, match="corrupt"):
        result = store.get_or_compute(_square(calls), progress=False)
    assert calls == [2]
    assert torch.equal(result["y"], torch.tensor([0.0, 1, 4, 9]))


def test_chunk_with_wrong_rows_is_recomputed(tmp_path):
    store = ChunkStore(tmp_path, "k", n_items=4, chunk_size=2)
    atomic_save({"y": torch.zeros(5)}, store.chunk_path(0))
    calls = []
    with pytest.warns(UserWarning, match="wrong content"):
        store.compute_chunks(_square(calls), progress=False)
    assert calls == [0, 2]


def test_unwritable_cache_dir_error_as_root(tmp_path, monkeypatch):
    target = tmp_path / "file_not_folder"
    target.write_text("x")  # a file where a folder is needed: not writable as a cache, even for root
    with pytest.raises(PermissionError, match="not writable"):
        ChunkStore(target, "k", 2, 1).compute_chunks(_square([]), progress=False)


def test_bad_sizes():
    with pytest.raises(ValueError, match="n_items"):
        ChunkStore("x", "k", 0, 1)
    with pytest.raises(ValueError, match="chunk_size"):
        ChunkStore("x", "k", 3, 0)


def test_fingerprint_of_zero_dim_tensors_and_clip_like_modules():
    assert tensor_fingerprint(torch.tensor(2.0)) != tensor_fingerprint(torch.tensor(3.0))
    module = torch.nn.Module()
    module.logit_scale = torch.nn.Parameter(torch.tensor(4.6))
    assert len(module_fingerprint(module)) == 16


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_cache_files_follow_the_umask_not_mkstemps_0600(tmp_path, umask):
    previous = os.umask(umask)
    try:
        store = ChunkStore(tmp_path, "k", 4, 2)
        store.compute_chunks(_square([]), progress=False)
        chunk_modes = {stat.S_IMODE(store.chunk_path(i).stat().st_mode) for i in range(2)}
        store.merge()
        result_mode = stat.S_IMODE(store.result_path.stat().st_mode)
    finally:
        os.umask(previous)
    assert chunk_modes == {0o666 & ~umask} and result_mode == 0o666 & ~umask  # group-readable: a shared cache works


def test_check_writable_names_the_folder_and_the_fix(tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    with pytest.raises(PermissionError, match=r"run folder .*blocker/sub is not writable .*pass out_dir="):
        check_writable(blocker / "sub", what="run folder", hint="pass out_dir=...")


def test_computed_once_reads_a_result_another_process_left(tmp_path, monkeypatch):
    from crossgap_lib.cache import computed_once

    store, calls = {}, []

    def compute():
        calls.append(1)
        store["result"] = "trained"
        return store["result"]

    assert computed_once(tmp_path, lambda: store.get("result"), compute) == "trained"
    assert computed_once(tmp_path, lambda: store.get("result"), compute) == "trained" and len(calls) == 1
    assert (tmp_path / ".lock").exists()
    monkeypatch.setenv("WORLD_SIZE", "2")  # torchrun: the ranks compute together, without a lock between them
    assert computed_once(tmp_path / "ranks", lambda: None, compute) == "trained" and len(calls) == 2
    assert not (tmp_path / "ranks").exists()
