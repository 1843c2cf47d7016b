"""Tests of crossgap_lib.train on crossgap-micro with a few dozen generated images (each run takes seconds)."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from crossgap_lib.cache import safe_load
from crossgap_lib.train import TrainConfig, augment_views, run_dir, train_clip

REPO = Path(__file__).resolve().parents[1]


def tiny_config(tmp_path: Path, **overrides) -> TrainConfig:
    values = dict(
        model="crossgap-micro", n_train=64, batch_size=16, epochs=2, warmup=2, lr=2e-3, num_threads=1,
        checkpoint_every=3, progress=False, out_dir=str(tmp_path), data={"n_captions": 2, "max_distractors": 1},
    )
    values.update(overrides)
    return TrainConfig(**values)


def final_state(result) -> dict[str, torch.Tensor]:
    return safe_load(result.checkpoint_path)["state_dict"]


def assert_same_state(a: dict, b: dict, atol: float = 0.0) -> None:
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=atol, rtol=0 if atol == 0 else 1e-4, msg=name)


# ------------------------------------------------------------------------------------------------ config
@pytest.mark.parametrize(
    "field, value, match",
    [
        ("loss", "triplet", "loss must be one of"),
        ("temperature", 0.0, "temperature must be None"),
        ("temperature", -1.0, "temperature must be None"),
        ("epochs", 0, "epochs must be a positive int"),
        ("batch_size", 1.5, "batch_size must be a positive int"),
        ("batch_size", 128, "must not exceed n_train"),
        ("warmup", -1, "warmup must be >= 0"),
        ("lr", 0.0, "lr must be positive"),
        ("data", [1, 2], "data must be a dict"),
        ("weight_decay", -1, "weight_decay must be >= 0"),
        ("weight_decay", float("nan"), "weight_decay must be >= 0"),
        ("warmup", "5", "warmup must be >= 0 \\(an int\\), got '5'"),
        ("lr", "1e-3", "lr must be positive"),
        ("seed", -1, "seed must be >= 0"),
        ("soft_target_temperature", 0, "soft_target_temperature must be positive"),
        ("intra_weight", -0.5, "intra_weight must be >= 0"),
        ("model", None, "model must be a non-empty str"),
        ("out_dir", 3, "out_dir must be None or a str"),
        ("progress", "no", "progress must be True or False"),
        ("data", {"bogus": 1}, r"data has unknown ShapesConfig field\(s\) \['bogus'\]"),
        ("data", {"n_captions": 0}, "data: invalid ShapesConfig override .*n_captions"),
    ],
)
def test_config_validation(tmp_path, field, value, match):
    with pytest.raises(ValueError, match=match):
        tiny_config(tmp_path, **{field: value})


def test_config_from_dict_round_trip_and_unknown_field(tmp_path):
    config = tiny_config(tmp_path, temperature=0.01)
    assert TrainConfig.from_dict(asdict(config)) == config
    with pytest.raises(ValueError, match="unknown TrainConfig fields \\['epoch'\\]"):
        TrainConfig.from_dict({"epoch": 3})


def test_key_ignores_bookkeeping_fields_only(tmp_path):
    config = tiny_config(tmp_path)
    same = tiny_config(tmp_path / "elsewhere", progress=True, num_threads=2, checkpoint_every=7)
    assert config.key() == same.key()
    assert config.key() != tiny_config(tmp_path, seed=1).key()
    assert config.key() != tiny_config(tmp_path, data={"n_captions": 3}).key()


def test_unknown_model_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="not a registered open_clip config"):
        train_clip(tiny_config(tmp_path, model="no-such-model"))


# ------------------------------------------------------------------------------------------------ augmentations
def test_captions_tokenized_once_each_equal_the_tokenizer():
    import open_clip

    from crossgap_lib.cache import encode_distinct

    tokenizer = open_clip.get_tokenizer("crossgap-small")
    texts = ["a red circle", "a blue square", "a red circle", "a star", "a blue square"]
    assert torch.equal(encode_distinct(texts, tokenizer), tokenizer(texts))


def test_augment_views_is_seeded_and_changes_images():
    images = (torch.rand(6, 3, 32, 32) * 255).to(torch.uint8)
    first = augment_views(images, torch.Generator().manual_seed(0))
    again = augment_views(images, torch.Generator().manual_seed(0))
    other = augment_views(images, torch.Generator().manual_seed(1))
    assert first.dtype == torch.uint8 and first.shape == images.shape
    assert torch.equal(first, again)
    assert not torch.equal(first, other)
    assert not torch.equal(first, images)
    identity = augment_views(images, torch.Generator(), crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), flip_p=0.0,
                             jitter=0.0)
    assert (identity.int() - images.int()).abs().max() <= 1  # resampling on the pixel grid is exact up to rounding
    with pytest.raises(ValueError, match="uint8"):
        augment_views(images.float(), torch.Generator())


# ------------------------------------------------------------------------------------------------ training
def test_training_is_deterministic_and_cached(tmp_path):
    first = train_clip(tiny_config(tmp_path / "a"))
    second = train_clip(tiny_config(tmp_path / "b"))
    assert not first.from_cache and first.steps == 8 == len(first.losses)
    assert_same_state(final_state(first), final_state(second))
    assert first.losses == second.losses

    calls = []
    cached = train_clip(tiny_config(tmp_path / "a"), callback=lambda step, loss: calls.append(step))
    assert cached.from_cache and calls == [] and cached.losses == first.losses
    assert Path(cached.checkpoint_path).parent == run_dir(tiny_config(tmp_path / "a"))
    assert not (Path(cached.run_dir) / "state.pt").exists()  # resumable state removed once finished

    different_seed = train_clip(tiny_config(tmp_path / "a", seed=1))
    assert not torch.equal(final_state(first)["text_projection"], final_state(different_seed)["text_projection"])


def test_resume_after_interruption_equals_uninterrupted_run(tmp_path):
    reference = train_clip(tiny_config(tmp_path / "ref"))

    class Interrupt(Exception):
        pass

    def stop_at_five(step: int, loss: float) -> None:
        if step == 5:
            raise Interrupt

    config = tiny_config(tmp_path / "resumed")
    with pytest.raises(Interrupt):
        train_clip(config, callback=stop_at_five)
    state = safe_load(run_dir(config) / "state.pt")
    assert state["step"] == 3 and len(state["losses"]) == 3  # last checkpoint before the interruption
    assert not (run_dir(config) / "model.pt").exists()

    steps_run = []
    resumed = train_clip(config, callback=lambda step, loss: steps_run.append(step))
    assert steps_run == [4, 5, 6, 7, 8]
    assert resumed.losses == reference.losses
    assert_same_state(final_state(resumed), final_state(reference))


def test_fixed_temperature_stays_fixed_and_learnable_moves(tmp_path):
    fixed = train_clip(tiny_config(tmp_path, temperature=0.5))
    assert all(scale == pytest.approx(2.0) for scale in fixed.logit_scales)
    assert fixed.temperature == pytest.approx(0.5)
    assert float(final_state(fixed)["logit_scale"]) == pytest.approx(math.log(2.0))

    learnable = train_clip(tiny_config(tmp_path, lr=2e-2))
    assert learnable.logit_scales[0] != pytest.approx(1 / 0.07, abs=1e-4)
    assert learnable.logit_scales[-1] != pytest.approx(learnable.logit_scales[0], abs=1e-3)
    assert all(0 < scale <= 100 + 1e-4 for scale in learnable.logit_scales)


def test_checkpoint_is_weights_only_and_loads_with_load_clip(tmp_path):
    result = train_clip(tiny_config(tmp_path, temperature=0.01))
    saved = torch.load(result.checkpoint_path, map_location="cpu", weights_only=True)
    assert saved["model_name"] == "crossgap-micro" and saved["config"]["temperature"] == 0.01
    loaded = result.load()
    assert_same_state(loaded.model.state_dict(), saved["state_dict"])
    assert loaded.tokenizer(["a red circle"]).shape == (1, 16)
    assert float(loaded.model.logit_scale.detach().exp()) == pytest.approx(100.0)


def test_intra_loss_trains_a_projection_head(tmp_path):
    result = train_clip(tiny_config(tmp_path, loss="intra", epochs=1, projection_dim=8))
    saved = safe_load(result.checkpoint_path)
    head = saved["projection_head"]
    assert head["net.2.weight"].shape == (8, 32)
    assert all(math.isfinite(x) for x in result.losses)
    plain = train_clip(tiny_config(tmp_path, epochs=1))
    assert result.losses[0] > plain.losses[0]  # CLIP term plus a positive SimCLR term


# ------------------------------------------------------------------------------------------------ DDP
DDP_SCRIPT = """
import json, sys
import torch
from crossgap_lib.train import TrainConfig, train_clip
result = train_clip(TrainConfig.from_dict(json.loads(sys.argv[1])))
print("RESULT", result.checkpoint_path)
"""


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("torchrun") is None and not (Path(sys.executable).parent / "torchrun").exists(),
                    reason="torchrun not installed")
def test_torchrun_two_processes_match_single_process(tmp_path):
    single = train_clip(tiny_config(tmp_path / "single", epochs=1))
    config = tiny_config(tmp_path / "ddp", epochs=1)
    script = tmp_path / "run_ddp.py"
    script.write_text(DDP_SCRIPT)
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    completed = subprocess.run(
        [torchrun, "--standalone", "--nproc_per_node", "2", str(script), json.dumps(asdict(config))],
        capture_output=True, text=True, env=env, timeout=240, cwd=REPO,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    saved = safe_load(run_dir(config) / "model.pt")
    assert saved["world_size"] == 2
    assert len(set(saved["rank_fingerprints"])) == 1  # both ranks ended with identical parameters
    # same global batch, same samples: equal to a single process up to float reduction order
    assert saved["losses"].tolist() == pytest.approx(single.losses, rel=1e-4, abs=1e-5)
    assert_same_state(saved["state_dict"], final_state(single), atol=1e-4)


def test_soft_loss_uses_cached_teacher_embeddings(tmp_path):
    config = tiny_config(tmp_path, loss="soft", epochs=1, soft_target_temperature=0.05)
    result = train_clip(config)
    assert all(math.isfinite(x) for x in result.losses) and len(result.losses) == 4
    assert any(tmp_path.joinpath("teacher_image").iterdir()) and any(tmp_path.joinpath("teacher_text").iterdir())
    hard = train_clip(tiny_config(tmp_path, loss="soft", epochs=1, soft_hard_weight=1.0))
    plain = train_clip(tiny_config(tmp_path, epochs=1))
    # hard_weight=1 turns the soft targets into the identity: the same run as the plain CLIP loss
    assert hard.losses == pytest.approx(plain.losses, rel=1e-5)
    soft_weights, plain_weights = final_state(result)["text_projection"], final_state(plain)["text_projection"]
    assert (soft_weights - plain_weights).abs().max() > 1e-4  # soft targets (tau 0.05) do change the training


def test_compact_vocabulary_trains_the_same_model(tmp_path):
    compact = train_clip(tiny_config(tmp_path, epochs=1, weight_decay=0.2))
    dense = train_clip(tiny_config(tmp_path, epochs=1, weight_decay=0.2, compact_vocabulary=False))
    assert compact.losses == pytest.approx(dense.losses, rel=1e-5)
    a, b = final_state(compact), final_state(dense)
    assert_same_state(a, b, atol=2e-6)
    assert a["token_embedding.weight"].shape == (49408, 32)
    import open_clip

    torch.manual_seed(0)
    initial = open_clip.create_model("crossgap-micro").token_embedding.weight.detach()
    idle = 20000  # a token id no shapes caption uses: only weight decay touched it
    ratio = a["token_embedding.weight"][idle] / initial[idle]
    assert torch.allclose(ratio, ratio[0].expand_as(ratio), atol=1e-5) and 0.99 < float(ratio[0]) < 1.0


def test_unwritable_run_folder_fails_before_the_first_step(tmp_path, monkeypatch):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the run folder must go")  # not writable even for root
    steps = []
    with pytest.raises(PermissionError, match=r"training run folder .*blocker.* is not writable.*out_dir="):
        train_clip(tiny_config(tmp_path, out_dir=str(blocker)), callback=lambda step, loss: steps.append(step))
    assert steps == []  # nothing trained (before the fix: every step ran, then a raw OSError at the first save)
    monkeypatch.setenv("CROSSGAP_CACHE", str(blocker / "cache"))  # out_dir=None: the cache root must be writable
    with pytest.raises(PermissionError, match="out_dir=None, the CROSSGAP_CACHE environment variable"):
        train_clip(tiny_config(tmp_path, out_dir=None), callback=lambda step, loss: steps.append(step))
    assert steps == []


def test_out_dir_may_be_a_path(tmp_path):
    assert tiny_config(tmp_path, out_dir=tmp_path).out_dir == str(tmp_path)
