"""FuxiCTR side of bench/bench_fuxictr.py: train one FuxiCTR model for one seed, in FuxiCTR's own venv.

Runs under ``bench/.venv-fuxictr/bin/python`` (torch 2.13.0 + fuxictr 2.3.10, whose pins clash with
the project's), never imports the project, and talks to the bench through files only:

    python bench/fuxictr_runner.py CONFIG.json OUT_DIR

CONFIG.json (written by the bench) names the prepared split files, the fields, the model and the
matched hyper-parameters. OUT_DIR receives ``result.json`` (timings, epochs, vocabulary sizes) and
``test_pred.npy`` / ``test_label.npy`` in split-file row order; the bench scores them with the same
metric code as our side and measures this process's memory from outside.

The FuxiCTR pipeline used is the library's own: ``FeatureProcessor`` (polars statistics, its
tokenizer with ``min_categr_count``, sequence padding), ``FeatureMap``, the npz ``RankDataLoader``
(torch DataLoader, shuffled by torch's RNG) and ``BaseModel.fit`` (Adam, gradient clipping at 10,
early stopping on validation AUC with reduce-LR-on-plateau, best checkpoint reloaded). Only two steps
are done by hand, because 2.3.10 does them through Ray: ``FeatureProcessor.transform`` is called
directly on each split (exactly what ``build_dataset`` hands to ``ray.data.map_batches``), and the
npz loader is used instead of the Ray-Data parquet loader, so no Ray cluster is started and the whole
run stays in one process whose peak RSS and thread count can be matched with ours.

The pip wheel ships only ``model_zoo/LongCTR/DCNv2`` (a long-sequence variant), not the plain DNN,
DeepFM and DCNv2 of FuxiCTR's model_zoo, so those three are defined below from ``fuxictr.pytorch.layers``
exactly as reczoo/FuxiCTR's ``model_zoo/{DNN/DNN_torch,DeepFM/DeepFM_torch,DCNv2}/src`` define them
(Apache-2.0).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from fuxictr.features import FeatureMap
from fuxictr.preprocess import FeatureProcessor
from fuxictr.pytorch.dataloaders import RankDataLoader
from fuxictr.pytorch.layers import CrossNetV2, FactorizationMachine, FeatureEmbedding, MLP_Block
from fuxictr.pytorch.models import BaseModel
from fuxictr.pytorch.torch_utils import seed_everything
from torch import nn

DATASET_ID = "bench"
SPLITS = ("train", "valid", "test")


# ---------------------------------------------------------------------- FuxiCTR model_zoo models
class DNN(BaseModel):
    """model_zoo DNN: MLP_Block over the flat field embeddings, sigmoid output."""

    def __init__(self, feature_map, embedding_dim, hidden_units, learning_rate, **kwargs):
        super().__init__(feature_map, model_id="DNN", **kwargs)
        self.embedding_layer = FeatureEmbedding(feature_map, embedding_dim)
        self.mlp = MLP_Block(
            input_dim=feature_map.sum_emb_out_dim(),
            output_dim=1,
            hidden_units=hidden_units,
            hidden_activations="ReLU",
            output_activation=self.output_activation,
        )
        self.compile(kwargs["optimizer"], kwargs["loss"], learning_rate)
        self.reset_parameters()
        self.model_to_device()

    def forward(self, inputs):
        X = self.get_inputs(inputs)
        return {"y_pred": self.mlp(self.embedding_layer(X, flatten_emb=True))}


class DeepFM(BaseModel):
    """model_zoo DeepFM: FactorizationMachine (FM + LR) plus an MLP_Block, summed before the sigmoid."""

    def __init__(self, feature_map, embedding_dim, hidden_units, learning_rate, **kwargs):
        super().__init__(feature_map, model_id="DeepFM", **kwargs)
        self.embedding_layer = FeatureEmbedding(feature_map, embedding_dim)
        self.fm = FactorizationMachine(feature_map)
        self.mlp = MLP_Block(
            input_dim=feature_map.sum_emb_out_dim(),
            output_dim=1,
            hidden_units=hidden_units,
            hidden_activations="ReLU",
            output_activation=None,
        )
        self.compile(kwargs["optimizer"], kwargs["loss"], learning_rate)
        self.reset_parameters()
        self.model_to_device()

    def forward(self, inputs):
        X = self.get_inputs(inputs)
        feature_emb = self.embedding_layer(X)
        y_pred = self.fm(X, feature_emb) + self.mlp(feature_emb.flatten(start_dim=1))
        return {"y_pred": self.output_activation(y_pred)}


class DCNv2(BaseModel):
    """model_zoo DCNv2, ``model_structure="parallel"``: [CrossNetV2(x0), MLP_Block(x0)] -> fc -> sigmoid."""

    def __init__(self, feature_map, embedding_dim, hidden_units, learning_rate, num_cross_layers, **kwargs):
        super().__init__(feature_map, model_id="DCNv2", **kwargs)
        self.embedding_layer = FeatureEmbedding(feature_map, embedding_dim)
        input_dim = feature_map.sum_emb_out_dim()
        self.crossnet = CrossNetV2(input_dim, num_cross_layers)
        self.parallel_dnn = MLP_Block(
            input_dim=input_dim,
            output_dim=None,
            hidden_units=hidden_units,
            hidden_activations="ReLU",
            output_activation=None,
        )
        self.fc = nn.Linear(input_dim + hidden_units[-1], 1)
        self.compile(kwargs["optimizer"], kwargs["loss"], learning_rate)
        self.reset_parameters()
        self.model_to_device()

    def forward(self, inputs):
        X = self.get_inputs(inputs)
        feature_emb = self.embedding_layer(X, flatten_emb=True)
        final_out = torch.cat([self.crossnet(feature_emb), self.parallel_dnn(feature_emb)], dim=-1)
        return {"y_pred": self.output_activation(self.fc(final_out))}


MODELS = {"dnn": DNN, "deepfm": DeepFM, "dcnv2": DCNv2}


# ---------------------------------------------------------------------- data
def feature_columns(fields: list[dict]) -> list[dict]:
    """FuxiCTR feature_cols for the bench's fields: every field a string token, ``multi`` a sequence."""
    cols = []
    for field in fields:
        col = {"name": field["name"], "active": True, "dtype": "str", "type": "categorical"}
        if field["kind"] == "multi":
            col.update(type="sequence", splitter=field["separator"], feature_encoder="layers.MaskedAveragePooling()")
        cols.append(col)
    return cols


def build_npz(config: dict, data_root: Path) -> tuple[FeatureMap, dict[str, str], float]:
    """Fit FuxiCTR's FeatureProcessor on train and encode every split to npz; returns the feature map,
    the npz paths and the preprocessing seconds."""
    started = time.perf_counter()
    processor = FeatureProcessor(
        feature_cols=feature_columns(config["fields"]),
        label_col={"name": "label", "dtype": "float"},
        dataset_id=DATASET_ID,
        data_root=str(data_root),
    )
    frames = {
        split: processor.preprocess(processor.read_data(config["data"][split], data_format="parquet"))
        for split in SPLITS
    }
    processor.fit(frames["train"], min_categr_count=config["min_count"])
    paths = {}
    for split in SPLITS:
        table = frames[split].collect()
        batch = {name: table[name].to_numpy() for name in table.columns}
        encoded = processor.transform(batch)
        paths[split] = str(data_root / DATASET_ID / f"{split}.npz")
        np.savez(paths[split], **{name: np.asarray(values) for name, values in encoded.items()})
    feature_map = FeatureMap(DATASET_ID, str(data_root / DATASET_ID))
    feature_map.load(processor.json_file, {"embedding_dim": config["hparams"]["embedding_dim"]})
    return feature_map, paths, time.perf_counter() - started


# ---------------------------------------------------------------------- timing
class Clock:
    """Instruments a BaseModel instance: training rows seen, wall and CPU time of train_epoch and of the
    eval_step inside it, validation metrics per evaluation."""

    def __init__(self, model: BaseModel, label: str):
        self.rows = 0
        self.epoch = {"wall": [], "cpu": []}
        self.evals = {"wall": [], "cpu": []}
        self.valid: list[dict] = []
        train_step, evaluate = model.train_step, model.evaluate

        def counted_train_step(batch):
            self.rows += len(batch[label])
            return train_step(batch)

        def logged_evaluate(generator, metrics=None):
            logs = evaluate(generator, metrics)
            self.valid.append({k: float(v) for k, v in logs.items()})
            return logs

        model.train_step, model.evaluate = counted_train_step, logged_evaluate
        model.train_epoch = self._timed(model.train_epoch, self.epoch)
        model.eval_step = self._timed(model.eval_step, self.evals)

    @staticmethod
    def _timed(func, into: dict):
        def timed(*args):
            wall, cpu = time.perf_counter(), time.process_time()
            func(*args)
            into["wall"].append(time.perf_counter() - wall)
            into["cpu"].append(time.process_time() - cpu)

        return timed

    def epoch_seconds(self, kind: str) -> list[float]:
        """Pure training time per epoch (``wall`` or ``cpu``): each train_epoch minus the evaluation (and
        best-model checkpoint) that BaseModel runs at its end."""
        return [epoch - evals for epoch, evals in zip(self.epoch[kind], self.evals[kind], strict=True)]


def peak_rss_mb() -> float:
    """This process's RSS high-water mark so far (VmHWM) in MB."""
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) / 1024


def run(config: dict, out_dir: Path) -> dict:
    """Preprocess, train, predict the test split; returns the result record (the bench adds memory)."""
    threads = int(config["threads"])
    torch.set_num_threads(threads)
    seed_everything(config["seed"])
    hp = config["hparams"]
    work = out_dir / "fuxictr"
    feature_map, paths, preprocess_seconds = build_npz(config, work / "data")
    train_gen, valid_gen, test_gen = RankDataLoader(
        feature_map,
        stage="both",
        train_data=paths["train"],
        valid_data=paths["valid"],
        test_data=paths["test"],
        batch_size=hp["batch_size"],
        shuffle=True,
        data_format="npz",
        num_workers=config["num_workers"],
    )
    seed_everything(config["seed"])  # model init and the shuffle order depend on the seed only
    model_kwargs = dict(
        embedding_dim=hp["embedding_dim"],
        hidden_units=list(hp["hidden_units"]),
        learning_rate=hp["lr"],
        gpu=-1,
        task="binary_classification",
        optimizer="adam",
        loss="binary_crossentropy",
        metrics=["AUC", "logloss"],
        monitor="AUC",
        monitor_mode="max",
        early_stop_patience=hp["patience"],
        model_root=str(work / "checkpoints"),
        verbose=0,
        embedding_regularizer=None,
        net_regularizer=None,
    )
    if config["model"] == "dcnv2":
        model_kwargs["num_cross_layers"] = hp["num_cross_layers"]
    model = MODELS[config["model"]](feature_map, **model_kwargs)
    os.makedirs(model.model_dir, exist_ok=True)
    clock = Clock(model, feature_map.labels[0])
    rss_before_fit_mb = peak_rss_mb()
    model.fit(train_gen, epochs=hp["max_epochs"], validation_data=valid_gen)
    prediction = model.predict(test_gen)
    labels = np.load(paths["test"])["label"]
    np.save(out_dir / "test_pred.npy", prediction)
    np.save(out_dir / "test_label.npy", labels)
    aucs = [v["AUC"] for v in clock.valid]
    return {
        "side": "fuxictr",
        "model": config["model"],
        "seed": config["seed"],
        "threads": torch.get_num_threads(),
        "train_rows": clock.rows,
        "epoch_seconds": clock.epoch_seconds("wall"),
        "epoch_cpu_seconds": clock.epoch_seconds("cpu"),
        "epochs": len(clock.epoch["wall"]),
        "best_epoch": int(np.argmax(aucs)) + 1,
        "valid_auc": max(aucs),
        "valid_history": clock.valid,
        "preprocess_seconds": preprocess_seconds,
        "rss_before_fit_mb": rss_before_fit_mb,
        "vocab_sizes": {name: spec["vocab_size"] for name, spec in feature_map.features.items()},
        "n_params": sum(p.numel() for p in model.parameters()),
    }


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: fuxictr_runner.py CONFIG.json OUT_DIR", file=sys.stderr)
        return 2
    config = json.loads(Path(argv[0]).read_text())
    out_dir = Path(argv[1])
    out_dir.mkdir(parents=True, exist_ok=True)
    result = run(config, out_dir)
    (out_dir / "result.json").write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
