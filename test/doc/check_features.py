#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-3-Clause
"""doc/features/ipoib.ini against DPDK's default.ini (only keys DPDK knows,
values Y or P) and against doc/features.md (every row DPDK knows has the
same value in both; blank = absent from the .ini). TAP output.

usage: check_features.py DEFAULT_INI IPOIB_INI FEATURES_MD
"""
import re
import sys


def ini(path):
    out, section = {}, None
    for line in open(path):
        line = line.split(";")[0].strip()
        if not line:
            continue
        m = re.match(r"\[(.+)\]$", line)
        if m:
            section = m.group(1)
            continue
        key, _, value = line.partition("=")
        if section == "Features":
            out[key.strip()] = value.strip()
    return out


known = ini(sys.argv[1])
ours = ini(sys.argv[2])
rows = {}
for line in open(sys.argv[3]):
    cells = [c.strip() for c in line.strip().strip("|").split("|")]
    if len(cells) >= 2 and cells[0] not in ("feature", "---") and cells[1] in ("Y", "P", ""):
        rows[cells[0]] = cells[1]

checks = []
unknown = sorted(k for k in ours if k not in known)
checks.append((not unknown, "every key of ipoib.ini is one DPDK's default.ini knows", unknown))
bad = sorted(k for k, v in ours.items() if v not in ("Y", "P"))
checks.append((not bad, "every value is Y or P", bad))
differ = sorted(k for k in known if rows.get(k, "") != ours.get(k, ""))
checks.append((not differ, "features.md and ipoib.ini agree on every feature DPDK knows",
               [(k, rows.get(k, ""), ours.get(k, "")) for k in differ]))
checks.append((len(ours) >= 10, "ipoib.ini is not empty", len(ours)))
print(f"1..{len(checks)}")
for i, (ok, name, detail) in enumerate(checks, 1):
    print(f"{'ok' if ok else 'not ok'} {i} - {name}")
    if not ok:
        print(f"#   {detail}")
sys.exit(0 if all(c[0] for c in checks) else 1)
