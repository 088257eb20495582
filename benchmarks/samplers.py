"""Sample quality against NFE for every core sampler on a trained 2-D mixture model.

    python benchmarks/samplers.py [--epochs 200] [--n 4000] [--prediction eps] [--process vp]

Trains a small model (ToyMLP, 8 modes), then for each sampler and NFE budget draws ``n``
samples and reports the sliced Wasserstein-2 distance to the test split (lower is better),
the fraction of samples within 3 std of a mode, and wall time, on two time grids (uniform
in t, and uniform in log-SNR as DPM-Solver recommends). The "data floor" row is the
distance between two independent draws of the data of the same size. Writes
``benchmarks/results/samplers.json`` and prints a Markdown table.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import pytorch_lightning as pl
import torch

from workbench.data import write_json
from workbench.geometry import Euclidean
from workbench.lit import EMA, DiffusionModule
from workbench.processes import EDM, VP, LinearInterpolant
from workbench.samplers import NFECounter, sample_ddim, sample_dpm_solver, sample_euler_maruyama, sample_ode, sample_pc
from workbench.toy import GaussianMixtureDataModule, ToyMLP, gaussian_mixture, toy_metrics

# name -> (function, kwargs, network evaluations per step)
SAMPLERS = {
    "euler_maruyama": (sample_euler_maruyama, {}, 1),
    "pc (snr 0.05)": (sample_pc, {"snr": 0.05}, 2),
    "ode euler": (sample_ode, {"method": "euler"}, 1),
    "ode heun": (sample_ode, {"method": "heun"}, 2),
    "ddim (eta 0)": (sample_ddim, {}, 1),
    "ddpm ancestral (ddim eta 1)": (sample_ddim, {"eta": 1.0}, 1),
    "dpm-solver++(2M)": (sample_dpm_solver, {}, 1),
}
NFES = (10, 20, 50, 100, 200)
PROCESSES = {"vp": VP, "edm": EDM, "linear": LinearInterpolant}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=200)
    ap.add_argument("--n", type=int, default=4000)
    ap.add_argument("--prediction", default="v")
    ap.add_argument("--process", default="vp", choices=list(PROCESSES))
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "samplers.json"))
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    pl.seed_everything(0, verbose=False)
    process = PROCESSES[args.process]()
    prediction = "velocity" if args.process == "linear" else args.prediction
    dm = GaussianMixtureDataModule(n_train=8192, batch_size=256)
    model = DiffusionModule(network=ToyMLP(dim=2, hidden=128, depth=3), process=process, prediction=prediction,
                            lr=2e-3, lr_decay=0.97)
    ema = EMA(0.999, warmup=True)
    trainer = pl.Trainer(max_epochs=args.epochs, accelerator="cpu", logger=False, enable_checkpointing=False,
                         callbacks=[ema], gradient_clip_val=1.0, enable_progress_bar=False,
                         enable_model_summary=False)
    t0 = time.perf_counter()
    trainer.fit(model, datamodule=dm)
    train_s = time.perf_counter() - t0
    ref = dm.reference()
    floor = toy_metrics(gaussian_mixture(args.n, seed=123)[0], ref)
    rows = [{"sampler": "data floor", "nfe": 0, "sliced_w2": floor["sliced_w2"], "in_mode": floor["in_mode"],
             "seconds": 0.0}]
    model.eval()
    spacings = ["karras", "logsnr"] if args.process == "edm" else ["time", "logsnr"]
    with ema.average(model):
        for name, (fn, kw, per_step) in SAMPLERS.items():
            if fn in (sample_euler_maruyama, sample_pc) and not process.stochastic:
                continue
            for spacing in spacings:
                label = f"{name} [{spacing}]"
                for nfe in NFES:
                    steps = max(1, (nfe - 1) // per_step)
                    counter = NFECounter(model.denoiser)
                    g = torch.Generator().manual_seed(1)
                    x = process.prior_sample(torch.zeros(args.n, 2), Euclidean(), generator=g)
                    ts = process.time_grid(steps, spacing=spacing)
                    t1 = time.perf_counter()
                    out = fn(counter, x, ts, process=process, geometry=Euclidean(), generator=g, **kw)
                    sec = time.perf_counter() - t1
                    m = toy_metrics(out, ref)
                    rows.append({"sampler": label, "spacing": spacing, "nfe": counter.nfe,
                                 "sliced_w2": m["sliced_w2"], "in_mode": m["in_mode"], "seconds": round(sec, 3)})
                    print(f"{label:36s} NFE {counter.nfe:4d}  SW2 {m['sliced_w2']:.4f}  "
                          f"in-mode {m['in_mode']:.3f}  {sec:.2f}s", file=sys.stderr)
    result = {"benchmark": "samplers", "process": args.process, "prediction": prediction, "epochs": args.epochs,
              "n_samples": args.n, "train_seconds": round(train_s, 1), "torch": torch.__version__,
              "machine": f"{platform.machine()}, {torch.get_num_threads()} threads", "rows": rows}
    write_json(args.out, result)
    print(table(result))
    return result


def table(result: dict) -> str:
    """Markdown table: one row per sampler, one column per NFE budget (sliced W2)."""
    names = [r["sampler"] for r in result["rows"] if r["sampler"] != "data floor"]
    names = list(dict.fromkeys(names))
    lines = [f"Process {result['process']} ({result['prediction']} prediction), {result['epochs']} epochs "
             f"({result['train_seconds']} s), {result['n_samples']} samples; sliced W2 to the test split "
             f"(data floor {result['rows'][0]['sliced_w2']:.4f}).", "",
             "| sampler | " + " | ".join(f"NFE≈{n}" for n in NFES) + " |",
             "|---|" + "---|" * len(NFES)]
    for name in names:
        vals = [r for r in result["rows"] if r["sampler"] == name]
        lines.append(f"| {name} | " + " | ".join(f"{r['sliced_w2']:.4f} ({r['nfe']})" for r in vals) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
