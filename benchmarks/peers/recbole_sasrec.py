"""The peer: RecBole 1.2.1 SASRec (full-catalogue cross-entropy) on the paper's files and protocol.

Runs in a virtual environment of its own (torch, RecBole; see benchmarks/peers/README.md), never in
the project's. It converts a paper-format sequence file (`user item item …`, oldest first) to RecBole's
`.inter` format with the position as timestamp, trains SASRec with RecBole's trainer until early
stopping on validation NDCG@10 (no time box unless --deadline is given), then scores the selected
weights with the paper's protocol itself: leave-one-out, full ranking, every item of the user's
history excluded (a target that repeats a history item is a miss). RecBole's own, unmasked figures
are kept beside them.

Progress is written to the JSON after every epoch; a run that stops (deadline, interruption) resumes
from its last saved best checkpoint with --resume.

    PEER_VENV/bin/python benchmarks/peers/recbole_sasrec.py ../shared/data/Beauty.txt \
        --work /tmp/peer --json benchmarks/results/peer_sasrec_Beauty.json --threads 2
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

# RecBole's checkpoints hold its Config object; torch >= 2.6 loads weights only by default.
torch.load = functools.partial(torch.load, weights_only=False)
# RecBole 1.2.1 re-creates NumPy 1's removed aliases from these three; NumPy 2 dropped them too.
for alias, kind in (("float_", np.float64), ("complex_", np.complex128), ("unicode_", np.str_)):
    if not hasattr(np, alias):
        setattr(np, alias, kind)

from recbole.config import Config  # noqa: E402
from recbole.data import create_dataset, data_preparation  # noqa: E402
from recbole.utils import get_model, get_trainer, init_logger, init_seed  # noqa: E402

# The peer's settings as they were measured for the issues (benchmarks/peers/README.md).
SASREC = {
    "n_layers": 2,
    "n_heads": 2,
    "hidden_size": 64,
    "inner_size": 256,
    "hidden_dropout_prob": 0.5,
    "attn_dropout_prob": 0.5,
    "hidden_act": "gelu",
    "loss_type": "CE",
    "train_neg_sample_args": None,
    "MAX_ITEM_LIST_LENGTH": 50,
    "learning_rate": 1e-3,
    "train_batch_size": 256,
}
CUTOFFS = (5, 10, 20)


def read_sequences(path: Path) -> dict[str, list[str]]:
    """user token → item tokens, oldest first, from a paper-format file."""
    sequences = {}
    with path.open() as handle:
        for number, line in enumerate(handle, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) < 4:
                raise ValueError(f"{path}:{number}: leave-one-out needs 3+ items per user; got {len(parts) - 1}")
            sequences[parts[0]] = parts[1:]
    return sequences


def write_inter(sequences: dict[str, list[str]], data_root: Path, name: str) -> None:
    """RecBole's atomic file: one interaction per line, the position as its timestamp."""
    directory = data_root / name
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / f"{name}.inter"
    tmp = target.with_suffix(".tmp")
    with tmp.open("w") as out:
        out.write("user_id:token\titem_id:token\ttimestamp:float\n")
        for user, items in sequences.items():
            out.writelines(f"{user}\t{item}\t{position}\n" for position, item in enumerate(items))
    tmp.replace(target)


@torch.no_grad()
def paper_protocol(model, dataset, sequences: dict[str, list[str]], held_out: int, device, batch_size: int = 1024) -> dict:
    """HR/NDCG@{5,10,20} with the user's whole history excluded from the ranking.

    held_out 1 scores the last item (test) from the items before it; 2 scores the second-to-last
    (validation). rank = items of the catalogue scoring strictly above the target, as in
    recgpt_tf.evaluation.ranking.
    """
    model.eval()
    max_length = model.max_seq_length
    users = list(sequences)
    hits = {k: 0.0 for k in CUTOFFS}
    gains = {k: 0.0 for k in CUTOFFS}
    table = model.item_embedding.weight  # (N + 1, d), row 0 padding
    for start in range(0, len(users), batch_size):
        rows = [dataset.token2id(dataset.iid_field, sequences[u]) for u in users[start : start + batch_size]]
        histories = [np.asarray(r[:-held_out]) for r in rows]
        targets = torch.as_tensor([r[-held_out] for r in rows], device=device)
        kept = [h[-max_length:] for h in histories]
        item_seq = torch.zeros(len(kept), max_length, dtype=torch.long)
        for i, h in enumerate(kept):
            item_seq[i, : len(h)] = torch.as_tensor(h)
        lengths = torch.as_tensor([len(h) for h in kept])
        hidden = model.forward(item_seq.to(device), lengths.to(device))  # (B, d)
        scores = hidden @ table.T  # (B, N + 1)
        scores[:, 0] = -torch.inf
        row_index = np.concatenate([np.full(len(h), i) for i, h in enumerate(histories)])
        scores[torch.as_tensor(row_index), torch.as_tensor(np.concatenate(histories))] = -torch.inf
        target_scores = scores.gather(1, targets[:, None])  # (B, 1)
        ranks = (scores > target_scores).sum(1).float()
        ranks[torch.isinf(target_scores[:, 0])] = float(scores.shape[1])  # a repeated item: never recommended
        for k in CUTOFFS:
            hit = ranks < k
            hits[k] += hit.sum().item()
            gains[k] += (hit / torch.log2(ranks + 2)).sum().item()
    metrics = {f"HR@{k}": hits[k] / len(users) for k in CUTOFFS}
    metrics.update({f"NDCG@{k}": gains[k] / len(users) for k in CUTOFFS})
    return metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", type=Path, help="paper-format sequence file")
    parser.add_argument("--work", type=Path, default=Path("/tmp/peer"), help="RecBole data and checkpoints")
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--max-epochs", type=int, default=300)
    parser.add_argument("--patience", type=int, default=10, help="epochs without validation NDCG@10 gain")
    parser.add_argument("--deadline", type=float, default=0.0, help="seconds from start: no epoch starts that would end later")
    parser.add_argument("--resume", action="store_true", help="continue from the saved best checkpoint in --work")
    args = parser.parse_args()
    args.data, args.json, args.work = args.data.resolve(), args.json.resolve(), args.work.resolve()
    args.work.mkdir(parents=True, exist_ok=True)
    os.chdir(args.work)  # RecBole writes its log/ and log_tensorboard/ into the working directory

    torch.set_num_threads(args.threads)
    name = args.data.stem
    sequences = read_sequences(args.data)
    write_inter(sequences, args.work / "data", name)
    checkpoints = args.work / "checkpoints" / name
    config = Config(
        model="SASRec",
        dataset=name,
        config_dict={
            **SASREC,
            "data_path": str(args.work / "data"),
            "checkpoint_dir": str(checkpoints),
            "USER_ID_FIELD": "user_id",
            "ITEM_ID_FIELD": "item_id",
            "TIME_FIELD": "timestamp",
            "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
            "user_inter_num_interval": "[0,inf)",
            "item_inter_num_interval": "[0,inf)",
            "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "full", "group_by": "user"},
            "metrics": ["Hit", "NDCG"],
            "topk": list(CUTOFFS),
            "valid_metric": "NDCG@10",
            "eval_batch_size": 2048,
            "epochs": args.max_epochs,
            "stopping_step": args.patience,
            "eval_step": 1,
            "device": args.device,
            "use_gpu": args.device != "cpu",
            "seed": 2020,
            "reproducibility": True,
            "show_progress": False,
            "log_wandb": False,
        },
    )
    config["device"] = torch.device(args.device)
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    torch.set_num_threads(args.threads)  # init_logger/init_seed may reset it
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    init_seed(config["seed"], config["reproducibility"])
    model = get_model("SASRec")(config, train_data._dataset).to(config["device"])
    trainer = get_trainer(config["MODEL_TYPE"], "SASRec")(config, model)
    saved = sorted(checkpoints.glob("SASRec-*.pth"), key=os.path.getmtime)
    if args.resume and saved:
        trainer.resume_checkpoint(str(saved[-1]))
        trainer.saved_model_file = str(saved[-1])

    report = {
        "peer": "RecBole 1.2.1 SASRec",
        "settings": SASREC,
        "dataset": name,
        "users": len(sequences),
        "items": len(dataset.field2id_token[dataset.iid_field]) - 1,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, device {args.device}, {args.threads} torch threads",
        "started": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "torch": torch.__version__,
        "epochs": [],
        "complete": False,
    }
    if args.json.exists() and args.resume:
        report["epochs"] = json.loads(args.json.read_text()).get("epochs", [])

    def write() -> None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.json.with_suffix(".tmp")
        tmp.write_text(json.dumps(report, indent=1) + "\n")
        tmp.replace(args.json)

    start = time.perf_counter()
    train_epoch, valid_epoch = trainer._train_epoch, trainer._valid_epoch
    timing = {}

    class Deadline(Exception):
        pass

    def timed_train(*a, **kw):
        done = report["epochs"]
        if args.deadline and done:
            per_epoch = np.mean([e["train_seconds"] + e["valid_seconds"] for e in done[-3:]])
            if time.perf_counter() - start + per_epoch > args.deadline:
                raise Deadline
        t = time.perf_counter()
        result = train_epoch(*a, **kw)
        timing["train"] = time.perf_counter() - t
        return result

    def timed_valid(*a, **kw):
        t = time.perf_counter()
        score, result = valid_epoch(*a, **kw)
        report["epochs"].append(
            {
                "train_seconds": round(timing.get("train", 0.0), 1),
                "valid_seconds": round(time.perf_counter() - t, 1),
                "valid_ndcg@10_recbole": round(float(score), 5),
            }
        )
        write()
        return score, result

    trainer._train_epoch, trainer._valid_epoch = timed_train, timed_valid
    try:
        trainer.fit(train_data, valid_data, saved=True, show_progress=False)
        report["stopped_by"] = "early stopping" if len(report["epochs"]) < args.max_epochs else "epoch cap"
    except Deadline:
        report["stopped_by"] = "deadline"
    report["fit_seconds"] = round(time.perf_counter() - start, 1)
    report["train_seconds"] = round(sum(e["train_seconds"] for e in report["epochs"]), 1)

    checkpoint = torch.load(trainer.saved_model_file, map_location=config["device"])
    model.load_state_dict(checkpoint["state_dict"])
    report["best_epoch"] = int(checkpoint["epoch"]) + 1
    report["valid"] = paper_protocol(model, dataset, sequences, 2, config["device"])
    report["test"] = paper_protocol(model, dataset, sequences, 1, config["device"])
    report["test_recbole_unmasked"] = {
        k: float(v) for k, v in trainer.evaluate(test_data, load_best_model=False, show_progress=False).items()
    }
    report["complete"] = True
    write()
    print(json.dumps({k: report[k] for k in ("dataset", "best_epoch", "stopped_by", "train_seconds", "valid", "test")}, indent=1))


if __name__ == "__main__":
    main()
