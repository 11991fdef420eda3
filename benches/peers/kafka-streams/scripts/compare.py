#!/usr/bin/env python3
"""Compares the rollup topic (ConsoleConsumer output, `key<TAB>json` lines,
newest last) with expected.py's output: for every stream, the newest rollup
must carry exactly the expected figures (ratios to 1e-9). Exit 0 if all match.

usage: compare.py expected.ndjson rollups.tsv
"""
import json
import sys


def main():
    expected = {}
    for line in open(sys.argv[1]):
        row = json.loads(line)
        expected[row["stream_id"]] = row
    latest = {}
    for line in open(sys.argv[2]):
        line = line.rstrip("\n")
        if not line:
            continue
        key, value = line.split("\t", 1)
        latest[key] = json.loads(value)
    bad = 0
    if set(latest) != set(expected):
        print(f"streams differ: only expected {sorted(set(expected) - set(latest))[:5]}, "
              f"only in topic {sorted(set(latest) - set(expected))[:5]}")
        bad += 1
    for s, exp in expected.items():
        got = latest.get(s)
        if got is None:
            continue
        for k, want in exp.items():
            have = got.get(k)
            if isinstance(want, float) or isinstance(have, float):
                ok = want is not None and have is not None and abs(want - have) <= 1e-9
            else:
                ok = want == have
            if not ok:
                bad += 1
                if bad <= 20:
                    print(f"{s}.{k}: expected {want!r}, topic has {have!r}")
    n = len(expected)
    print(f"compare: {n} streams, {len(exp)} fields each, {bad} mismatches")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
