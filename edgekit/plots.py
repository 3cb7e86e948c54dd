"""PNG figures for `edgekit report` and `edgekit sweep` (matplotlib, Agg backend: no display needed)."""
from __future__ import annotations

from pathlib import Path


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _plt().close(fig)
    return path


def layer_latency(layers: list[dict], unit: str, label: str, path: Path) -> Path:
    """Per-layer counter bars, with each layer's MACs (TVM's flop estimate / 2) beside them."""
    plt = _plt()
    names = [f"{i} {row['name'].removeprefix('fused_')[:28]}" for i, row in enumerate(layers)]
    fig, (a, b) = plt.subplots(1, 2, sharey=True, figsize=(11, 0.28 * len(layers) + 1.5))
    a.barh(names, [row[unit] for row in layers], color="tab:blue")
    a.set_xlabel(f"{unit} ({label})")
    a.invert_yaxis()
    b.barh(names, [(row.get("flops") or 0) / 2 for row in layers], color="tab:gray")
    b.set_xlabel("MACs (estimate)")
    fig.suptitle("latency per layer")
    return _save(fig, path)


def memory_map(plan: dict, path: Path) -> Path:
    """Each arena buffer as a box: its lifetime in steps against its offset, the peak step marked."""
    plt = _plt()
    from matplotlib.patches import Rectangle
    bufs = plan["buffers"]
    steps = max((b["last"] for b in bufs), default=0) + 1
    live = [sum(b["bytes"] for b in bufs if b["first"] <= t <= b["last"]) for t in range(steps)]
    peak = max(range(steps), key=live.__getitem__) if bufs else 0
    fig, ax = plt.subplots(figsize=(10, 5))
    cmap = plt.get_cmap("tab20")
    for i, b in enumerate(bufs):
        ax.add_patch(Rectangle((b["first"], b["offset"] / 1024), b["last"] - b["first"] + 1, b["bytes"] / 1024,
                               facecolor=cmap(i % 20), edgecolor="black", linewidth=0.4, alpha=0.85))
    ax.axvspan(peak, peak + 1, color="red", alpha=0.15, label=f"peak: step {peak}, {live[peak]:,} B live" if bufs else "")
    ax.axhline(plan["arena_bytes"] / 1024, color="black", linestyle="--", label=f"arena {plan['arena_bytes']:,} B")
    ax.axhline(plan["lower_bound"] / 1024, color="red", linestyle=":", label=f"lower bound {plan['lower_bound']:,} B")
    ax.set_xlim(0, max(steps, 1))
    ax.set_ylim(0, max(plan["arena_bytes"], 1) / 1024 * 1.08)
    ax.set_xlabel("step (layer)")
    ax.set_ylabel("arena offset (KiB)")
    ax.set_title("arena memory map: each tensor's lifetime and place")
    ax.legend(loc="upper right", fontsize=8)
    return _save(fig, path)


def budget(rows: list[tuple[str, int, int | None]], path: Path) -> Path:
    """(what, used bytes, budget bytes or None) as bars against the board's budget."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 0.6 * len(rows) + 1.2))
    names = [r[0] for r in rows]
    ax.barh(names, [r[2] or 0 for r in rows], color="lightgray", label="board budget")
    ax.barh(names, [r[1] for r in rows], height=0.5,
            color=["tab:red" if r[2] and r[1] > r[2] else "tab:green" for r in rows], label="used")
    for i, (_, used, cap) in enumerate(rows):
        ax.text(used, i, f" {used / 1024:,.1f} KiB" + (f" of {cap / 1024:,.0f}" if cap else ""), va="center", fontsize=8)
    ax.set_xlabel("bytes")
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title("memory against the board's budget")
    return _save(fig, path)


def confusion(matrix: list[list[int]], classes: list[str], path: Path) -> Path:
    plt = _plt()
    n = len(matrix)
    fig, ax = plt.subplots(figsize=(1.0 + 0.55 * n, 0.8 + 0.5 * n))
    ax.imshow(matrix, cmap="Blues")
    for i in range(n):
        for j in range(n):
            if matrix[i][j]:
                ax.text(j, i, matrix[i][j], ha="center", va="center", fontsize=7)
    ax.set_xticks(range(n), [c[:12] for c in classes], rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(n), [c[:12] for c in classes], fontsize=7)
    ax.set_xlabel("predicted on the device")
    ax.set_ylabel("true class")
    ax.set_title("confusion matrix")
    return _save(fig, path)


def pareto(points: list[dict], x: str, xlabel: str, path: Path) -> Path:
    """Accuracy against `x` (a point key); the Pareto frontier of the points that fit, those that don't greyed."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 5))
    fit = sorted((p for p in points if p.get("fits") and p.get(x) is not None and p.get("accuracy") is not None),
                 key=lambda p: (p[x], -p["accuracy"]))
    front, best = [], -1.0
    for p in fit:  # lowest cost first: a point is on the frontier if nothing cheaper is as accurate
        if p["accuracy"] > best:
            front.append(p)
            best = p["accuracy"]
    out = [p for p in points if not p.get("fits") and p.get(x) is not None and p.get("accuracy") is not None]
    ax.scatter([p[x] for p in out], [p["accuracy"] for p in out], color="lightgray", label="does not fit the board")
    ax.scatter([p[x] for p in fit], [p["accuracy"] for p in fit], color="tab:blue", label="fits")
    ax.plot([p[x] for p in front], [p["accuracy"] for p in front], color="tab:red", marker="o", label="Pareto frontier")
    for p in fit + out:
        ax.annotate(p["label"], (p[x], p["accuracy"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("top-1 accuracy on the device")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path)
