"""Bayesian flow networks on the toys: cost against the number of steps n, sample quality, and the
batched von Mises sampler against ``torch.distributions.VonMises``.

    python benchmarks/bayesflow.py [--iters 1500] [--batch 256] [--ns 10,100,1000] [--threads 1] [--readme]
    python benchmarks/bayesflow.py --table-only [--readme]     # re-render from the stored JSON

* timing: seconds per training step (loss + backward + Adam, batch ``--batch``) and per sample
  (``--batch`` samples drawn with n steps, divided by the batch) for the continuous (2-D Gaussian
  mixture), discrete (categorical triples, K = 5) and periodic (torus mixture) BFN at each n; the
  periodic sampler both with the Bayesian-update move and with CrysBFN's flow re-simulation (O(n^2)
  von Mises draws, measured for n <= 100 only). Networks are untrained for timing (cost does not
  depend on the weights).
* quality: each kind trained for ``--iters`` steps at n = 50, then 4000 samples scored against the
  test draw, next to the same metric between two independent draws of the data (the floor).
* von Mises: 1e6 draws at concentrations log-uniform in [0.1, 1000], and one training batch's
  periodic flow simulation at n = 100 / 1000 (ours: only the i - 1 draws each sample needs, batched
  sampler; reference style: all n draws per entry with torch's sampler in float64, as CrysBFN).

Writes ``benchmarks/results/bayesflow.json`` and prints Markdown tables; ``--readme`` writes them into
the README's ``bayesflow-table`` block.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _meta import ROOT, measurement, meta_line, publish  # noqa: E402
from workbench.bayesflow import BayesianFlowMethod, ContinuousFlow, DiscreteFlow, PeriodicFlow, sample_von_mises  # noqa: E402
from workbench.bayesflow.toy import (BFNToyMLP, categorical_metrics, categorical_triples, torus_metrics,  # noqa: E402
                                     torus_mixture, train)
from workbench.data import write_json  # noqa: E402
from workbench.toy import gaussian_mixture, toy_metrics  # noqa: E402

OUT = Path(__file__).parent / "results" / "bayesflow.json"
K = 5


def make(kind: str, n: int) -> tuple[BayesianFlowMethod, torch.Tensor, torch.Tensor, torch.Tensor, dict, callable]:
    """(method, train data, reference, second draw, sample template for m items, metric)."""
    if kind == "continuous":
        data, ref, other = (gaussian_mixture(m, seed=s)[0] for m, s in ((8192, 0), (4000, 1), (4000, 2)))
        method = BayesianFlowMethod(BFNToyMLP("continuous", 2), ContinuousFlow(0.05), steps=n, loss="continuous")
        return method, data, ref, other, lambda m: {"x": torch.zeros(m, 2)}, toy_metrics
    if kind == "discrete":
        data, ref, other = (categorical_triples(m, K, seed=s) for m, s in ((20000, 0), (4000, 1), (4000, 2)))
        method = BayesianFlowMethod(BFNToyMLP("discrete", 3, num_classes=K), DiscreteFlow(K, 3.0), steps=n)
        return (method, data, ref, other, lambda m: {"x": torch.zeros(m, 3, dtype=torch.long)},
                lambda s, r: categorical_metrics(s, r, K))
    data, ref, other = (torus_mixture(m, seed=s)[0] for m, s in ((8192, 0), (4000, 1), (4000, 2)))
    method = BayesianFlowMethod(BFNToyMLP("periodic", 2), PeriodicFlow(), steps=n)
    return method, data, ref, other, lambda m: {"x": torch.zeros(m, 2)}, torus_metrics


def time_train_step(method, data, batch: int, reps: int = 20) -> float:
    g = torch.Generator().manual_seed(0)
    opt = torch.optim.Adam(method.network.parameters(), lr=1e-3)
    times = []
    for r in range(reps + 3):
        idx = torch.randint(0, len(data), (batch,), generator=g)
        t0 = time.perf_counter()
        loss = method.loss({"x": data[idx]}, g).loss.mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if r >= 3:
            times.append(time.perf_counter() - t0)
    return float(torch.tensor(times).median())


def time_sample(method, template, **kw) -> float:
    t0 = time.perf_counter()
    method.sample(template, generator=torch.Generator().manual_seed(1), **kw)
    return time.perf_counter() - t0


def timing(ns: list[int], batch: int) -> list[dict]:
    rows = []
    for kind in ("continuous", "discrete", "periodic"):
        for n in ns:
            torch.manual_seed(0)
            method, data, _, _, template, _ = make(kind, n)
            if kind == "periodic":
                method.flow.alphas(n)                  # the schedule is found / cached outside the timing
            row = {"kind": kind, "n": n, "train_step_s": time_train_step(method, data, batch)}
            method.eval()
            row["sample_s_per_item"] = time_sample(method, template(batch)) / batch
            if kind == "periodic" and n <= 100:
                row["sample_flow_move_s_per_item"] = time_sample(method, template(batch), strategy="flow") / batch
            rows.append(row)
            print(f"{kind:10s} n={n:5d} train step {row['train_step_s'] * 1e3:8.2f} ms  "
                  f"sample {row['sample_s_per_item'] * 1e3:8.3f} ms/item", file=sys.stderr)
    return rows


def quality(iters: int, n: int = 50, m: int = 4000) -> list[dict]:
    rows = []
    for kind in ("continuous", "discrete", "periodic"):
        torch.manual_seed(0)
        method, data, ref, other, template, metric = make(kind, n)
        t0 = time.perf_counter()
        train(method, data, iters=iters, batch_size=256, lr=2e-3, seed=0)
        train_s = time.perf_counter() - t0
        floor = metric(other, ref)
        moves = ("update", "flow") if kind == "periodic" else ("update",)
        for move in moves:
            s = method.sample(template(m), generator=torch.Generator().manual_seed(2), strategy=move)
            rows.append({"kind": kind, "n": n, "move": move, "iters": iters, "train_s": round(train_s, 1),
                         "metrics": metric(s, ref), "floor": floor})
            print(f"{kind} ({move}): {rows[-1]['metrics']} floor {floor}", file=sys.stderr)
    return rows


def von_mises_speed(m: int = 1_000_000) -> dict:
    g = torch.Generator().manual_seed(0)
    kappa = torch.exp(torch.empty(m).uniform_(math.log(0.1), math.log(1000.0), generator=g))
    loc = torch.zeros(m)
    out = {}
    for name, fn in (("ours", lambda: sample_von_mises(loc, kappa, g)),
                     ("torch_float32", lambda: torch.distributions.VonMises(loc, kappa).sample()),
                     ("torch_float64", lambda: torch.distributions.VonMises(loc.double(), kappa.double()).sample())):
        fn()
        t0 = time.perf_counter()
        for _ in range(3):
            fn()
        out[name + "_s"] = (time.perf_counter() - t0) / 3
    out["draws"] = m
    out["speedup_vs_float32"] = out["torch_float32_s"] / out["ours_s"]
    out["speedup_vs_float64"] = out["torch_float64_s"] / out["ours_s"]
    flows = []
    for n in (100, 1000):
        flow = PeriodicFlow()
        alphas = flow.alphas(n)
        B, D = 256, 2
        x = torch.rand(B, D, generator=g) * 2 * math.pi - math.pi
        i = torch.randint(1, n + 1, (B,), generator=g)
        t0 = time.perf_counter()
        flow.flow_sample(x, i, n, g)
        ours = time.perf_counter() - t0
        t0 = time.perf_counter()                  # reference style: all n draws per entry, torch sampler
        y = torch.distributions.VonMises(x.double()[..., None].expand(B, D, n),
                                         alphas.expand(B, D, n)).sample()
        re = (alphas * torch.cos(y)).cumsum(-1)
        im = (alphas * torch.sin(y)).cumsum(-1)
        idx = (i - 2).clamp_min(0)[:, None, None].expand(B, D, 1)
        _ = torch.atan2(im.gather(-1, idx), re.gather(-1, idx)), torch.sqrt(re.gather(-1, idx) ** 2 + im.gather(-1, idx) ** 2)
        ref = time.perf_counter() - t0
        flows.append({"n": n, "batch": B, "dims": D, "ours_s": ours, "reference_style_s": ref, "speedup": ref / ours})
        print(f"flow simulation n={n}: ours {ours * 1e3:.1f} ms, reference style {ref * 1e3:.1f} ms", file=sys.stderr)
    out["flow_simulation"] = flows
    return out


def table(result: dict) -> str:
    lines = ["Seconds per training step (batch %d) and per sample, against n:" % result["batch"], "",
             "| kind | n | train step (ms) | sample (ms/item) | periodic flow move (ms/item) |", "|---|---|---|---|---|"]
    for r in result["timing"]:
        fm = r.get("sample_flow_move_s_per_item")
        lines.append(f"| {r['kind']} | {r['n']} | {r['train_step_s'] * 1e3:.2f} | {r['sample_s_per_item'] * 1e3:.3f} | "
                     + (f"{fm * 1e3:.3f}" if fm is not None else "-") + " |")
    if result.get("quality"):
        lines += ["", "Quality at n = 50 after %d training steps (4000 samples; floor = two draws of the data):" %
                  result["quality"][0]["iters"], "", "| kind | move | metric | value | floor |", "|---|---|---|---|---|"]
        keys = {"continuous": ("sliced_w2", "in_mode"), "discrete": ("tv", "kl"), "periodic": ("moment_error", "hist_tv")}
        for r in result["quality"]:
            for k in keys[r["kind"]]:
                lines.append(f"| {r['kind']} | {r['move']} | {k} | {r['metrics'][k]:.4f} | {r['floor'][k]:.4f} |")
    v = result["von_mises"]
    lines += ["", f"Von Mises sampling, {v['draws']:.0e} draws (kappa log-uniform in [0.1, 1000]): ours "
              f"{v['ours_s']:.3f} s, torch float32 {v['torch_float32_s']:.3f} s (x{v['speedup_vs_float32']:.1f}), "
              f"torch float64 {v['torch_float64_s']:.3f} s (x{v['speedup_vs_float64']:.1f}).", "",
              "| periodic flow simulation, one batch | ours (s) | reference style (s) | speed-up |", "|---|---|---|---|"]
    for f in v["flow_simulation"]:
        lines.append(f"| n={f['n']}, B={f['batch']}, D={f['dims']} | {f['ours_s']:.4f} | {f['reference_style_s']:.4f} | "
                     f"x{f['speedup']:.1f} |")
    lines += ["", meta_line(result)]
    return "\n".join(lines)


#: README blocks rendered from the JSON (checked by tests/test_readme_tables.py)
TABLES = {"bayesflow-table": (table, "bayesflow.json")}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iters", type=int, default=1500, help="training steps of the quality section (0: skip)")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--ns", default="10,100,1000")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--table-only", action="store_true")
    ap.add_argument("--readme", action="store_true", help="write the tables into README.md")
    args = ap.parse_args(argv)
    if args.table_only:
        return publish(json.loads(Path(args.out).read_text()), table, ROOT / "README.md", "bayesflow-table", args.readme)
    torch.set_num_threads(args.threads)
    ns = [int(v) for v in args.ns.split(",")]
    result = {"benchmark": "bayesflow", "batch": args.batch, "timing": timing(ns, args.batch),
              "von_mises": von_mises_speed(),
              "quality": quality(args.iters) if args.iters > 0 else [],
              "meta": measurement({"iters": args.iters, "batch": args.batch, "ns": ns, "threads": args.threads,
                                   "seed": 0})}
    write_json(args.out, result)
    publish(result, table, ROOT / "README.md", "bayesflow-table", args.readme)
    return result


if __name__ == "__main__":
    main()
