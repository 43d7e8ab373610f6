# SPDX-License-Identifier: BSD-3-Clause
"""Minimal TAP producer for the integration scripts (meson counts each line)."""
import sys
import traceback


class Tap:
    def __init__(self):
        self.count = 0
        self.failed = 0

    def ok(self, cond, name, detail=""):
        self.count += 1
        if cond:
            print(f"ok {self.count} - {name}", flush=True)
        else:
            self.failed += 1
            print(f"not ok {self.count} - {name}", flush=True)
            for line in str(detail).splitlines():
                print(f"#   {line}", flush=True)
        return bool(cond)

    def eq(self, got, want, name):
        return self.ok(got == want, name, f"got:  {got!r}\nwant: {want!r}")

    def note(self, text):
        for line in str(text).splitlines():
            print(f"# {line}", flush=True)

    def run(self, name, fn, *args):
        """Run a group of checks; an exception is one failed check, not a crash."""
        try:
            fn(*args)
        except Exception:  # noqa: BLE001 - reported as a failure
            self.ok(False, f"{name}: raised", traceback.format_exc())

    def finish(self):
        print(f"1..{self.count}", flush=True)
        sys.exit(1 if self.failed else 0)
