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
seeds / timing: see community_seeds / community_timing.
table: print the tables from the stored JSON alone (no measuring); --readme writes them into
  domains/graphs/README.md between their markers.
Every part measures: stored rows are kept only with --reuse, and only rows recorded with the same
settings (epochs, run dir, steps, seed, ...). Each measured row/entry records when, with which
settings and on what machine it was measured (``meta``). Results go to --out (default
benchmarks/results/graphs.json; each part is written as soon as it finishes) and Markdown is printed.
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _meta import ROOT, meta_line, measurement, reused, settings_match, write_block  # noqa: E402
from workbench.cli import compose_config, train, versions
from workbench.data import write_json  # noqa: E402
from workbench.samplers import NFECounter, sample_ddim, sample_dpm_solver, sample_ode, sample_pc, sample_s4
from workbench.state import cat  # noqa: E402

OUT = Path(__file__).parent / "results" / "graphs.json"   # --out replaces it
README = ROOT / "domains" / "graphs" / "README.md"
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


def community(epochs: int, run_dir: Path, samplers_only: bool = False, reuse: bool = False) -> dict:
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
    stored = {r["sampler"]: r for r in _load().get("community_small", {}).get("rows", [])}
    settings = {"epochs": epochs, "run_dir": Path(run_dir).absolute(), "n": 128, "seed": 0}
    rows = []
    for label, fn, steps in plan:
        if reused(stored, label, {**settings, "steps": steps}, reuse):
            rows.append(stored[label])
            continue
        spacing = "logsnr" if "logsnr" in label else None
        samples, sec, nfe = _draw(module, dm, fn, steps, 128, 128, spacing)
        graphs = tensors_to_graphs(samples["adj"])
        m20 = generic_graph_metrics(graphs[: len(ref)], ref)
        m128 = generic_graph_metrics(graphs, ref)
        rows.append({"sampler": label, "nfe_per_network": nfe, "seconds_128": round(sec, 2),
                     **{f"{k}@20": v for k, v in m20.items()}, **{f"{k}@128": v for k, v in m128.items()},
                     "meta": measurement({**settings, "steps": steps})})
        print(rows[-1], file=sys.stderr)
    old = _load().get("community_small", {})
    if samplers_only and settings_match(old, {"epochs": epochs, "run_dir": settings["run_dir"]}):
        train_s, train_meta = old["train_seconds"], old["meta"]      # the stored training of this very run
    elif samplers_only:
        train_s, train_meta = None, None                             # not trained (nor timed) by this call
    else:
        train_meta = measurement({"epochs": epochs, "run_dir": settings["run_dir"]})
    result = {"epochs": epochs, "train_seconds": None if train_s is None else round(train_s, 1),
              "seconds_per_epoch": None if train_s is None else round(train_s / epochs, 4),
              "params": sum(p.numel() for p in module.parameters()), "rows": rows, "meta": train_meta,
              "reference": {"seconds_per_epoch": 0.48, "sampler_seconds_128": 400,
                            "paper_mmd": {"degree": 0.045, "clustering": 0.086, "orbit": 0.007}}}
    _save("community_small", result)
    return result


def qm9(epochs: int, n: int, run_dir: Path) -> dict:
    train_s, dm, module, metrics = _train_and_load("graphs/qm9_cpu", epochs, run_dir)
    ref = dm.reference()
    paper = ("GDSS reverse diffusion + Langevin 1000", partial(sample_pc, predictor="reverse_diffusion", corrector="langevin",
                                                             snr=0.2, scale_eps=0.7, corrector_first=True, denoise=False))
    settings = {"epochs": epochs, "run_dir": Path(run_dir).absolute(), "n": n, "seed": 0}
    train_meta = measurement(settings)
    rows = []
    plan = _samplers(paper, 1000) + [("GDSS S4 1000", partial(sample_s4, snr=0.2, scale_eps=0.7), 1000),
                                     ("GDSS reverse diffusion + Langevin 100", paper[1], 100)]
    for label, fn, steps in plan:
        spacing = "logsnr" if "logsnr" in label else None
        samples, sec, nfe = _draw(module, dm, fn, steps, n, n, spacing)
        m = metrics(samples, ref)
        rows.append({"sampler": label, "nfe_per_network": nfe, "seconds": round(sec, 2), **m,
                     "meta": measurement({**settings, "steps": steps})})
        print(rows[-1], file=sys.stderr)
        _save("qm9", {"epochs": epochs, "train_subset": 10000, "n_samples": n, "train_seconds": round(train_s, 1),
                      "meta": train_meta, "rows": rows, "paper": {"validity_wo_correction": 0.9572, "nspdk_mmd": 0.003, "fcd": 2.900,
                                              "uniqueness": 0.9846, "novelty": 0.8627}})
    return _load()["qm9"]


def _stored_timing(epochs: int, run_dir: Path, reuse: bool) -> dict:
    """The stored timings (``{"<steps>": seconds, "meta": {"<steps>": meta}}``) a run may keep: only
    with ``reuse`` and only those measured on the same run with the same settings."""
    stored = _load().get("community_small_seeds", {}).get("timing", {})
    metas = stored.get("meta", {})
    keep = {}
    for k, sec in stored.items():
        if k.isdigit() and reused({k: {"meta": metas.get(k)}}, k, _timing_settings(epochs, run_dir, int(k)), reuse):
            keep[k] = sec
    return {**keep, "meta": {k: metas[k] for k in keep}} if keep else {}


def _timing_settings(epochs: int, run_dir: Path, steps: int) -> dict:
    return {"epochs": epochs, "run_dir": Path(run_dir).absolute(), "steps": steps, "n": 128}


def community_timing(epochs: int, run_dir: Path, steps: list[int], reuse: bool = False) -> dict:
    """Wall time of GDSS's sampler for 128 graphs at each step count, on the trained model (run it
    with the machine otherwise idle: the seeds part may share the cores with other jobs)."""
    _, dm, module, _ = _train_and_load("graphs/community_small", epochs, run_dir, skip_training=True)
    fn = GDSS_SAMPLER
    timing = _stored_timing(epochs, run_dir, reuse)
    timing.setdefault("meta", {})
    for k in steps:
        if str(k) in timing:
            continue
        _draw(module, dm, fn, 5, 128, 128, None)          # warm-up
        _, sec, _ = _draw(module, dm, fn, k, 128, 128, None)
        timing[str(k)] = round(sec, 2)
        timing["meta"][str(k)] = measurement(_timing_settings(epochs, run_dir, k))
        print(k, timing[str(k)], file=sys.stderr, flush=True)
    timing["threads"] = torch.get_num_threads()
    return _update("community_small_seeds", {"timing": timing})


def _seed_row(module, dm, ref, steps: int, seed: int) -> dict:
    """One (steps, seed) row: 128 graphs, scored on each disjoint group of 20 and on all 128."""
    from workbench.domains.graphs.data import tensors_to_graphs
    from workbench.domains.graphs.metrics import generic_graph_metrics

    samples, sec, nfe = _draw(module, dm, GDSS_SAMPLER, steps, 128, 128, None, seed=seed)
    graphs = tensors_to_graphs(samples["adj"])
    groups = [generic_graph_metrics(graphs[i:i + len(ref)], ref) for i in range(0, 128 - len(ref) + 1, len(ref))]
    return {"steps": steps, "seed": seed, "nfe_per_network": nfe, "seconds_128": round(sec, 2),
            "at20": groups, "at128": generic_graph_metrics(graphs, ref)}


def community_seeds(epochs: int, run_dir: Path, steps: list[int], seeds: list[int], skip_training: bool,
                    reuse: bool = False) -> dict:
    """GDSS's sampler at several step counts on one trained community-small model, over several
    sampling seeds. GDSS scores one draw of 20 graphs against the 20 test graphs, a noisy protocol:
    each seed draws 128 graphs and is scored on its 6 disjoint groups of 20 (the protocol, repeated)
    and on all 128, so the spread of the paper's own protocol is measured next to the means."""
    import numpy as np

    train_s, dm, module, _ = _train_and_load("graphs/community_small", epochs, run_dir, skip_training)
    ref = dm.reference()
    stored = _load().get("community_small_seeds", {}).get("rows", {})
    entry = {"epochs": epochs, "train_seconds": None if skip_training else round(train_s, 1),
             "meta": None if skip_training else measurement({"epochs": epochs, "run_dir": Path(run_dir).absolute()}),
             "rows": {}}
    timing = _stored_timing(epochs, run_dir, reuse)      # timings of another model are dropped
    if timing:
        entry["timing"] = timing
    rows = entry["rows"]
    for k in steps:
        for seed in seeds:
            label = f"{k}/{seed}"
            settings = {"epochs": epochs, "run_dir": Path(run_dir).absolute(), "steps": k, "seed": seed}
            old = reused(stored, label, settings, reuse)
            if old is not None:
                rows[label] = old
                continue
            rows[label] = {**_seed_row(module, dm, ref, k, seed), "meta": measurement(settings)}
            print(label, rows[label]["at128"], file=sys.stderr, flush=True)
            _save("community_small_seeds", entry)
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
    entry["summary"] = summary
    _save("community_small_seeds", entry)
    return entry


def seeds_table(data: dict) -> str:
    e = data["community_small_seeds"]
    s = e["summary"]
    lines = ["GDSS's sampler (Euler-Maruyama + Langevin) by number of steps, one community-small model, "
             "mean ± std over sampling seeds: @20 over every disjoint group of 20 samples (GDSS's protocol, "
             "repeated), @128 over each seed's 128 samples.", "",
             "| steps | NFE/net | s / 128 graphs | speed-up vs reference (400 s) | deg@20 | clus@20 | orbit@20 | "
             "deg@128 | clus@128 | orbit@128 |", "|---|---|---|---|---|---|---|---|---|---|",
             "| *paper (GDSS, Table 1)* | 2000 | | | *0.045* | *0.086* | *0.007* | | | |"]
    timing = e.get("timing", {})
    for k, r in s.items():
        sec = timing.get(str(k), r["seconds_128"])
        cells = [f"{r[m + a][0]:.3f} ± {r[m + a][1]:.3f}" for a in ("@20", "@128")
                 for m in ("degree_mmd", "clustering_mmd", "orbit_mmd")]
        lines.append(f"| {k} | {r['nfe_per_network']} | {sec} | {400 / sec:.1f}x | " + " | ".join(cells) + " |")
    n = next(iter(s.values()))
    src = ("sampling time from `timing` (128 graphs, the machine otherwise idle, "
           f"{timing['threads']} torch threads)" if any(str(k) in timing for k in s)
           else "sampling time the median over the seeds' runs")
    rows = list(e["rows"].values())
    lines += ["", f"{n['seeds']} seeds; @20 has {n['degree_mmd@20'][2]} groups per row; {src}.",
              meta_line(rows[0]) if rows and all(r.get("meta") for r in rows) else meta_line({})]
    return "\n".join(lines)


def community_table(data: dict) -> str:
    c = data["community_small"]
    lines = [f"GDSS config (batch 128, lr 1e-2, {c['epochs']} epochs, {c['params']:,} parameters), trained once "
             "with seed 0; 128 graphs per sampler, MMD² against the 20 test graphs computed on the first 20 samples "
             "(GDSS's protocol, `@20`) and on all 128 (`@128`, less noisy). Sampling wall time for 128 graphs "
             "(`s / 128 graphs`: the sampler alone, the model loaded).", "",
             "| sampler | NFE per network | s / 128 graphs | deg@20 | clus@20 | orbit@20 | deg@128 | clus@128 | orbit@128 |",
             "|---|---|---|---|---|---|---|---|---|",
             "| *paper (GDSS, Table 1)* | 2000 | | *0.045* | *0.086* | *0.007* | | | |"]
    for r in c["rows"]:
        lines.append(f"| {r['sampler']} | {r['nfe_per_network']} | {r['seconds_128']} | {r['degree_mmd@20']:.4f} | "
                     f"{r['clustering_mmd@20']:.4f} | {r['orbit_mmd@20']:.4f} | {r['degree_mmd@128']:.4f} | "
                     f"{r['clustering_mmd@128']:.4f} | {r['orbit_mmd@128']:.4f} |")
    if c.get("train_seconds") is not None:
        lines += ["", f"Training: {c['epochs']} epochs in {c['train_seconds']:,} s of wall time "
                  f"({c['seconds_per_epoch']} s / epoch, the whole `workbench train` run: loop, per-epoch validation "
                  "and checkpoint, with whatever else shared the cores)."]
    rows = c["rows"]
    lines.append(meta_line(rows[0]) if rows and all(r.get("meta") for r in rows) else meta_line({}))
    return "\n".join(lines)


def qm9_table(data: dict) -> str:
    q = data["qm9"]
    lines = [f"QM9, {q['train_subset']} training molecules, {q['epochs']} epochs ({q['train_seconds']} s of "
             f"`workbench train`, validation and checkpoints included), {q['n_samples']} samples vs 1,000 test "
             "molecules; `s` is the sampler's wall time for all samples.", "",
             "| sampler | NFE/net | s | val. w/o corr. | unique | novel | NSPDK | FCD |", "|---|---|---|---|---|---|---|---|"]
    for r in q["rows"]:
        lines.append(f"| {r['sampler']} | {r['nfe_per_network']} | {r['seconds']} | {r['validity_wo_correction']:.3f} | "
                     f"{r['uniqueness']:.3f} | {r['novelty']:.3f} | {r.get('nspdk_mmd', float('nan')):.4f} | "
                     f"{r.get('fcd', float('nan')):.2f} |")
    lines += ["", meta_line(q)]
    return "\n".join(lines)


#: README block -> renderer (and the JSON entry it needs)
TABLES = {"graphs-community-table": (community_table, "community_small"),
          "graphs-seeds-table": (seeds_table, "community_small_seeds"),
          "qm9-table": (qm9_table, "qm9")}


def table(data: dict) -> str:
    return "\n\n".join(fn(data) for fn, key in TABLES.values() if key in data)


def write_readme(data: dict, path: Path | None = None) -> None:
    for name, (fn, key) in TABLES.items():
        if key in data:
            write_block(path or README, name, fn(data))


def main(argv: list[str] | None = None) -> None:
    global OUT
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("part", choices=["community", "seeds", "timing", "qm9", "table"])
    ap.add_argument("--steps", type=int, nargs="*", default=[1000, 300, 200], help="seeds: sampler steps to compare")
    ap.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2], help="seeds: sampling seeds")
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--run-dir", default="runs/benchmarks")
    ap.add_argument("--samplers-only", action="store_true", help="use the trained run as it is; only sample")
    ap.add_argument("--reuse", action="store_true",
                    help="keep stored rows recorded with the same settings instead of measuring them again")
    ap.add_argument("--out", type=Path, default=None, help=f"results JSON (default {OUT})")
    ap.add_argument("--readme", action="store_true", help="write the tables into domains/graphs/README.md")
    args = ap.parse_args(argv)
    OUT = args.out or OUT
    run = Path(args.run_dir)
    if args.part == "community":
        community(args.epochs or 5000, run / "community_small", args.samplers_only, args.reuse)
    elif args.part == "seeds":
        community_seeds(args.epochs or 5000, run / "community_small", args.steps, args.seeds, args.samplers_only,
                        args.reuse)
    elif args.part == "timing":
        community_timing(args.epochs or 5000, run / "community_small", args.steps, args.reuse)
    elif args.part == "qm9":
        qm9(args.epochs or 40, args.n, run / "qm9")
    print(table(_load()))
    if args.readme:
        write_readme(_load())


if __name__ == "__main__":
    main()
