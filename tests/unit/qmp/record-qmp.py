#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Record a real QMP conversation for test-qmp's replay test.

Usage: record-qmp.py [qemu-binary] > tests/data/qmp/<name>.txt

Output: one message a line, "S: " for what QEMU sent, "C: " for what the
client sent, in the order they crossed the wire."""
import json
import subprocess
import sys

qemu = sys.argv[1] if len(sys.argv) > 1 else "qemu-system-x86_64"
commands = [
    {"execute": "qmp_capabilities"},
    {"execute": "query-status"},
    {"execute": "query-version"},
    {"execute": "query-kvm"},
    {"execute": "query-no-such-command"},
    {"execute": "quit"},
]

p = subprocess.Popen([qemu, "-machine", "none", "-display", "none", "-nodefaults",
                      "-qmp", "stdio"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)


def recv():
    line = p.stdout.readline()
    if not line:
        return None
    text = line.decode().rstrip("\r\n")
    print("S: " + text)
    return json.loads(text)


recv()  # greeting
for i, cmd in enumerate(commands, 1):
    cmd["id"] = "rec-%d" % i
    text = json.dumps(cmd, separators=(",", ":"))
    print("C: " + text)
    p.stdin.write((text + "\n").encode())
    p.stdin.flush()
    while True:
        msg = recv()
        if msg is None or msg.get("id") == cmd["id"]:
            break
while recv() is not None:  # trailing events (SHUTDOWN) until EOF
    pass
p.wait(timeout=10)
