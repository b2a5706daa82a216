#!/usr/bin/env python3
"""Draws the PNGs of `make bench` from the CSV files the bench wrote (issue 6).

    bench/plot.py [RESULTS_DIR]     (default: bench-results)

propagation.png  latency distribution (CDF and histogram) of propagation.csv
scale.png        programming time vs K (scale.csv) and entries over time (scale_timeline.csv)
convergence.png  per-trial convergence times (convergence.csv), when present

A PNG is drawn only when its CSV exists, so a partial run (`BENCH=scale`) plots what it has.
"""

import csv
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def read(out, name):
    path = os.path.join(out, name)
    if not os.path.exists(path):
        return None
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def floats(rows, column):
    return [float(r[column]) for r in rows if r.get(column) not in (None, "")]


def percentile(values, p):
    """Nearest-rank, as the bench computes it."""
    v = sorted(values)
    if not v:
        return float("nan")
    rank = max(1, -(-p * len(v) // 100))
    return v[min(int(rank), len(v)) - 1]


def cdf(ax, values, label, color, **style):
    v = sorted(values)
    if not v:
        return
    ys = [(i + 1) / len(v) for i in range(len(v))]
    ax.step(v, ys, where="post", label=label, color=color, **style)



def label(ax, xlabel, ylabel, title):
    """Axis labels, a light grid, a small legend and a title."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title)


def save(fig, out, name):
    """Writes the figure to out/name and returns the path."""
    fig.tight_layout()
    path = os.path.join(out, name)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_propagation(out):
    rows = read(out, "propagation.csv")
    if not rows:
        return None
    all_ms = floats(rows, "all_ms")
    route_ms = floats(rows, "route_ms")
    delete_ms = floats(rows, "delete_all_ms")
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    cdf(left, route_ms, "route only", "tab:orange", linestyle="--")
    cdf(left, delete_ms, "removal (after the etcd delete)", "tab:gray", linestyle=":")
    cdf(left, all_ms, "route+ARP+FDB (last of the three)", "tab:blue", linewidth=2)
    for p, style in ((50, ":"), (99, "--")):
        x = percentile(all_ms, p)
        left.axvline(x, color="tab:blue", linestyle=style, linewidth=1)
        left.annotate(f"p{p} {x:.2f} ms", (x, 0.05 if p == 50 else 0.15), rotation=90,
                      fontsize=8, xytext=(3, 0), textcoords="offset points")
    left.axvline(5.0, color="tab:red", linewidth=1)
    left.annotate("target p99 5 ms", (5.0, 0.5), rotation=90, fontsize=8, color="tab:red",
                  xytext=(3, 0), textcoords="offset points")
    # A few outliers (e.g. one slow etcd commit) would squash the body: clip and say so.
    xmax = max(6.0, 1.5 * percentile(all_ms + delete_ms, 99.5)) if all_ms else 6.0
    beyond = [v for v in all_ms if v > xmax]
    left.set_xlim(0, xmax)
    if beyond:
        left.annotate(f"{len(beyond)} sample(s) beyond {xmax:.1f} ms (max {max(beyond):.1f} ms)",
                      (0.98, 0.3), xycoords="axes fraction", ha="right", fontsize=8)
    left.set_xlabel("ms from etcd put until the entries exist on a peer")
    left.set_ylabel("fraction of (put, host) samples")
    left.set_ylim(0, 1.02)
    left.grid(alpha=0.3)
    left.legend(loc="upper left", fontsize=8)
    left.set_title(f"Propagation latency CDF ({len(all_ms)} samples)")
    if all_ms:
        lo, hi = 0.0, xmax
        bins = [lo + (hi - lo) * i / 50 for i in range(51)]
        right.hist([min(v, xmax) for v in all_ms], bins=bins, color="tab:blue", alpha=0.5,
                   label="route+ARP+FDB")
        right.hist([min(v, xmax) for v in route_ms], bins=bins, histtype="step",
                   color="tab:orange", linewidth=1.5, label="route only")
        right.set_xlim(0, xmax)
    label(right, "ms", "samples", "Histogram (samples beyond the axis are in the last bin)")
    return save(fig, out, "propagation.png")


def plot_scale(out):
    rows = read(out, "scale.csv")
    if not rows:
        return None
    timeline = read(out, "scale_timeline.csv") or []
    ks = sorted({int(r["k"]) for r in rows})

    def runs(k, column, scale=1.0):
        return [float(r[column]) / scale for r in rows if int(r["k"]) == k and r[column]]

    prog_runs = [runs(k, "program_all_ms") for k in ks]
    prog = [percentile(v, 50) for v in prog_runs]
    lo = [p - min(v) if v else 0 for p, v in zip(prog, prog_runs)]
    hi = [max(v) - p if v else 0 for p, v in zip(prog, prog_runs)]
    rss = [max(runs(k, "vmhwm_kb", 1024) or [float("nan")]) for k in ks]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    left.errorbar(ks, prog, yerr=[lo, hi], fmt="o-", color="tab:blue", capsize=3,
                  label="all 3K entries programmed (median, min-max)")
    for k, v in zip(ks, prog):
        left.annotate(f"{v:.0f} ms", (k, v), xytext=(4, 4), textcoords="offset points", fontsize=8)
    left.plot([5000], [500], "rx", markersize=9, label="target: K=5,000 in 500 ms")
    left.set_xlabel("K (peer leases in etcd)")
    left.set_ylabel("ms from weftd spawn")
    left.set_xlim(0, max(ks + [5000]) * 1.1)
    left.set_ylim(0, max([max(v) for v in prog_runs if v] + [500]) * 1.25)
    left.grid(alpha=0.3)
    twin = left.twinx()
    twin.plot(ks, rss, "s--", color="tab:green", label="peak RSS (MiB)")
    twin.axhline(10000 / 1024, color="tab:green", linewidth=0.8, linestyle=":",
                 label="target: RSS 10 MB")
    twin.set_ylabel("peak RSS (VmHWM, MiB)")
    twin.set_ylim(0, max(rss + [10]) * 1.25)
    lines = left.get_legend_handles_labels()
    more = twin.get_legend_handles_labels()
    left.legend(lines[0] + more[0], lines[1] + more[1], loc="upper left", fontsize=8)
    left.set_title("Programming time and memory vs K")
    for k in ks:
        # The first run of each K (scale_timeline.csv holds every run).
        pts = [(float(r["ms"]), int(r["entries"])) for r in timeline
               if int(r["k"]) == k and r.get("run", "1") == "1"]
        if pts:
            right.step([p[0] for p in pts], [p[1] for p in pts], where="post", label=f"K={k}")
    label(right, "ms from weftd spawn", "kernel entries on flannel.1 (route+ARP+FDB)",
          "Entries appearing over time (first run of each K)")
    return save(fig, out, "scale.png")


def plot_convergence(out):
    rows = read(out, "convergence.csv")
    if not rows:
        return None
    trials = [int(r["trial"]) for r in rows]
    def col(name):
        return [float(r[name]) if r[name] else float("nan") for r in rows]
    fig, ax = plt.subplots(figsize=(9, 4.5))
    ax.plot(trials, col("last_subnet_env_ms"), "o-", label="last subnet.env written")
    ax.plot(trials, col("all_pairs_ms"), "s-", label="all container pairs answer")
    ax.plot(trials, col("after_last_subnet_env_ms"), "^-",
            label="all pairs answer, ms after the last subnet.env")
    if "after_containers_ready_max_ms" in rows[0]:
        ax.plot(trials, col("after_containers_ready_max_ms"), "v-",
                label="slowest pair, ms after both its containers had addresses")
    broken = [int(r["broken_pairs"]) for r in rows]
    for t, b in zip(trials, broken):
        if b:
            ax.annotate(f"{b} broken", (t, 0), fontsize=8, color="tab:red")
    ax.set_xlabel("trial")
    ax.set_xticks(trials)
    top = max(v for name in ("all_pairs_ms", "last_subnet_env_ms") for v in col(name) if v == v)
    ax.set_ylim(0, top * 1.5)
    ax.set_ylabel("ms (from the first daemon spawn unless said)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper center", ncol=2)
    ax.set_title(f"Convergence of hosts started together ({len(trials)} trials)")
    return save(fig, out, "convergence.png")


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "bench-results"
    for draw in (plot_propagation, plot_scale, plot_convergence):
        path = draw(out)
        if path:
            print(f"plot: {path}")


if __name__ == "__main__":
    main()
