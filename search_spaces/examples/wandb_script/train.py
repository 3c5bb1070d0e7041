"""A W&B-style training script: runs unchanged with `wandb agent` or `hpo sweep sweep.yaml`.

A tiny two-layer network (pure Python, no dependencies) fits a noisy sine wave with SGD +
momentum. Each epoch logs `val_loss` without a step: W&B (and hpo) count the logging calls,
which is what `early_terminate: {type: hyperband, min_iter: 3}` measures.
"""

import math
import random

import wandb

DEFAULTS = {"lr": 0.01, "momentum": 0.5, "hidden": 16, "epochs": 12, "seed": 0}


def data(n, rng):
    xs = [rng.uniform(-3.0, 3.0) for _ in range(n)]
    return [(x, math.sin(x) + rng.gauss(0.0, 0.1)) for x in xs]


def main():
    run = wandb.init(project="hpo-example", config=DEFAULTS)
    cfg = wandb.config
    rng = random.Random(cfg.seed)
    train, val = data(256, rng), data(128, rng)
    h = int(cfg.hidden)
    w1 = [rng.gauss(0.0, 1.0) for _ in range(h)]
    b1 = [0.0] * h
    w2 = [rng.gauss(0.0, 1.0 / math.sqrt(h)) for _ in range(h)]
    b2 = 0.0
    params = [w1, b1, w2]
    velocity = [[0.0] * h for _ in params]
    vb2 = 0.0

    def forward(x):
        hidden = [math.tanh(w * x + b) for w, b in zip(w1, b1, strict=True)]
        return hidden, sum(w * a for w, a in zip(w2, hidden, strict=True)) + b2

    for epoch in range(int(cfg.epochs)):
        rng.shuffle(train)
        total = 0.0
        for x, y in train:
            hidden, pred = forward(x)
            err = pred - y
            total += err * err
            g_w2 = [2 * err * a for a in hidden]
            g_pre = [2 * err * w * (1 - a * a) for w, a in zip(w2, hidden, strict=True)]
            grads = [[g * x for g in g_pre], g_pre, g_w2]
            for p, v, g in zip(params, velocity, grads, strict=True):
                for i in range(h):
                    v[i] = cfg.momentum * v[i] - cfg.lr * g[i]
                    p[i] += v[i]
            vb2 = cfg.momentum * vb2 - cfg.lr * 2 * err
            b2 += vb2
        val_loss = sum((forward(x)[1] - y) ** 2 for x, y in val) / len(val)
        train_loss = total / len(train)
        if not math.isfinite(val_loss) or val_loss > 10.0:  # diverged: a large, finite loss
            val_loss, train_loss = 10.0, 10.0               # that the pruner can rank
        wandb.log({"train_loss": train_loss, "val_loss": val_loss, "epoch": epoch})
    run.summary["final_val_loss"] = val_loss
    wandb.finish()


if __name__ == "__main__":
    main()
