#!/usr/bin/env python3
"""Atomic read-modify-write instructions per request, from two callgrind
profiles of the same binary (N and 5N requests) taken with
--dump-instr=yes --compress-pos=no --compress-strings=no: (A(5N) - A(N)) / 4N, where A counts
executions of `lock`-prefixed instructions and `xchg` with a memory operand
(implicitly locked) in every object the profile names (wasp, libc...).

An instruction count weighs such an instruction like any other, but on this
machine's Xeon one costs ~5 ns when uncontended (a dependent chain: 4.9 ns
against 0.55 for an add): reference counts, mutexes, waker registrations and
metrics add up. bench/instr.sh runs this with ATOMICS=1.

usage: atomics.py PROFILE_N PROFILE_5N N [TOP]
"""
import collections
import re
import subprocess
import sys


def locked(obj):
    """Addresses of locked instructions in an object file, with their text."""
    out = subprocess.run(["objdump", "-d", "--no-show-raw-insn", obj], capture_output=True, text=True).stdout
    found = {}
    for line in out.splitlines():
        m = re.match(r"\s*([0-9a-f]+):\s+(.*)", line)
        if m and (m.group(2).startswith("lock") or (m.group(2).startswith("xchg") and "(" in m.group(2))):
            found[int(m.group(1), 16)] = m.group(2).split("#")[0].strip()
    return found


def count(path, objects):
    """Executions of locked instructions by (object, function, instruction)."""
    per = collections.Counter()
    ob = fn = None
    call_cost_next = False
    for line in open(path):
        if line.startswith("ob="):
            ob = line[3:].strip()
        elif line.startswith("fn="):
            fn = line[3:].strip()
        elif line.startswith("calls="):
            call_cost_next = True  # the next cost line is the call's inclusive cost
        elif line.startswith("0x"):
            if call_cost_next:
                call_cost_next = False
                continue
            fields = line.split()
            if ob not in objects:
                objects[ob] = locked(ob) if ob.startswith("/") else {}
            text = objects[ob].get(int(fields[0], 16))
            if text:
                per[(ob.rsplit("/", 1)[-1], fn, text)] += int(fields[-1])
    return per


def main():
    small_path, large_path, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    top = int(sys.argv[4]) if len(sys.argv) > 4 else 0
    objects = {}
    small, large = count(small_path, objects), count(large_path, objects)
    per_request = {k: (large[k] - small.get(k, 0)) / (4 * n) for k in large}
    print(f"{sum(per_request.values()):.1f} atomic read-modify-writes/request")
    by_function = collections.Counter()
    for (ob, fn, _), v in per_request.items():
        by_function[(ob, fn)] += v
    for (ob, fn), v in by_function.most_common(top):
        if v >= 0.1:
            print(f"  {v:6.2f}  {ob}  {fn[:150]}")


if __name__ == "__main__":
    main()
