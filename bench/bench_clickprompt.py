"""Cost of ClickPrompt's two serving paths against plain DCNv2 (GitHub issue 5), one run, same machine;
and the results tables of the real runs.

    python bench/bench_clickprompt.py [--threads 1] [--requests 300] [--train-steps 6]
    python bench/bench_clickprompt.py table --name NAME --base VARIANT [--root DIR] STAGE/VARIANT ...
    python bench/bench_clickprompt.py probe --name NAME [--root DIR] [--variant layerwise] [-S key=value ...]
    python bench/bench_clickprompt.py branches --name NAME [--root DIR] [--variant clickprompt_with_plm] [--seed 2024]

``table`` scores the test predictions of the named variants (e.g. ``train/dcnv2``,
``clickprompt/clickprompt_wo_plm``) exactly as the evaluate stage does (assets.evaluate: AUC, LogLoss,
RelaImpr vs ``--base``, the 2x2 long-tail segments of the paper's Table 6) and writes the tables into
docs/RESULTS_CLICKPROMPT.md between markers named after ``--name``.

``probe`` asks whether a PA-MLM run taught the PLM to read the prompts: it loads the run's resumable
state (weights and MLM head; the params and overrides must name the same run) and compares the MLM
loss on validation texts with each row's own prompts against the same masked texts with prompts
generated from another row's ID features (the batch's ID fields rolled by one). Equal losses mean
the prompts carry nothing the PLM uses yet.

``branches`` loads a finetuned with-PLM model (``artifacts/clickprompt/<ds>/<variant>/seed<s>`` under
``--root``) and scores the test split with each of its parts alone: the fused prediction, the CTR
logit and the PLM logit (AUC overall and per long-tail segment). It says which side carries the
ranking, and whether the PLM side knows anything the CTR side does not.

Three models on the real ML-100K features and texts (``artifacts/features``, ``artifacts/split``, the
PLM of ``plm.name``):

* ``dcnv2``: the zoo model with ``ctr.hparams.dcnv2``;
* ``clickprompt_wo_plm``: the finetuned w/o-PLM checkpoint (``artifacts/clickprompt/<ds>/clickprompt_wo_plm``)
  when present, else the CTR part of the PA-MLM checkpoint; it is a plain DCNv2 either way;
* ``clickprompt_with_plm``: CTR model + prompted PLM (``ClickPromptWithPLM``) from the PA-MLM
  checkpoint when present, else from the public PLM weights (the cost is the same).

Measured, with the models taking turns so machine noise (a shared 2-core CPU) hits all alike:
per-sample inference latency (one request = one row, the ID fields and for the PLM path its
tokenized text; median and p90 over ``--requests``), batched inference throughput (rows/s of a
``--batch``-row call, median over ``--rounds``) and training throughput (samples/s of the median of
``--train-steps`` AdamW steps at each path's training batch size: ``train.batch_size`` for the
CTR-only paths, ``clickprompt.finetune.train.batch_size`` for the PLM path, PLM frozen as in
``clickprompt.finetune.plm_lr``). Medians, because the machine is shared. The table goes to stdout and into
docs/RESULTS_CLICKPROMPT.md between markers (text around them is kept).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from assets.clickprompt import PRETRAIN_STAGE, STAGE, text_arrays, texts  # noqa: E402
from assets.features import load_encoded  # noqa: E402
from assets.pretrained import resolve  # noqa: E402
from assets.train import model_hparams  # noqa: E402
from llm4ctr.atomic import replace_block  # noqa: E402
from llm4ctr.env import apply_defaults  # noqa: E402
from llm4ctr.params import load_params  # noqa: E402
from llm4ctr.paths import artifact_dir  # noqa: E402

RESULTS = ROOT / "docs" / "RESULTS_CLICKPROMPT.md"


def build(params, encoder) -> tuple[dict[str, torch.nn.Module], dict[str, str]]:
    """The three models and where each came from."""
    from transformers import AutoModel

    from models.clickprompt import ClickPromptNet, ClickPromptWithPLM, pretrained_ctr
    from models.ctr import build_model
    from models.trainer import load_model

    dataset = params.get_path("data.name")
    pretrained = artifact_dir(ROOT, PRETRAIN_STAGE, dataset) / "layerwise"
    finetuned = sorted((artifact_dir(ROOT, STAGE, dataset) / "clickprompt_wo_plm").glob("seed*/model.json"))
    name = params.get_path("clickprompt.ctr_model")
    models, sources = {"dcnv2": build_model("dcnv2", encoder.vocab_sizes, **model_hparams(params, "dcnv2"))}, {}
    sources["dcnv2"] = "zoo, fresh"
    if finetuned:
        models["clickprompt_wo_plm"], sources["clickprompt_wo_plm"] = (
            load_model(finetuned[0].parent),
            str(finetuned[0].parent),
        )
    elif (pretrained / "clickprompt.json").is_file():
        models["clickprompt_wo_plm"], sources["clickprompt_wo_plm"] = (
            pretrained_ctr(pretrained),
            str(pretrained / "ctr"),
        )
    if (pretrained / "clickprompt.json").is_file():
        net, sources["clickprompt_with_plm"] = ClickPromptNet.load(pretrained), str(pretrained)
    else:
        plm = resolve(params.get_path("plm.name"))
        net = ClickPromptNet(
            build_model(name, encoder.vocab_sizes, **model_hparams(params, name)),
            AutoModel.from_pretrained(plm),
            int(params.get_path("clickprompt.num_prompts")),
        )
        sources["clickprompt_with_plm"] = f"{plm} (no PA-MLM checkpoint yet)"
    finetune = params.get_path("clickprompt.finetune")
    models["clickprompt_with_plm"] = ClickPromptWithPLM(
        net, finetune["pooling"], tuple(finetune["head_units"]), float(finetune["alpha"]), float(finetune["plm_lr"])
    )
    return models, sources


def batch_of(data: dict[str, np.ndarray], rows: np.ndarray, text: bool) -> dict[str, torch.Tensor]:
    keys = [k for k in data if k != "label" and (text or k not in ("input_ids", "attention_mask"))]
    return {k: torch.as_tensor(data[k][rows]) for k in keys}


def table(argv: list[str]) -> None:
    """Score the named variants' test predictions like the evaluate stage; write the tables."""
    from assets import evaluate
    from assets.runs import PREDICTIONS
    from models.metrics import relaimpr

    parser = argparse.ArgumentParser(prog="bench_clickprompt.py table")
    parser.add_argument("variants", nargs="+", help="STAGE/VARIANT, e.g. train/dcnv2")
    parser.add_argument("--name", required=True, help="marker name of the block in the results doc")
    parser.add_argument("--base", required=True, help="the RelaImpr base (a VARIANT among them)")
    parser.add_argument("--root", default=str(ROOT), help="project root holding the artifacts")
    parser.add_argument("--params", default=str(ROOT / "params.yaml"))
    args = parser.parse_args(argv)
    params = load_params(args.params)
    dataset = params.get_path("data.name")
    root = Path(args.root)
    test_set = evaluate.TestSet.load(params, root)
    results = {}
    for spec in args.variants:
        stage, variant = spec.split("/")
        probs = test_set.seed_probs(artifact_dir(root, stage, dataset) / variant / PREDICTIONS)
        results[variant] = {"stage": stage, **evaluate.aggregate([test_set.score(p) for p in probs.values()])}
    for entry in results.values():
        entry["relaimpr"] = round(relaimpr(entry["auc"], results[args.base]["auc"]), 6)
    text = evaluate.results_markdown(dataset, results, args.base, test_set.segment_rows())
    print(text)
    replace_block(RESULTS, args.name, text)


def _analysis_args(command: str, argv: list[str], **defaults) -> tuple[argparse.Namespace, Path, object]:
    """Parse the options the analyses share (--name, --root, --threads, --params, -S) plus ``defaults``
    (``--variant`` and integer options), set the thread count; (args, root, params)."""
    from llm4ctr.params import parse_override

    parser = argparse.ArgumentParser(prog=f"bench_clickprompt.py {command}")
    parser.add_argument("--name", required=True, help="marker name of the block in the results doc")
    parser.add_argument("--root", default=str(ROOT), help="project root holding the artifacts")
    for option, value in defaults.items():
        parser.add_argument(f"--{option}", type=type(value), default=value)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--params", default=str(ROOT / "params.yaml"))
    parser.add_argument("-S", "--set", action="append", default=[], help="params override key=value")
    args = parser.parse_args(argv)
    apply_defaults()
    torch.set_num_threads(args.threads)
    return args, Path(args.root), load_params(args.params, dict(parse_override(s) for s in args.set))


def probe(argv: list[str]) -> None:
    """MLM loss and accuracy on validation texts with their own vs another row's prompts (``plain``,
    which has no prompts: the loss of its PLM alone on the same masks, the floor the prompts improve on)."""
    from assets.clickprompt import pamlm_objective, pretrain_work_dir

    args, root, params = _analysis_args("probe", argv, variant="layerwise", rows=512)
    dataset = params.get_path("data.name")
    encoder, arrays = load_encoded(root, dataset)
    objective, tokenizer, _ = pamlm_objective(params, encoder.vocab_sizes, args.variant)
    state = torch.load(
        pretrain_work_dir(params, root, args.variant) / "state.pt", map_location="cpu", weights_only=True
    )
    objective.load_state_dict(state["model"])
    objective.eval()
    rows = np.sort(np.random.default_rng(0).choice(len(arrays["valid"]["label"]), args.rows, replace=False))
    data = text_arrays(
        arrays["valid"], texts(root, dataset)["valid"], rows, tokenizer, int(params.get_path("clickprompt.max_length"))
    )
    fields = list(encoder.vocab_sizes)
    sums = {
        name: np.zeros(3) for name in (["own"] if args.variant == "plain" else ["own", "other"])
    }  # loss * masked, correct, masked
    with torch.inference_mode():
        for i, start in enumerate(range(0, args.rows, 64)):
            batch = {k: torch.as_tensor(v[start : start + 64]) for k, v in data.items() if k != "label"}
            rolled = {**batch, **{f: batch[f].roll(1, dims=0) for f in fields}}
            for name, b in zip(sums, (batch, rolled)):
                out = objective(b, generator=torch.Generator().manual_seed(i))  # the same masks for both
                sums[name] += [
                    float(out["loss"]) * out["masked"],
                    float(out["accuracy"]) * out["masked"],
                    out["masked"],
                ]
    result = {
        name: {"mlm_loss": v[0] / v[2], "mlm_accuracy": v[1] / v[2], "masked_tokens": int(v[2])}
        for name, v in sums.items()
    }
    result.update(step=int(state["step"]), rows=args.rows, overrides=args.set, root=str(root))
    said = {"own": "own prompts" if "other" in sums else "no prompts", "other": "another row's prompts"}
    text = (
        f"PA-MLM probe `{args.name}` (step {state['step']}, {args.rows} validation texts, "
        f"{result['own']['masked_tokens']} masked tokens): "
        + "; ".join(
            f"{said[n]} loss {result[n]['mlm_loss']:.4f} / accuracy {result[n]['mlm_accuracy']:.4f}" for n in sums
        )
        + ".\n"
    )
    print(text)
    print(json.dumps(result, indent=2))
    replace_block(RESULTS, f"probe_{args.name}", text)


def branches(argv: list[str]) -> None:
    """Test AUC of each part of a finetuned with-PLM model: the fused prediction, the CTR logit alone
    (alpha * y_ctr's ranking) and the PLM logit alone, overall and per long-tail segment."""
    from transformers import AutoTokenizer

    from assets import evaluate
    from assets.clickprompt import load_with_plm

    args, root, params = _analysis_args("branches", argv, variant="clickprompt_with_plm", seed=2024)
    dataset = params.get_path("data.name")
    seed_dir = artifact_dir(root, STAGE, dataset) / args.variant / f"seed{args.seed}"
    encoder, arrays = load_encoded(root, dataset)
    model, plm = load_with_plm(params, root, encoder.vocab_sizes, seed_dir)
    tokenizer = AutoTokenizer.from_pretrained(plm)
    n = len(arrays["test"]["label"])
    test = text_arrays(
        arrays["test"],
        texts(root, dataset)["test"],
        np.arange(n),
        tokenizer,
        int(params.get_path("clickprompt.max_length")),
    )
    order = np.argsort(test["attention_mask"].sum(axis=1), kind="stable")  # batches of similar length
    parts = {"fused": np.empty(n), "ctr_logit": np.empty(n), "plm_logit": np.empty(n)}
    started = time.perf_counter()
    with torch.inference_mode():
        for start in range(0, n, 256):
            rows = order[start : start + 256]
            out = model(batch_of(test, rows, text=True))
            for part, key in (("fused", "logit"), ("ctr_logit", "ctr_logit"), ("plm_logit", "plm_logit")):
                parts[part][rows] = out[key].double().numpy()
    seconds = time.perf_counter() - started
    test_set = evaluate.TestSet.load(params, root)
    scores = {part: test_set.score(1 / (1 + np.exp(-logit))) for part, logit in parts.items()}
    segments = list(test_set.segment_rows()["test_rows"])
    lines = [
        f"Branches of `{args.variant}` seed {args.seed} (`{args.name}`, {n} test rows, alpha "
        f"{float(model.alpha.detach()):.4f}, {seconds:.0f} s at {args.threads} thread(s)), test AUC:",
        "",
        "| part | overall | " + " | ".join(segments) + " |",
        "|---|---|" + "---|" * len(segments),
    ]
    for part, score in scores.items():
        lines.append(
            f"| {part} | {score['auc']:.4f} | " + " | ".join(f"{score['per_segment'][k]:.4f}" for k in segments) + " |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    replace_block(RESULTS, f"branches_{args.name}", text)


def main() -> None:
    commands = {"table": table, "probe": probe, "branches": branches}
    if sys.argv[1:2] and sys.argv[1] in commands:
        commands[sys.argv[1]](sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default=str(ROOT / "params.yaml"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--train-steps", type=int, default=6)
    parser.add_argument("--batch", type=int, default=64, help="rows per batched-inference call")
    parser.add_argument("--rounds", type=int, default=7, help="batched-inference calls per path")
    parser.add_argument("-S", "--set", action="append", default=[], help="params override key=value")
    args = parser.parse_args()
    apply_defaults()
    from llm4ctr.params import parse_override

    params = load_params(args.params, dict(parse_override(s) for s in args.set))
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    dataset = params.get_path("data.name")
    encoder, arrays = load_encoded(ROOT, dataset)
    models, sources = build(params, encoder)
    plm = models["clickprompt_with_plm"].net.encoder
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(
        sources["clickprompt_with_plm"] + "/plm"
        if Path(sources["clickprompt_with_plm"], "plm").is_dir()
        else resolve(params.get_path("plm.name"))
    )
    max_length = int(params.get_path("clickprompt.max_length"))
    split_texts = texts(ROOT, dataset)
    rng = np.random.default_rng(0)
    test_rows = np.sort(rng.choice(len(arrays["test"]["label"]), max(args.requests + 5, args.batch), replace=False))
    test = text_arrays(arrays["test"], split_texts["test"], test_rows, tokenizer, max_length)
    sizes = {
        "dcnv2": int(params.get_path("train.batch_size")),
        "clickprompt_wo_plm": int(params.get_path("train.batch_size")),
        "clickprompt_with_plm": int(params.get_path("clickprompt.finetune.train.batch_size")),
    }
    train_rows = rng.choice(len(arrays["train"]["label"]), max(sizes.values()) * (args.train_steps + 1), replace=False)
    train = text_arrays(arrays["train"], split_texts["train"], np.sort(train_rows), tokenizer, max_length)
    text = {name: name == "clickprompt_with_plm" for name in models}

    latency = {name: [] for name in models}
    for model in models.values():
        model.eval()
    with torch.inference_mode():
        for i in range(args.requests + 5):  # 5 warm-up requests
            for name, model in models.items():
                batch = batch_of(test, np.array([i]), text[name])
                started = time.perf_counter()
                torch.sigmoid(model(batch)["logit"])
                if i >= 5:
                    latency[name].append(time.perf_counter() - started)
        timings = {name: [] for name in models}  # batched inference, interleaved rounds
        for _ in range(args.rounds + 1):  # round 0 warms up
            for name, model in models.items():
                batch = batch_of(test, np.arange(args.batch), text[name])
                started = time.perf_counter()
                model(batch)
                timings[name].append(time.perf_counter() - started)
        throughput = {name: args.batch / float(np.median(t[1:])) for name, t in timings.items()}

    train_speed = {}
    for name, model in models.items():
        model.train()
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
        size, steps = sizes[name], []
        for step in range(args.train_steps + 1):  # step 0 warms up
            batch = batch_of(train, np.arange(step * size, (step + 1) * size), text[name])
            label = torch.as_tensor(train["label"][step * size : (step + 1) * size], dtype=torch.float32)
            started = time.perf_counter()
            loss = torch.nn.functional.binary_cross_entropy_with_logits(model(batch)["logit"], label)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            steps.append(time.perf_counter() - started)
        train_speed[name] = size / float(np.median(steps[1:]))

    rows = []
    for name, model in models.items():
        ms = np.array(latency[name]) * 1000
        rows.append(
            {
                "path": name,
                "params": sum(p.numel() for p in model.parameters()),
                "latency_ms_p50": float(np.median(ms)),
                "latency_ms_p90": float(np.percentile(ms, 90)),
                "rows_per_s_batched": throughput[name],
                "inference_batch": args.batch,
                "train_batch": sizes[name],
                "train_samples_per_s": train_speed[name],
                "source": sources[name],
            }
        )
    same_class = type(models["clickprompt_wo_plm"]) is type(models["dcnv2"]) if "clickprompt_wo_plm" in models else None
    markdown = (
        "\n".join(
            [
                f"Machine: {platform.machine()} {platform.processor() or ''}, {args.threads} torch thread(s), "
                f"torch {torch.__version__}; {args.requests} single-row requests per path; PLM: "
                f"{params.get_path('plm.name')} ({plm.config.num_hidden_layers} layers, "
                f"hidden {plm.config.hidden_size}), "
                f"K = {params.get_path('clickprompt.num_prompts')}, PLM frozen in training: "
                f"{float(params.get_path('clickprompt.finetune.plm_lr')) == 0}.",
                f"w/o-PLM model class = DCNv2 class: {same_class}.",
                "",
                f"| path | parameters | latency p50 (ms/sample) | p90 | rows/s (batch {args.batch}) | train batch "
                "| train samples/s |",
                "|---|---|---|---|---|---|---|",
                *(
                    f"| {r['path']} | {r['params']:,} | {r['latency_ms_p50']:.2f} | {r['latency_ms_p90']:.2f} | "
                    f"{r['rows_per_s_batched']:,.0f} | {r['train_batch']} | {r['train_samples_per_s']:,.0f} |"
                    for r in rows
                ),
            ]
        )
        + "\n"
    )
    print(markdown)
    print(json.dumps(rows, indent=2))
    replace_block(RESULTS, "bench_clickprompt", f"{markdown}\n```json\n{json.dumps(rows, indent=2)}\n```\n")


if __name__ == "__main__":
    main()
