#!/usr/bin/env python3
"""Summarises bench/kube/run.sh: wall time per rolling update, and the kube-apiserver's audit
log entries (one per completed request) inside each run's window, by who sent them.

usage: report.py runs.csv audit.log
"""
import csv
import json
import statistics
import sys
from collections import Counter
from datetime import datetime


def ts(value):
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def client(event):
    user = event.get("user", {}).get("username", "?")
    agent = event.get("userAgent", "?").split("/")[0]
    if user == "slipway-e2e":
        return "slipway"
    if agent == "kubectl":
        return "kubectl"
    return agent  # kube-controller-manager, kube-scheduler, kwok, kube-apiserver, ...


def what(event):
    ref = event.get("objectRef") or {}
    resource = ref.get("resource", event.get("requestURI", "?").split("?")[0])
    if ref.get("subresource"):
        resource += "/" + ref["subresource"]
    return f'{event.get("verb")} {resource}'


def main():
    runs = list(csv.DictReader(open(sys.argv[1])))
    events = []
    for line in open(sys.argv[2]):
        try:
            e = json.loads(line)
        except ValueError:
            continue
        events.append((ts(e["requestReceivedTimestamp"]), e))

    rows = []
    for r in runs:
        start, end = float(r["start"]), float(r["end"])
        inside = [e for t, e in events if start <= t <= end]
        by = Counter(client(e) for e in inside)
        rows.append((r, by, inside))

    print("| tool | run | seconds | load (1 min) | requests by the tool | by controllers, scheduler, kwok |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for r, by, _ in rows:
        own = by[r["tool"]]
        cluster = sum(by[c] for c in ("kube-controller-manager", "kube-scheduler", "kwok"))
        print(f'| {r["tool"]} | {r["run"]} | {float(r["seconds"]):.2f} | {r["load1"]} | {own} | {cluster} |')
    print()
    secs = {t: [float(r["seconds"]) for r, _, _ in rows if r["tool"] == t] for t in ("slipway", "kubectl")}
    reqs = {t: [by[t] for r, by, _ in rows if r["tool"] == t] for t in ("slipway", "kubectl")}
    print("| tool | runs | median s | mean s | min–max s | API requests per update (median; min–max) |")
    print("| --- | ---: | ---: | ---: | --- | --- |")
    for t in ("slipway", "kubectl"):
        s, q = secs[t], reqs[t]
        print(f"| {t} | {len(s)} | {statistics.median(s):.2f} | {statistics.mean(s):.2f} | "
              f"{min(s):.2f}–{max(s):.2f} | {statistics.median(q):g}; {min(q)}–{max(q)} |")
    added = statistics.median(secs["slipway"]) - statistics.median(secs["kubectl"])
    print()
    print(f"Slipway's added time (median − median): **{added:.2f} s**")
    print()
    for t in ("slipway", "kubectl"):
        sample = next((inside for r, _, inside in rows if r["tool"] == t), [])
        calls = Counter(what(e) for e in sample if client(e) == t)
        print(f"{t}, first run, requests by verb and resource: "
              + ", ".join(f"{k} ×{n}" for k, n in sorted(calls.items())))
        print()


if __name__ == "__main__":
    main()
