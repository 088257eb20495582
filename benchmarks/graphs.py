"""GDSS benchmarks of the graphs domain (issue 3).

    python benchmarks/graphs.py community [--epochs 5000]
    python benchmarks/graphs.py qm9 [--epochs 40] [--n 1000]
    python benchmarks/graphs.py seeds [--steps 1000 300 200] [--seeds 0 1 2]
    python benchmarks/graphs.py timing [--steps 1000 300 200]   (with the machine otherwise idle)

community: community-small at the paper's settings (GDSS config: 5000 epochs, batch 128, lr 1e-2),
  training seconds per epoch; then 128 graphs from each sampler (GDSS's Euler-Maruyama + Langevin
  over 1000 steps, and the core samplers at 50 / 100 NFE), wall time, and the three MMDs against
  the 20 test graphs, computed on the first 20 samples (GDSS's protocol) and on all 128.
qm9: QM9 on a fixed 10,000-molecule training subset for a fixed epoch budget; 1,000 molecules from
  GDSS's reverse diffusion + Langevin (1000 steps), S4 (1000 steps) and each core sampler at 50 and
  100 NFE: validity w/o correction, uniqueness, novelty, NSPDK and FCD against a fixed 1,000-molecule
  test subset, with wall time.
Results go to benchmarks/results/graphs.json (each part is written as soon as it finishes) and a
Markdown table is printed.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from functools import partial
from pathlib import Path

import torch

from workbench.cli import compose_config, train, versions
from workbench.data import write_json
from workbench.samplers import NFECounter, sample_ddim, sample_dpm_solver, sample_ode, sample_pc, sample_s4
from workbench.state import cat

OUT = Path(__file__).parent / "results" / "graphs.json"
# GDSS's community-small sampler: Euler-Maruyama predictor + one Langevin corrector step (snr 0.05, scale_eps 0.7)
GDSS_SAMPLER = partial(sample_pc, predictor="euler_maruyama", corrector="langevin", snr=0.05, scale_eps=0.7,
                       corrector_first=True, denoise=False)


def _load() -> dict:
    return json.loads(OUT.read_text()) if OUT.exists() else {}


def _save(key: str, value: dict) -> None:
    data = _load()
    data[key] = value
    data["versions"] = versions()
    write_json(OUT, data)


def _update(key: str, fields: dict) -> dict:
    """Merge ``fields`` into the stored entry ``key`` (other fields are kept); return the entry."""
    entry = {**_load().get(key, {}), **fields}
    _save(key, entry)
    return entry


def _samplers(paper: tuple[str, object], steps: int) -> list[tuple[str, object, int]]:
    """(label, sampler, steps): the paper's sampler at `steps`, and the core samplers at ~50 / ~100 NFE."""
    out = [paper + (steps,)]
    for nfe in (50, 100):
        out += [
            (f"dpm-solver++(2M) logsnr {nfe}", partial(sample_dpm_solver), nfe - 1),
            (f"heun ode {nfe}", partial(sample_ode, method="heun"), nfe // 2 - 1),
            (f"ddim {nfe}", partial(sample_ddim), nfe - 1),
        ]
    return out


def _draw(module, dm, sampler, steps: int, n: int, batch: int, spacing: str | None, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    counter = NFECounter(module.denoiser)
    chunks = []
    t0 = time.perf_counter()
    for start in range(0, n, batch):
        tmpl = dm.sample_template(min(batch, n - start), generator=g)
        geometry = module.geometry.bind(tmpl.get("mask"))
        x = module.process.prior_sample(tmpl["x"], geometry, generator=g)
        kw = {"spacing": spacing} if spacing else {}
        ts = module.process.time_grid(steps, **kw)
        chunks.append(sampler(counter, x, ts, process=module.process, geometry=geometry,
                              extra_args=module._extras(tmpl), generator=g))
    return cat(chunks), time.perf_counter() - t0, counter.nfe // max(1, -(-n // batch))


def _load_trained(cfg):
    """The trained model of a run, loaded non-strictly: checkpoints written before the last GMH
    layer's unused node branch was removed still carry those (never-trained) weights."""
    from workbench.cli import build
    from workbench.lit import load_checkpoint, load_ema_weights

    dm, module, metrics = build(cfg)
    ckpt = load_checkpoint(Path(cfg.run_dir) / "checkpoints" / "last.ckpt")
    missing, _ = module.load_state_dict(ckpt["state_dict"], strict=False)
    if missing:
        raise RuntimeError(f"checkpoint lacks weights: {missing[:5]}")
    if cfg.sample.use_ema:
        load_ema_weights(module, ckpt)
    return dm, module, metrics, ckpt


def _train_and_load(experiment: str, epochs: int, run_dir: Path, skip_training: bool = False):
    """Train (or resume) an experiment into ``run_dir``; return (seconds, datamodule, module, metrics)."""
    cfg = compose_config([f"experiment={experiment}", f"trainer.max_epochs={epochs}", f"run_dir={run_dir}",
                          "trainer.enable_progress_bar=false", "resume=true"])
    t0 = time.perf_counter()
    if not skip_training:
        train(cfg)
    seconds = time.perf_counter() - t0
    os.environ.pop("WORKBENCH_RUN_DIR", None)
    cfg.run_dir = str(Path(run_dir).absolute())
    dm, module, metrics, _ = _load_trained(cfg)
    dm.setup()
    module.eval()
    return seconds, dm, module, metrics


def community(epochs: int, run_dir: Path, samplers_only: bool = False) -> dict:
    from workbench.domains.graphs.data import tensors_to_graphs
    from workbench.domains.graphs.metrics import generic_graph_metrics

    train_s, dm, module, _ = _train_and_load("graphs/community_small", epochs, run_dir, samplers_only)
    ref = dm.reference()
    paper = ("GDSS Euler-Maruyama + Langevin 1000", GDSS_SAMPLER)
    fast = [(f"GDSS Euler-Maruyama + Langevin {k}", paper[1], k) for k in (100, 200)]
    fast += [(f"GDSS S4 {k}", partial(sample_s4, snr=0.05, scale_eps=0.7), k) for k in (100, 200)]
    fast += [("Euler-Maruyama (no corrector) 200", partial(sample_pc, predictor="euler_maruyama", corrector="none",
                                                           denoise=False), 200)]
    plan = _samplers(paper, 1000) + [("GDSS S4 1000", partial(sample_s4, snr=0.05, scale_eps=0.7), 1000)] + fast
    previous = {r["sampler"]: r for r in _load().get("community_small", {}).get("rows", [])} if samplers_only else {}
    rows = []
    for label, fn, steps in plan:
        if label in previous:
            rows.append(previous[label])
            continue
        spacing = "logsnr" if "logsnr" in label else None
        samples, sec, nfe = _draw(module, dm, fn, steps, 128, 128, spacing)
        graphs = tensors_to_graphs(samples["adj"])
        m20 = generic_graph_metrics(graphs[: len(ref)], ref)
        m128 = generic_graph_metrics(graphs, ref)
        rows.append({"sampler": label, "nfe_per_network": nfe, "seconds_128": round(sec, 2),
                     **{f"{k}@20": v for k, v in m20.items()}, **{f"{k}@128": v for k, v in m128.items()}})
        print(rows[-1], file=sys.stderr)
    if samplers_only and "community_small" in _load():
        old = _load()["community_small"]
        train_s, epochs = old["train_seconds"], old["epochs"]
    result = {"epochs": epochs, "train_seconds": round(train_s, 1), "seconds_per_epoch": round(train_s / epochs, 4),
              "params": sum(p.numel() for p in module.parameters()), "rows": rows,
              "reference": {"seconds_per_epoch": 0.48, "sampler_seconds_128": 400,
                            "paper_mmd": {"degree": 0.045, "clustering": 0.086, "orbit": 0.007}}}
    _save("community_small", result)
    return result


def qm9(epochs: int, n: int, run_dir: Path) -> dict:
    train_s, dm, module, metrics = _train_and_load("graphs/qm9_cpu", epochs, run_dir)
    ref = dm.reference()
    paper = ("GDSS reverse diffusion + Langevin 1000", partial(sample_pc, predictor="reverse_diffusion", corrector="langevin",
                                                             snr=0.2, scale_eps=0.7, corrector_first=True, denoise=False))
    rows = []
    plan = _samplers(paper, 1000) + [("GDSS S4 1000", partial(sample_s4, snr=0.2, scale_eps=0.7), 1000),
                                     ("GDSS reverse diffusion + Langevin 100", paper[1], 100)]
    for label, fn, steps in plan:
        spacing = "logsnr" if "logsnr" in label else None
        samples, sec, nfe = _draw(module, dm, fn, steps, n, n, spacing)
        m = metrics(samples, ref)
        rows.append({"sampler": label, "nfe_per_network": nfe, "seconds": round(sec, 2), **m})
        print(rows[-1], file=sys.stderr)
        _save("qm9", {"epochs": epochs, "train_subset": 10000, "n_samples": n, "train_seconds": round(train_s, 1),
                      "rows": rows, "paper": {"validity_wo_correction": 0.9572, "nspdk_mmd": 0.003, "fcd": 2.900,
                                              "uniqueness": 0.9846, "novelty": 0.8627}})
    return _load()["qm9"]


def community_timing(epochs: int, run_dir: Path, steps: list[int]) -> dict:
    """Wall time of GDSS's sampler for 128 graphs at each step count, on the trained model (run it
    with the machine otherwise idle: the seeds part may share the cores with other jobs)."""
    _, dm, module, _ = _train_and_load("graphs/community_small", epochs, run_dir, skip_training=True)
    fn = GDSS_SAMPLER
    timing = _load().get("community_small_seeds", {}).get("timing", {})
    timing.setdefault("threads", torch.get_num_threads())
    for k in steps:
        _draw(module, dm, fn, 5, 128, 128, None)          # warm-up
        _, sec, _ = _draw(module, dm, fn, k, 128, 128, None)
        timing[str(k)] = round(sec, 2)
        print(k, timing[str(k)], file=sys.stderr, flush=True)
    return _update("community_small_seeds", {"timing": timing})


def community_seeds(epochs: int, run_dir: Path, steps: list[int], seeds: list[int], skip_training: bool) -> dict:
    """GDSS's sampler at several step counts on one trained community-small model, over several
    sampling seeds. GDSS scores one draw of 20 graphs against the 20 test graphs, a noisy protocol:
    each seed draws 128 graphs and is scored on its 6 disjoint groups of 20 (the protocol, repeated)
    and on all 128, so the spread of the paper's own protocol is measured next to the means."""
    import numpy as np

    from workbench.domains.graphs.data import tensors_to_graphs
    from workbench.domains.graphs.metrics import generic_graph_metrics

    train_s, dm, module, _ = _train_and_load("graphs/community_small", epochs, run_dir, skip_training)
    ref = dm.reference()
    fn = GDSS_SAMPLER
    previous = _load().get("community_small_seeds", {}).get("rows", {})
    rows = dict(previous)
    for k in steps:
        for seed in seeds:
            label = f"{k}/{seed}"
            if label in rows:
                continue
            samples, sec, nfe = _draw(module, dm, fn, k, 128, 128, None, seed=seed)
            graphs = tensors_to_graphs(samples["adj"])
            groups = [generic_graph_metrics(graphs[i:i + len(ref)], ref) for i in range(0, 128 - len(ref) + 1, len(ref))]
            rows[label] = {"steps": k, "seed": seed, "nfe_per_network": nfe, "seconds_128": round(sec, 2),
                           "at20": groups, "at128": generic_graph_metrics(graphs, ref)}
            print(label, rows[label]["at128"], file=sys.stderr, flush=True)
            _update("community_small_seeds", {"epochs": epochs, "train_seconds": round(train_s, 1), "rows": rows})
    summary = {}
    for k in sorted({r["steps"] for r in rows.values()}, reverse=True):
        rs = [r for r in rows.values() if r["steps"] == k]
        out = {"seeds": len(rs), "nfe_per_network": rs[0]["nfe_per_network"],
               "seconds_128": round(float(np.median([r["seconds_128"] for r in rs])), 2)}
        for m in ("degree_mmd", "clustering_mmd", "orbit_mmd"):
            a20 = [g[m] for r in rs for g in r["at20"]]
            a128 = [r["at128"][m] for r in rs]
            out[m + "@20"] = [round(float(np.mean(a20)), 4), round(float(np.std(a20)), 4), len(a20)]
            out[m + "@128"] = [round(float(np.mean(a128)), 4), round(float(np.std(a128)), 4), len(a128)]
        summary[k] = out
    return _update("community_small_seeds", {"summary": summary})


def table(data: dict) -> str:
    lines = []
    if "community_small_seeds" in data and "summary" in data["community_small_seeds"]:
        s = data["community_small_seeds"]["summary"]
        lines += ["GDSS's sampler (Euler-Maruyama + Langevin) by number of steps, one community-small model, "
                  "mean ± std over sampling seeds: @20 over every disjoint group of 20 samples (GDSS's protocol, "
                  "repeated), @128 over each seed's 128 samples.", "",
                  "| steps | NFE/net | s / 128 graphs | speed-up vs reference (400 s) | deg@20 | clus@20 | orbit@20 | "
                  "deg@128 | clus@128 | orbit@128 |", "|---|---|---|---|---|---|---|---|---|---|",
                  "| *paper (GDSS, Table 1)* | 2000 | | | *0.045* | *0.086* | *0.007* | | | |"]
        timing = data["community_small_seeds"].get("timing", {})
        for k, r in s.items():
            sec = timing.get(str(k), r["seconds_128"])
            cells = [f"{r[m + a][0]:.3f} ± {r[m + a][1]:.3f}" for a in ("@20", "@128")
                     for m in ("degree_mmd", "clustering_mmd", "orbit_mmd")]
            lines.append(f"| {k} | {r['nfe_per_network']} | {sec} | {400 / sec:.1f}x | "
                         + " | ".join(cells) + " |")
        n = next(iter(s.values()))
        lines += ["", f"{n['seeds']} seeds; @20 has {n['degree_mmd@20'][2]} groups per row.", ""]
    if "community_small" in data:
        c = data["community_small"]
        lines += [f"community-small, paper settings: {c['epochs']} epochs in {c['train_seconds']} s "
                  f"({c['seconds_per_epoch']} s/epoch; reference code 0.48 s/epoch), {c['params']} parameters.", "",
                  "| sampler | NFE/net | s / 128 graphs | deg@20 | clus@20 | orbit@20 | deg@128 | clus@128 | orbit@128 |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for r in c["rows"]:
            lines.append(f"| {r['sampler']} | {r['nfe_per_network']} | {r['seconds_128']} | {r['degree_mmd@20']:.4f} | "
                         f"{r['clustering_mmd@20']:.4f} | {r['orbit_mmd@20']:.4f} | {r['degree_mmd@128']:.4f} | "
                         f"{r['clustering_mmd@128']:.4f} | {r['orbit_mmd@128']:.4f} |")
        lines.append("")
    if "qm9" in data:
        q = data["qm9"]
        lines += [f"QM9, {q['train_subset']} training molecules, {q['epochs']} epochs ({q['train_seconds']} s), "
                  f"{q['n_samples']} samples vs 1,000 test molecules.", "",
                  "| sampler | NFE/net | s | val. w/o corr. | unique | novel | NSPDK | FCD |", "|---|---|---|---|---|---|---|---|"]
        for r in q["rows"]:
            lines.append(f"| {r['sampler']} | {r['nfe_per_network']} | {r['seconds']} | {r['validity_wo_correction']:.3f} | "
                         f"{r['uniqueness']:.3f} | {r['novelty']:.3f} | {r.get('nspdk_mmd', float('nan')):.4f} | "
                         f"{r.get('fcd', float('nan')):.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("part", choices=["community", "seeds", "timing", "qm9", "table"])
    ap.add_argument("--steps", type=int, nargs="*", default=[1000, 300, 200], help="seeds: sampler steps to compare")
    ap.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2], help="seeds: sampling seeds")
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--run-dir", default="runs/benchmarks")
    ap.add_argument("--samplers-only", action="store_true", help="reuse a trained run; only (re)sample")
    args = ap.parse_args(argv)
    run = Path(args.run_dir)
    if args.part == "community":
        community(args.epochs or 5000, run / "community_small", args.samplers_only)
    elif args.part == "seeds":
        community_seeds(args.epochs or 5000, run / "community_small", args.steps, args.seeds, args.samplers_only)
    elif args.part == "timing":
        community_timing(args.epochs or 5000, run / "community_small", args.steps)
    elif args.part == "qm9":
        qm9(args.epochs or 40, args.n, run / "qm9")
    print(table(_load()))


if __name__ == "__main__":
    main()
