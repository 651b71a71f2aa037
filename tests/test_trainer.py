"""Trainer: learning, early stopping, checkpoints, resume after a kill, determinism, DDP under torchrun."""

from __future__ import annotations

import json
import textwrap
from dataclasses import asdict

import numpy as np
import pytest
import torch
import torch.distributed as dist
from safetensors.torch import load_file

from llm4ctr.errors import DataError, ParamsError
from models.ctr import build_model
from models.distributed import epoch_rows
from models.trainer import FitResult, TrainConfig, Trainer, load_model
from tests.fixtures_ctr import TINY, encoded
from tests.fixtures_distributed import torchrun

HPARAMS = {**TINY["dnn"], "dropout": 0.1}  # dropout: the RNG must be replayed exactly on resume


def _config(**overrides) -> TrainConfig:
    return TrainConfig(
        **{"batch_size": 256, "max_epochs": 4, "patience": 10, "lr": 3e-3, "progress": False, **overrides}
    )


def _model(seed: int = 0, **hparams):
    torch.manual_seed(seed)
    return build_model("dnn", encoded()[0].vocab_sizes, **{**HPARAMS, **hparams})


def _fit(ckpt_dir, model=None, resume=True, **overrides) -> tuple[Trainer, FitResult]:
    trainer = Trainer(model or _model(), _config(**overrides))
    _, train, valid, _ = encoded()
    return trainer, trainer.fit(train, valid, ckpt_dir, resume=resume)


def _weights(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)


def _without_timing(result: FitResult) -> dict:
    data = asdict(result)
    data["history"] = [{k: v for k, v in row.items() if k != "seconds"} for row in data["history"]]
    return data


def test_fit_learns_and_writes_a_loadable_checkpoint(tmp_path):
    trainer, result = _fit(tmp_path)
    assert result.epochs == 4 and len(result.history) == 4 and not result.stopped_early
    assert result.best_auc == max(row["valid_auc"] for row in result.history) > 0.7
    assert {p.name for p in tmp_path.iterdir()} == {"model.json", "model.safetensors", "state.pt", "history.json"}
    assert json.loads((tmp_path / "history.json").read_text()) == result.history
    test = encoded()[3]
    np.testing.assert_array_equal(trainer.predict(test), Trainer(load_model(tmp_path), _config()).predict(test))
    metrics = trainer.evaluate(test)
    assert 0.7 < metrics["auc"] <= 1 and 0 < metrics["logloss"] < 0.69


def test_early_stopping_keeps_the_best_epoch(tmp_path):
    trainer, result = _fit(tmp_path, lr=0.05, patience=2, max_epochs=30)  # overfits quickly
    assert result.stopped_early
    assert result.epochs == result.best_epoch + 2 < 30
    assert all(row["valid_auc"] <= result.best_auc for row in result.history)
    _assert_same_weights(_weights(trainer.model), load_file(tmp_path / "model.safetensors"))


def test_same_seed_same_weights_other_seed_other_weights(tmp_path):
    first, _ = _fit(tmp_path / "a")
    second, _ = _fit(tmp_path / "b")
    _assert_same_weights(_weights(first.model), _weights(second.model))
    other, _ = _fit(tmp_path / "c", seed=7)
    assert not torch.equal(_weights(first.model)["mlp.net.0.weight"], _weights(other.model)["mlp.net.0.weight"])


def test_accumulated_parts_give_the_gradient_of_the_whole_batch(tmp_path):
    """4 forward passes of 64 rows per step of 256: the model of one pass per step (no dropout here)."""
    whole, whole_fit = _fit(tmp_path / "a", _model(dropout=0.0), max_epochs=2)
    model, sizes = _model(dropout=0.0), []
    forward = model.forward
    model.forward = lambda batch: (model.training and sizes.append(len(batch["label"])), forward(batch))[1]
    parts, parts_fit = _fit(tmp_path / "b", model, max_epochs=2, accumulate=4)
    rows = len(encoded()[1]["label"])
    assert max(sizes) == 64 and len(sizes) == 2 * (4 * (rows // 256) + -(-(rows % 256) // 64))  # 4 passes a step
    for key, value in _weights(whole.model).items():
        torch.testing.assert_close(_weights(parts.model)[key], value, atol=1e-5, rtol=1e-4, msg=key)
    assert [h["train_loss"] for h in parts_fit.history] == pytest.approx([h["train_loss"] for h in whole_fit.history])


class Killed(Exception):
    """Stands in for SIGKILL: raised from inside a training step."""


def _kill_at_call(model, call: int):
    """Make the model's ``call``-th forward raise ``Killed`` (mid-epoch, after some optimizer steps)."""
    forward, calls = model.forward, [0]

    def dying_forward(batch):
        calls[0] += 1
        if calls[0] == call:
            raise Killed
        return forward(batch)

    model.forward = dying_forward
    return model


def test_resume_after_a_kill_reaches_the_uninterrupted_result(tmp_path):
    full, full_result = _fit(tmp_path / "full", max_epochs=5)

    steps_per_epoch = -(-len(encoded()[1]["label"]) // 256)  # 13 training forwards + 1 eval forward per epoch
    with pytest.raises(Killed):
        _fit(tmp_path / "killed", model=_kill_at_call(_model(), 2 * (steps_per_epoch + 1) + 5), max_epochs=5)
    assert torch.load(tmp_path / "killed" / "state.pt", weights_only=True)["epoch"] == 2

    # a fresh process would build the model with other random weights: the checkpoint must win
    resumed, resumed_result = _fit(tmp_path / "killed", model=_model(seed=123), max_epochs=5)
    assert _without_timing(resumed_result) == _without_timing(full_result)
    _assert_same_weights(_weights(resumed.model), _weights(full.model))
    _assert_same_weights(
        load_file(tmp_path / "killed" / "model.safetensors"), load_file(tmp_path / "full" / "model.safetensors")
    )


def test_resume_extends_a_finished_run_and_a_finished_run_returns_at_once(tmp_path):
    _, short = _fit(tmp_path / "run", max_epochs=2)
    state_file = tmp_path / "run" / "state.pt"
    stamp = state_file.stat().st_mtime_ns
    _, again = _fit(tmp_path / "run", max_epochs=2)
    assert again == short and state_file.stat().st_mtime_ns == stamp  # nothing retrained or rewritten

    extended, extended_result = _fit(tmp_path / "run", model=_model(seed=5), max_epochs=4)
    straight, straight_result = _fit(tmp_path / "straight", max_epochs=4)
    assert _without_timing(extended_result) == _without_timing(straight_result)
    _assert_same_weights(_weights(extended.model), _weights(straight.model))


def test_resume_refuses_a_checkpoint_of_another_model_and_resume_false_starts_over(tmp_path):
    _fit(tmp_path, max_epochs=1)
    with pytest.raises(ParamsError, match="resume=False"):
        _fit(tmp_path, model=_model(hidden_units=[8]), max_epochs=1)
    _, fresh = _fit(tmp_path, model=_model(hidden_units=[8]), resume=False, max_epochs=1)
    assert fresh.epochs == 1 and len(fresh.history) == 1


class WithAuxLoss(torch.nn.Module):
    """Not a zoo model: a wrapper adding an auxiliary loss, as ClickPrompt or LEARN heads would."""

    def __init__(self):
        super().__init__()
        self.inner = _model()

    def forward(self, batch):
        out = self.inner(batch)
        return {"logit": out["logit"], "aux_loss": 0.01 * out["q"].pow(2).mean()}


def test_any_module_returning_a_logit_can_be_trained_and_resumed(tmp_path):
    trainer, result = _fit(tmp_path, model=WithAuxLoss(), max_epochs=2)
    assert result.best_auc > 0.6 and not (tmp_path / "model.json").exists()
    _, again = _fit(tmp_path, model=WithAuxLoss(), max_epochs=2)
    assert again == result
    with pytest.raises(ParamsError, match="resume=False"):
        _fit(tmp_path, max_epochs=2)  # a zoo DNN cannot take over the wrapper's checkpoint


def test_input_errors_name_the_problem(tmp_path):
    _, train, valid, _ = encoded()
    trainer = Trainer(_model(), _config())
    with pytest.raises(DataError, match="label"):
        trainer.fit({k: v for k, v in train.items() if k != "label"}, valid, tmp_path)
    with pytest.raises(DataError, match="single class"):
        trainer.fit(train, {**valid, "label": np.ones_like(valid["label"])}, tmp_path)
    with pytest.raises(ParamsError, match="device"):
        TrainConfig(device="tpu")
    with pytest.raises(ParamsError, match="epochs"):
        TrainConfig.from_dict({"lr": 1e-3, "epochs": 3})
    assert TrainConfig.from_dict({"batch_size": 64}).batch_size == 64


def test_epoch_shards_cover_the_permutation_like_distributed_sampler():
    shards = [epoch_rows(5, seed=1, epoch=3, rank=r, world=2) for r in range(2)]
    assert [len(s) for s in shards] == [3, 3]  # padded to 6 by wrapping around
    assert set(torch.cat(shards).tolist()) == set(range(5))
    torch.testing.assert_close(epoch_rows(5, 1, 3, 0, 1), epoch_rows(5, 1, 3, 0, 1))
    assert not torch.equal(epoch_rows(50, 1, 3, 0, 1), epoch_rows(50, 1, 4, 0, 1))  # reshuffled every epoch


DDP_SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np, torch
    from models.ctr import build_model
    from models.trainer import TrainConfig, Trainer

    torch.set_num_threads(1)
    spec = json.load(open(sys.argv[1]))
    data = np.load(sys.argv[2])
    split = lambda prefix: {k[len(prefix):]: data[k] for k in data.files if k.startswith(prefix)}
    torch.manual_seed(0)
    model = build_model("dnn", spec["vocab_sizes"], **spec["hparams"])
    trainer = Trainer(model, TrainConfig(**spec["config"]))
    result = trainer.fit(split("train/"), split("valid/"), sys.argv[3])
    if trainer.rank == 0:
        np.save(sys.argv[3] + "/valid_pred.npy", trainer.predict(split("valid/")))
        losses = [h["train_loss"] for h in result.history]
        summary = {"best_epoch": result.best_epoch, "best_auc": result.best_auc, "losses": losses}
        json.dump(summary, open(sys.argv[3] + "/result.json", "w"))
""")


@pytest.mark.skipif(not dist.is_available(), reason="torch built without torch.distributed")
def test_ddp_with_two_cpu_processes_matches_single_process(tmp_path):
    """2 gloo ranks, each half of every global batch, ~15 s; same model as one process within float noise."""
    encoder, train, valid, _ = encoded()
    hparams = TINY["dnn"]  # no dropout: ranks draw their own masks, which one process cannot reproduce
    config = {"batch_size": 256, "max_epochs": 3, "patience": 10, "lr": 3e-3, "progress": False}
    (tmp_path / "spec.json").write_text(  # the ranks also accumulate 2 parts per step: DDP syncs once
        json.dumps({"vocab_sizes": encoder.vocab_sizes, "hparams": hparams, "config": {**config, "accumulate": 2}})
    )
    np.savez(
        tmp_path / "data.npz",
        **{f"train/{k}": v for k, v in train.items()},
        **{f"valid/{k}": v for k, v in valid.items()},
    )
    (tmp_path / "ddp_train.py").write_text(DDP_SCRIPT)
    out = tmp_path / "ddp"
    torchrun(tmp_path / "ddp_train.py", tmp_path / "spec.json", tmp_path / "data.npz", out, timeout=120)

    torch.manual_seed(0)
    single = Trainer(build_model("dnn", encoder.vocab_sizes, **hparams), TrainConfig(**config))
    result = single.fit(train, valid, tmp_path / "single")
    ddp_result = json.loads((out / "result.json").read_text())
    assert ddp_result["best_epoch"] == result.best_epoch
    assert ddp_result["best_auc"] == pytest.approx(result.best_auc, abs=1e-4)
    assert ddp_result["losses"] == pytest.approx([h["train_loss"] for h in result.history], abs=1e-5)  # all rows
    np.testing.assert_allclose(np.load(out / "valid_pred.npy"), single.predict(valid), atol=1e-4)
