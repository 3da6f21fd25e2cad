#!/usr/bin/env python3
"""SVG charts from `xlmr-bench --json` results (docs/bench.md, "JSON") and,
optionally, from `scripts/compare_pytorch.py --json` (docs/compare.md).

  scripts/plot_bench.py bench.json [more.json ...] [--compare cmp.json] [--out DIR] [--title T] [--note N]

Writes into --out (default: the current folder):
  kernels.svg     per-kernel share of the profiled forward, one stacked bar per
                  run (workload x path x layout x dtype), with the forward's
                  milliseconds at the end of each bar
  padding.svg     tokens/s (real tokens) against the share of a padded batch
                  that is padding, one line per path/layout/dtype across the
                  workloads: a ragged layout stays flat, a padded one falls
  pytorch.svg     with --compare: tokens/s of xlmr-engine and of each PyTorch
                  system per workload, with the engine's ratio over each

Several bench files are plotted together; their runs are labelled with the
file name. Needs matplotlib (Debian: python3-matplotlib); no display is used.
"""
import argparse
import json
import os
import sys

import textwrap

try:
    import matplotlib
except ImportError:
    sys.exit("plot_bench.py: error: needs matplotlib (Debian: apt install python3-matplotlib; "
             "run it with /usr/bin/python3)")
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402

plt.rcParams.update({
    "svg.fonttype": "none",   # text stays text: small files, searchable
    "svg.hashsalt": "xlmr",   # stable element ids between runs
    "font.size": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
})
SVG_META = {"Date": None}     # no timestamp in the file

# The profiler's kernels (engine/profiler.h) in forward order, with colours:
# GEMMs blue, attention orange, LayerNorms green, the rest grey.
KERNEL_COLORS = {
    "embed+layernorm": "#74c476",
    "qkv_gemm+bias": "#08519c",
    "attention": "#fd8d3c",
    "out_proj_gemm": "#3182bd",
    "bias+residual+ln1": "#31a354",
    "ffn1_gemm+bias+gelu": "#6baed6",
    "ffn2_gemm": "#9ecae1",
    "bias+residual+ln2": "#a1d99b",
    "pool+head": "#969696",
    "pack/cast": "#d9d9d9",
    "(outside kernels)": "#f0f0f0",
}


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        sys.exit(f"plot_bench.py: error: cannot read '{path}': {e}")


def combo(r):
    return f"{r['path']} {r['layout']} {r['dtype']}"


def subtitle(docs, note):
    parts = []
    for d in docs:
        m, mo = d.get("machine", {}), d.get("model", {})
        cpu = m.get("cpu", "?")
        parts.append(f"{mo.get('source', 'model')} (E{mo.get('hidden')} L{mo.get('layers')}) on {cpu}, "
                     f"{m.get('threads')} threads, {m.get('isa')}")
    seen = []
    for p in parts:
        if p not in seen:
            seen.append(p)
    text = "; ".join(seen)
    return text + ("\n" + note if note else "")


def finish(fig, ax, title, sub, path):
    fig.suptitle(title, x=0.01, ha="left", fontsize=11, fontweight="bold")
    wrapped = "\n".join(textwrap.fill(line, 130) for line in sub.split("\n"))
    ax.set_title(wrapped, loc="left", fontsize=8, color="#555555")
    fig.tight_layout()
    fig.savefig(path, format="svg", metadata=SVG_META)
    plt.close(fig)
    print(f"wrote {path} ({os.path.getsize(path) // 1024} KB)")


def plot_kernels(runs, title, sub, path):
    rows = [(label, r) for label, r in runs if r.get("kernels")]
    if not rows:
        print("kernels.svg: no run has a per-kernel profile, skipped")
        return
    names = [k for k in KERNEL_COLORS if any(k == x["name"] for _, r in rows for x in r["kernels"])]
    names += sorted({x["name"] for _, r in rows for x in r["kernels"]} - set(names))
    names.append("(outside kernels)")
    fig, ax = plt.subplots(figsize=(10, 0.3 * len(rows) + 1.6))
    # One bar per run, a gap between workloads.
    y, pos, prev = [], 0.0, None
    for label, r in rows:
        group = label.split(" · ")[0]
        if prev is not None and group != prev:
            pos += 0.6
        y.append(-pos)
        pos += 1
        prev = group
    left = [0.0] * len(rows)
    for name in names:
        widths = []
        for _, r in rows:
            if name == "(outside kernels)":
                widths.append(100 * (r.get("outside_kernels_share") or 0))
            else:
                widths.append(100 * sum(k["share"] for k in r["kernels"] if k["name"] == name))
        ax.barh(y, widths, left=left, color=KERNEL_COLORS.get(name, "#bcbddc"), edgecolor="white",
                linewidth=0.4, label=name, height=0.8)
        left = [a + b for a, b in zip(left, widths)]
    for yi, (_, r), end in zip(y, rows, left):
        total = sum(k["total_ms"] for k in r["kernels"])
        outside = r.get("outside_kernels_share") or 0
        fwd = total / (1 - outside) if outside < 1 else total
        ax.text(end + 1, yi, f"{fwd:.3g} ms", va="center", fontsize=7, color="#333333")
    ax.set_yticks(y)
    ax.set_yticklabels([label for label, _ in rows], fontsize=7)
    ax.set_ylim(min(y) - 0.7, 0.7)
    ax.set_xlim(0, 114)
    ax.set_xticks(range(0, 101, 20))
    ax.set_xlabel("share of one profiled forward (%); after each bar: the forward's wall time")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    finish(fig, ax, title or "Where a forward's time goes, per kernel", sub, path)


def padding_share(runs):
    """workload -> share of its padded batch that is padding, from any padded run."""
    share = {}
    for label, r in runs:
        key = (label.split(" | ")[0] if " | " in label else "", r["workload"])
        if r.get("padded_tokens"):
            share[key] = 1.0 - r["n_tokens"] / r["padded_tokens"]
    return share


def plot_padding(runs, title, sub, path):
    share = padding_share(runs)
    series = {}
    skipped = set()
    for label, r in runs:
        src = label.split(" | ")[0] if " | " in label else ""
        key = (src, r["workload"])
        if key not in share:
            skipped.add(r["workload"])
            continue
        name = (src + ": " if src else "") + combo(r)
        series.setdefault(name, []).append((share[key], r["tokens_per_s"], r["workload"]))
    if skipped:
        print("padding.svg: no padded run of " + ", ".join(sorted(skipped)) + " (its padding share is unknown), "
              "left out")
    if not series:
        print("padding.svg: nothing to plot (run xlmr-bench with --layout both)")
        return
    fig, (ax, rax) = plt.subplots(1, 2, figsize=(11, 4.8), gridspec_kw={"width_ratios": [3, 2]})
    # Left: tokens/s. Colour: path and dtype; line: layout (solid ragged, dashed padded).
    colors = {"fused f32": "#2171b5", "fused bf16": "#e6550d", "fused f16": "#31a354", "reference f32": "#636363"}
    for name, pts in sorted(series.items()):
        pts.sort()
        words = name.split(": ")[-1].split()  # path layout dtype
        key = f"{words[0]} {words[2]}"
        ax.plot([p[0] * 100 for p in pts], [p[1] for p in pts], "--" if words[1] == "padded" else "-",
                marker="s" if words[1] == "padded" else "o", color=colors.get(key), label=name, linewidth=1.4,
                markersize=5)
    at = {}
    for pts in series.values():
        for x, _, w in pts:
            at.setdefault(w, x * 100)
    ymin = min(p[1] for pts in series.values() for p in pts)
    ymax = max(p[1] for pts in series.values() for p in pts)
    if ymax / max(ymin, 1e-9) > 20:
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(matplotlib.ticker.FuncFormatter(
            lambda v, _: f"{v:g}" if str(int(v))[0] in "25" else ""))
        ax.tick_params(axis="y", which="minor", labelsize=7)
    for a in (ax, rax):
        for x in at.values():
            a.axvline(x, color="#e5e5e5", linewidth=0.8, zorder=0)
        a.set_xlim(-3, 103)
        a.set_xlabel("padding share of the workload's padded batch (%)")
        top = a.twiny()  # the workloads, named along the top edge
        top.set_xlim(a.get_xlim())
        top.set_xticks(list(at.values()))
        top.set_xticklabels(list(at), fontsize=7, rotation=25, ha="left")
        top.spines["right"].set_visible(False)
    ax.set_ylabel("tokens/s (real tokens, mean latency)")
    ax.legend(fontsize=7, frameon=False, loc="best")

    # Right: ragged over padded, same path and dtype, against 1 / (1 - padding
    # share): the speed-up if time were proportional to the rows computed.
    xs = [i / 100 for i in range(0, 96)]
    rax.plot([x * 100 for x in xs], [1 / (1 - x) for x in xs], ":", color="#999999", linewidth=1,
             label="1 / (1 - padding share)")
    by_key = {}
    for name, pts in series.items():
        words = name.split(": ")
        src, (cpath, layout, dtype) = (words[0] if len(words) > 1 else ""), words[-1].split()
        for x, tps, w in pts:
            by_key.setdefault((src, cpath, dtype, w), {})[layout] = (x, tps)
    ratios = {}
    for (src, cpath, dtype, w), v in by_key.items():
        if "ragged" in v and "padded" in v:
            label = (src + ": " if src else "") + f"{cpath} {dtype}"
            ratios.setdefault(label, []).append((v["ragged"][0], v["ragged"][1] / v["padded"][1]))
    for label, pts in sorted(ratios.items()):
        pts.sort()
        rax.plot([p[0] * 100 for p in pts], [p[1] for p in pts], "-", marker="o",
                 color=colors.get(" ".join(label.split(": ")[-1].split()[:2])), label=label, linewidth=1.4,
                 markersize=5)
    top_ratio = max([p[1] for pts in ratios.values() for p in pts] + [1.0])
    rax.set_ylim(0, max(2.0, top_ratio * 1.4))
    rax.set_ylabel("ragged tokens/s / padded tokens/s")
    rax.legend(fontsize=7, frameon=False, loc="upper left")
    finish(fig, ax, title or "Throughput against padding: ragged vs padded batches", sub, path)


def plot_pytorch(cmp, title, note, path):
    labels = cmp.get("labels", {})
    systems = list(labels) or sorted({s for w in cmp["workloads"] for s in w["systems"]})
    workloads = cmp["workloads"]
    systems = [s for s in systems if any(s in w["systems"] for w in workloads)]
    if not systems:
        print("pytorch.svg: the comparison holds no timed system, skipped")
        return
    fig, ax = plt.subplots(figsize=(8, 4.6))
    width = 0.8 / len(systems)
    palette = ["#08519c", "#6baed6", "#e6550d", "#fdae6b", "#756bb1", "#31a354", "#969696"]
    engine_key = cmp.get("engine_key")
    for i, s in enumerate(systems):
        xs, ys = [], []
        for j, w in enumerate(workloads):
            if s in w["systems"]:
                xs.append(j + (i - (len(systems) - 1) / 2) * width)
                ys.append(w["systems"][s]["tokens_per_s"])
        bars = ax.bar(xs, ys, width * 0.95, label=labels.get(s, s), color=palette[i % len(palette)])
        for b, (j, w) in zip(bars, [(j, w) for j, w in enumerate(workloads) if s in w["systems"]]):
            ratio = w.get("ratios", {}).get(s)
            text = f"{b.get_height():.0f}"
            if ratio is not None and s != engine_key:
                text += f"\n{ratio:.1f}x"
            ax.annotate(text, (b.get_x() + b.get_width() / 2, b.get_height()), ha="center", va="bottom",
                        fontsize=6.5, xytext=(0, 1), textcoords="offset points")
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(matplotlib.ticker.FuncFormatter(
        lambda v, _: f"{v:g}" if str(int(v))[0] in "25" else ""))
    ax.tick_params(axis="y", which="minor", labelsize=7)
    ax.set_xticks(range(len(workloads)))
    ax.set_xticklabels([f"{w['name']}\n{w['n_seqs']} seqs, {w['n_tokens']} tokens" for w in workloads])
    ax.set_ylabel("tokens/s (real tokens / median latency), log scale")
    ax.margins(y=0.25)
    ax.legend(fontsize=7, frameon=False, loc="upper left", ncol=2)
    m = cmp.get("model", {})
    er = cmp.get("engine_report", {}).get("machine", {})
    load = cmp.get("load_average") or {}
    sub = (f"XLM-R {m.get('size', '?')} (E{m.get('E')} L{m.get('L')}), random weights, {cmp.get('threads')} threads"
           + (f", {er.get('cpu')}" if er.get("cpu") else "")
           + (f", load average {load['before']:.1f} before / {load['after']:.1f} after"
              if load.get("before") is not None and load.get("after") is not None else "")
           + f". Under each PyTorch figure: {labels.get(engine_key, engine_key)} tokens/s over that system's."
           + ("\n" + note if note else ""))
    finish(fig, ax, title or "xlmr-engine against PyTorch on the same model and ids", sub, path)


def main():
    ap = argparse.ArgumentParser(description="SVG charts from xlmr-bench --json (and compare_pytorch.py --json) results.")
    ap.add_argument("bench", nargs="*", help="xlmr-bench --json result files")
    ap.add_argument("--compare", metavar="FILE", help="scripts/compare_pytorch.py --json result")
    ap.add_argument("--out", default=".", help="folder for the SVG files (default: the current one)")
    ap.add_argument("--title", help="title prefix for every chart")
    ap.add_argument("--note", help="extra line under each title (e.g. the machine's conditions)")
    args = ap.parse_args()
    if not args.bench and not args.compare:
        ap.error("give at least one xlmr-bench JSON file or --compare FILE")
    os.makedirs(args.out, exist_ok=True)

    def title(default):
        return f"{args.title}: {default}" if args.title else default

    if args.bench:
        docs = [load(p) for p in args.bench]
        runs = []
        for p, d in zip(args.bench, docs):
            if not isinstance(d, dict) or "runs" not in d:
                sys.exit(f"plot_bench.py: error: '{p}' is not an xlmr-bench --json result (no \"runs\")")
            src = os.path.splitext(os.path.basename(p))[0] if len(docs) > 1 else ""
            for r in d["runs"]:
                label = f"{r['workload']} · {combo(r)}"
                runs.append(((src + " | " + label) if src else label, r))
        sub = subtitle(docs, args.note)
        plot_kernels(runs, title("where a forward's time goes, per kernel"), sub, os.path.join(args.out, "kernels.svg"))
        plot_padding(runs, title("throughput against padding: ragged vs padded batches"), sub,
                     os.path.join(args.out, "padding.svg"))
    if args.compare:
        cmp = load(args.compare)
        if not isinstance(cmp, dict) or "workloads" not in cmp:
            sys.exit(f"plot_bench.py: error: '{args.compare}' is not a compare_pytorch.py --json result")
        plot_pytorch(cmp, title("xlmr-engine against PyTorch, same model and ids"), args.note,
                     os.path.join(args.out, "pytorch.svg"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
