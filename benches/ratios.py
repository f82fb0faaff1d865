#!/usr/bin/env python3
"""The README's performance tables from the shared harness's reports: for each report, one row
for HTTP/1.1 and one for h2c with NGINX's, HAProxy's and veer's median CPU per request, req/s and
latency (p99 for HTTP/1.1, h2load's mean for h2c), and veer's ratio to each peer.

    benches/ratios.py REPORT.md [REPORT.md ...]      (benches/compare.sh runs it on its reports)
"""
import sys

PEERS = ("nginx", "haproxy", "veer")


def medians(path):
    """{'h1': {proxy: (cpu, rps, latency)}, 'h2': {...}} from the first table of each protocol."""
    found = {"h1": {}, "h2": {}}
    with open(path, encoding="utf-8") as report:
        for line in report:
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            try:
                if len(cells) > 6 and cells[0] in PEERS and cells[0] not in found["h1"]:
                    # proxy | req/s | min–max | p50 | p99 | CPU µs/req | …
                    found["h1"][cells[0]] = (float(cells[5]), float(cells[1]), float(cells[4]))
                elif len(cells) > 6 and cells[0] == "h2" and cells[1] in PEERS \
                        and cells[1] not in found["h2"]:
                    # proto | proxy | req/s | min–max | mean ms | CPU µs/req | …
                    found["h2"][cells[1]] = (float(cells[5]), float(cells[2]), float(cells[4]))
            except ValueError:
                continue
    return found


def row(run, figures):
    if any(p not in figures for p in PEERS):
        return f"| {run} | (a contestant is missing from this report) |"
    n, h, v = (figures[p] for p in PEERS)
    cells = [str(run)]
    for i, fmt in ((0, "{:.1f}"), (1, "{:,.0f}"), (2, "{:.2f}")):
        cells.append(" · ".join(fmt.format(x[i]) for x in (n, h, v)))
        cells.append(f"{v[i] / n[i]:.2f} · {v[i] / h[i]:.2f}")
    return "| " + " | ".join(cells) + " |"


def main(paths):
    if not paths:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    reports = [medians(p) for p in paths]
    for proto, latency in (("h1", "p99 ms"), ("h2", "mean ms")):
        print("HTTP/1.1 keep-alive" if proto == "h1" else "h2c with prior knowledge")
        print()
        print(f"| run | CPU µs/req NGINX · HAProxy · veer | CPU ratio | req/s NGINX · HAProxy · veer "
              f"| req/s ratio | {latency} NGINX · HAProxy · veer | {latency.split()[0]} ratio |")
        print("|---|---|---|---|---|---|---|")
        for run, figures in enumerate(reports, 1):
            print(row(run, figures[proto]))
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
