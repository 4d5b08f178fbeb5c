#!/usr/bin/python3
"""Checks that docs/openapi.yaml describes the routes hsd serves, no more and
no fewer.

1. Statically: the routes in daemon/api.c (the string literals compared with
   `path` in api_handle, the action table and the `action` literals in
   handle_vm, the methods compared with `m` and listed by
   method_not_allowed), with the storage routes api.c hands to
   daemon/api-storage.c (api_templates, and api_snapshots through
   handle_snapshots) and the PCI passthrough routes it hands to
   daemon/hostdev.c (api_pci, api_vm_hostdevs), and the networking routes
   it hands to daemon/network.c (a function of its own for /v1/networks,
   /v1/sriov and /v1/vms/{name}/nics, read the way hostdev.c is: its first
   `if (!x)` or `if (!x[0])` serves the collection, the rest one item),
   against the paths and methods of openapi.yaml. Without daemon/network.c
   its routes are not served: a described one fails as not served.
2. Live: a real hsd (temp state and run dirs, a fake /proc and /sys so the
   host's KSM is not touched, --overcommit so low that no QEMU is ever
   started) gets a request for every described path and method, with a VM
   defined first so that {name} exists: the answer must be one the
   description lists for that operation (never an undescribed 404 or 405),
   with the content type it lists, and a JSON answer must match its schema
   with no undescribed members. Every other method on every described path
   must be answered 405, listing the methods the description has, and a few
   undescribed paths 404. VM specs at and past each limit must be accepted
   or refused by hsd as the VmSpec schema says, and PATCH bodies as the
   VmPatch schema says (on a VM that is not running: the change is stored,
   and the VM answered shows it). Where qemu-img is installed,
   templates, managed disks and snapshots are exercised for real (made,
   listed, rolled back, deleted) and every answer checked the same way.
   The fake /sys has no PCI devices and no IOMMU: /v1/pci lists none, and
   a host device is attached to and detached from the stopped VM's spec
   only.

Python standard library only: openapi.yaml is read by the small YAML parser
below (the subset the file uses); where PyYAML is installed, the parser's
result is compared with PyYAML's as a check of the parser.

Usage: check-routes.py [--static-only] [--hsd PATH]
Environment: HS_BUILD_DIR (default ROOT/build) gives daemon/hsd.
Prints one line per check and ends with "openapi: N passed, M failed".
"""
import base64
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT / "docs" / "openapi.yaml"
API_C = ROOT / "daemon" / "api.c"
API_STORAGE_C = ROOT / "daemon" / "api-storage.c"
HOSTDEV_C = ROOT / "daemon" / "hostdev.c"
NETWORK_C = ROOT / "daemon" / "network.c"
METHODS = ["get", "put", "post", "delete", "options", "head", "patch", "trace"]
PROBE_METHODS = ["GET", "PUT", "POST", "DELETE", "PATCH", "OPTIONS", "HEAD"]
VM = "openapi-check"
SNAPSHOT = "openapi-check-s"
PCI_ADDR = "0000:00:03.0"  # no such device in the fake /sys
PF = "hs-no-pf0"  # no such interface in the fake /sys
NIC_ID = "net0"
FAKE_BRIDGE = "hs-test-br0"  # a bridge in the fake /sys only

passed = failed = 0


def check(ok, what, detail=""):
    global passed, failed
    if ok:
        passed += 1
        print(f"ok    {what}")
    else:
        failed += 1
        print(f"FAIL  {what}" + (f": {detail}" if detail else ""))
    return ok


# --------------------------------------------------------------------------
# A small YAML parser: block mappings and sequences, plain and quoted
# scalars, block scalars (| > with - chomping), flow sequences of scalars and
# the empty flow mapping. Enough for openapi.yaml; anything else is an error.


class YamlError(Exception):
    pass


def _scalar(text, lineno):
    t = text.strip()
    if t.startswith("'"):
        if not t.endswith("'") or len(t) < 2:
            raise YamlError(f"line {lineno}: unterminated quoted scalar")
        return t[1:-1].replace("''", "'")
    if t.startswith('"'):
        try:
            return json.loads(t)
        except ValueError as e:
            raise YamlError(f"line {lineno}: double-quoted scalar: {e}")
    t = re.sub(r"\s+#.*$", "", t)
    if t in ("null", "~", ""):
        return None
    if t in ("true", "false"):
        return t == "true"
    if t.lower() in ("yes", "no", "on", "off", "y", "n"):
        # YAML 1.1 readers (PyYAML) take these for booleans, YAML 1.2 ones
        # (Redocly) for strings: quote them
        raise YamlError(f"line {lineno}: ambiguous scalar {t!r}: quote it")
    if re.fullmatch(r"[-+]?[0-9]+", t):
        return int(t)
    if re.fullmatch(r"[-+]?([0-9]+\.[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?", t):
        return float(t)
    if t[0] in "[{&*!|>%@`" or t.startswith("- "):
        raise YamlError(f"line {lineno}: unsupported YAML: {t!r}")
    return t


def _flow(text, lineno):
    t = text.strip()
    if t == "{}":
        return {}
    if t == "[]":
        return []
    if t.startswith("[") and t.endswith("]"):
        inner = t[1:-1]
        if "[" in inner or "{" in inner:
            raise YamlError(f"line {lineno}: nested flow collections are not supported")
        items, cur, q = [], "", None
        for ch in inner:
            if q:
                cur += ch
                if ch == q:
                    q = None
            elif ch in "'\"":
                q = ch
                cur += ch
            elif ch == ",":
                items.append(cur)
                cur = ""
            else:
                cur += ch
        if cur.strip():
            items.append(cur)
        return [_scalar(i, lineno) for i in items]
    raise YamlError(f"line {lineno}: unsupported flow collection: {t!r}")


def _split_key(text, lineno):
    """'key: value' -> (key, value-text); value-text is None for 'key:'."""
    if text[0] in "'\"":
        q = text[0]
        i = 1
        while True:
            i = text.find(q, i)
            if i < 0:
                raise YamlError(f"line {lineno}: unterminated quoted key")
            if q == "'" and text[i + 1:i + 2] == "'":
                i += 2
                continue
            break
        key = _scalar(text[:i + 1], lineno)
        rest = text[i + 1:]
        if not rest.startswith(":"):
            raise YamlError(f"line {lineno}: expected ':' after the key")
        rest = rest[1:]
    else:
        m = re.match(r"(.*?):(\s|$)", text)
        if not m:
            return None
        key, rest = m.group(1), text[m.end(1) + 1:]
    rest = rest.strip()
    if rest.startswith("#"):
        rest = ""
    return key, (rest if rest else None)


class _Lines:
    def __init__(self, text):
        self.raw = text.split("\n")
        self.items = []  # (indent, text, lineno) of significant lines
        for n, line in enumerate(self.raw, 1):
            if "\t" in line[: len(line) - len(line.lstrip())]:
                raise YamlError(f"line {n}: tab in indentation")
            s = line.strip()
            if not s or s.startswith("#"):
                continue
            self.items.append((len(line) - len(line.lstrip(" ")), line.strip(), n))

    def block_scalar(self, style, parent_indent, lineno):
        """The block scalar that starts after raw line `lineno`."""
        out, n = [], lineno  # raw index of the next line is lineno
        while n < len(self.raw):
            line = self.raw[n]
            if line.strip() and len(line) - len(line.lstrip(" ")) <= parent_indent:
                break
            out.append(line)
            n += 1
        while out and not out[-1].strip():
            out.pop()
        ind = min((len(l) - len(l.lstrip(" ")) for l in out if l.strip()), default=0)
        lines = [l[ind:] if l.strip() else "" for l in out]
        if style[0] == "|":
            text = "\n".join(lines)
        else:  # folded: lines joined by spaces, blank lines are newlines
            text, prev_blank = "", True
            for l in lines:
                if not l:
                    text += "\n"
                    prev_blank = True
                elif l.startswith(" "):
                    text += ("" if prev_blank else "\n") + l + "\n"
                    prev_blank = True
                else:
                    text += ("" if prev_blank else " ") + l
                    prev_blank = False
        if style.endswith("-"):
            return text.rstrip("\n")
        return text + "\n" if text else ""


def yaml_load(text):
    L = _Lines(text)
    items = L.items
    pos = 0

    def value(rest, indent, lineno):
        """The value after 'key:' (or '- ') on a line at `indent`."""
        nonlocal pos
        if rest is None:
            if pos < len(items) and items[pos][0] > indent:
                return block(items[pos][0])
            if pos < len(items) and items[pos][0] == indent and items[pos][1].startswith("- "):
                return block(indent)  # a sequence may sit at its key's indent
            return None
        if rest in ("|", "|-", ">", ">-"):
            v = L.block_scalar(rest, indent, lineno)
            # the scalar's lines are those indented deeper than its key
            while pos < len(items) and items[pos][0] > indent:
                pos += 1
            return v
        if rest[0] in "[{":
            return _flow(rest, lineno)
        return _scalar(rest, lineno)

    def block(indent):
        nonlocal pos
        ind, text, n = items[pos]
        if text.startswith("- ") or text == "-":
            seq = []
            while pos < len(items) and items[pos][0] == indent and \
                    (items[pos][1].startswith("- ") or items[pos][1] == "-"):
                ind, text, n = items[pos]
                body = text[1:].lstrip()
                if body[:1] in ("'", '"'):
                    is_map = re.match(r"(['\"]).*?\1\s*:(\s|$)", body) is not None
                else:
                    is_map = body[:1] not in ("", "[", "{") and _split_key(body, n) is not None
                if is_map:  # "- key: value": a mapping whose keys sit under "key"
                    items[pos] = (indent + len(text) - len(body), body, n)
                    seq.append(block(items[pos][0]))
                else:
                    pos += 1
                    seq.append(value(body or None, indent, n))
            return seq
        mapping = {}
        while pos < len(items) and items[pos][0] == indent:
            ind, text, n = items[pos]
            if text.startswith("- "):
                raise YamlError(f"line {n}: sequence item inside a mapping")
            kv = _split_key(text, n)
            if not kv:
                raise YamlError(f"line {n}: expected 'key: value', got {text!r}")
            key, rest = kv
            if key in mapping:
                raise YamlError(f"line {n}: duplicate key {key!r}")
            pos += 1
            mapping[key] = value(rest, indent, n)
        if pos < len(items) and items[pos][0] > indent:
            raise YamlError(f"line {items[pos][2]}: unexpected indentation")
        return mapping

    if not items:
        return None
    doc = block(items[0][0])
    if pos != len(items):
        raise YamlError(f"line {items[pos][2]}: unexpected content")
    return doc


# --------------------------------------------------------------------------
# The description


def load_spec():
    text = SPEC.read_text()
    doc = yaml_load(text)
    try:
        import yaml  # optional: only to check the small parser above
    except ImportError:
        print("note  PyYAML not installed: the small YAML parser is not cross-checked")
    else:
        check(yaml.safe_load(text) == doc, "openapi.yaml: the small YAML parser agrees with PyYAML")
    return doc


def resolve(doc, node):
    seen = 0
    while isinstance(node, dict) and "$ref" in node:
        ref = node["$ref"]
        if not ref.startswith("#/"):
            raise YamlError(f"external $ref not supported: {ref}")
        node = doc
        for part in ref[2:].split("/"):
            node = node[part.replace("~1", "/").replace("~0", "~")]
        seen += 1
        if seen > 20:
            raise YamlError(f"$ref loop at {ref}")
    return node


def spec_operations(doc):
    """{(path, METHOD): {"responses": {status: {media type: schema}},
    "request": JSON request body schema or None}} ('default' included)."""
    ops = {}
    for path, item in (doc.get("paths") or {}).items():
        item = resolve(doc, item)
        for method in METHODS:
            if method not in item:
                continue
            op = item[method]
            responses = {}
            for code, resp in (op.get("responses") or {}).items():
                resp = resolve(doc, resp)
                responses[str(code)] = {media: (mt or {}).get("schema")
                                        for media, mt in (resp.get("content") or {}).items()}
            body = resolve(doc, op.get("requestBody") or {})
            request = ((body.get("content") or {}).get("application/json") or {}).get("schema")
            ops[(path, method.upper())] = {"responses": responses, "request": request}
    return ops


def schema_errors(doc, schema, value, where="$", strict=False, _extras=True):
    """What is wrong with `value` under an OpenAPI 3.0 schema (the keywords
    openapi.yaml uses). strict: an object whose schema does not say
    additionalProperties may not have members the schema does not name
    (undescribed fields in hsd's answers)."""
    schema = resolve(doc, schema or {})
    errs = []
    if value is None:
        return [] if schema.get("nullable") else ([f"{where}: null"] if schema.get("type") else [])
    # The subschemas of allOf, anyOf and oneOf constrain members the schema
    # names itself (DiskLimits: "not bps_total with bps_read"); whether a
    # member is described at all is the schema's own check, below.
    for sub in schema.get("allOf", []):
        errs += schema_errors(doc, sub, value, where, strict, _extras=False)
    if "anyOf" in schema and not any(not schema_errors(doc, sub, value, where, strict, False)
                                     for sub in schema["anyOf"]):
        errs.append(f"{where}: matches none of anyOf")
    if "oneOf" in schema:
        n = sum(not schema_errors(doc, sub, value, where, strict, False)
                for sub in schema["oneOf"])
        if n != 1:
            errs.append(f"{where}: matches {n} of oneOf, not 1")
    t = schema.get("type")
    kinds = {"object": dict, "array": list, "string": str, "boolean": bool,
             "integer": int, "number": (int, float)}
    if t and (not isinstance(value, kinds[t]) or (isinstance(value, bool) and t != "boolean")):
        return errs + [f"{where}: {type(value).__name__}, not {t}"]
    if "enum" in schema and value not in schema["enum"]:
        errs.append(f"{where}: {value!r} not in {schema['enum']}")
    if isinstance(value, str):
        if "pattern" in schema and not re.search(schema["pattern"], value):
            errs.append(f"{where}: {value!r} does not match {schema['pattern']}")
        if len(value) > schema.get("maxLength", len(value)) or \
                len(value) < schema.get("minLength", 0):
            errs.append(f"{where}: length {len(value)} out of range")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        lo, hi = schema.get("minimum"), schema.get("maximum")
        if lo is not None and (value < lo or (schema.get("exclusiveMinimum") and value == lo)):
            errs.append(f"{where}: {value} below the minimum {lo}")
        if hi is not None and (value > hi or (schema.get("exclusiveMaximum") and value == hi)):
            errs.append(f"{where}: {value} above the maximum {hi}")
    if isinstance(value, list):
        if len(value) > schema.get("maxItems", len(value)) or \
                len(value) < schema.get("minItems", 0):
            errs.append(f"{where}: {len(value)} items, out of range")
        for i, v in enumerate(value):
            errs += schema_errors(doc, schema.get("items"), v, f"{where}[{i}]", strict)
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        for k in schema.get("required", []):
            if k not in value:
                errs.append(f"{where}: '{k}' missing")
        for k, v in value.items():
            if k in props:
                errs += schema_errors(doc, props[k], v, f"{where}.{k}", strict)
        extra = schema.get("additionalProperties")
        named = set(props)
        for sub in schema.get("allOf", []):
            named |= set((resolve(doc, sub).get("properties") or {}))
        others = [k for k in value if k not in named]
        if isinstance(extra, dict):
            for k in others:
                errs += schema_errors(doc, extra, value[k], f"{where}.{k}", strict)
        elif extra is False or (extra is None and strict and _extras and
                                ("properties" in schema or "allOf" in schema)):
            errs += [f"{where}.{k}: not described" for k in others]
    return errs


def norm(path):
    return re.sub(r"\{[^}]*\}", "{}", path)


# --------------------------------------------------------------------------
# daemon/api.c


def strip_comments(src):
    """Comments become spaces; string and char literals are kept."""
    out, i, n = [], 0, len(src)
    while i < n:
        c = src[i]
        if c in "\"'":
            j = i + 1
            while j < n and src[j] != c:
                j += 2 if src[j] == "\\" else 1
            out.append(src[i:j + 1])
            i = j + 1
        elif src.startswith("/*", i):
            j = src.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append(re.sub(r"[^\n]", " ", src[i:j]))
            i = j
        elif src.startswith("//", i):
            j = src.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i))
            i = j
        else:
            out.append(c)
            i += 1
    return "".join(out)


def matching(src, i, open_ch, close_ch):
    """Index just past the bracket that closes the one at src[i]."""
    depth, n = 0, len(src)
    while i < n:
        c = src[i]
        if c in "\"'":
            j = i + 1
            while j < n and src[j] != c:
                j += 2 if src[j] == "\\" else 1
            i = j + 1
            continue
        if c == open_ch:
            depth += 1
        elif c == close_ch:
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    raise ValueError(f"unbalanced {open_ch}{close_ch}")


def function_body(src, name, where=API_C):
    m = re.search(r"^[\w \t\*]*\b" + re.escape(name) + r"\s*\([^;{]*\)\s*\{", src, re.M)
    if not m:
        raise ValueError(f"function {name} not found in {where}")
    start = m.end() - 1
    return src[start + 1:matching(src, start, "{", "}") - 1]


def top_level_ifs(body):
    """[(condition, block)] for the `if`s at the top level of a body
    (`else if` included)."""
    return [(c, b) for c, b, _ in top_level_ifs_at(body)]


def top_level_ifs_at(body):
    """[(condition, block, end)]: top_level_ifs with the index just past
    each block."""
    out, i, n, depth = [], 0, len(body), 0
    while i < n:
        c = body[i]
        if c in "\"'":
            j = i + 1
            while j < n and body[j] != c:
                j += 2 if body[j] == "\\" else 1
            i = j + 1
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
        elif depth == 0 and re.match(r"\bif\s*\(", body[i:]) and (i == 0 or not body[i - 1].isalnum()
                                                                   and body[i - 1] != "_"):
            p = body.index("(", i)
            e = matching(body, p, "(", ")")
            cond = body[p + 1:e - 1]
            k = e
            while k < n and body[k].isspace():
                k += 1
            if k < n and body[k] == "{":
                end = matching(body, k, "{", "}")
                out.append((cond, body[k + 1:end - 1], end))
            else:
                end = body.index(";", k) + 1
                out.append((cond, body[k:end], end))
            i = end
            continue
        i += 1
    return out


def methods_in(code):
    """(methods compared with m, methods listed by method_not_allowed)."""
    compared = set(re.findall(r"strcmp\(\s*m\s*,\s*\"([A-Z]+)\"\s*\)", code))
    listed = set()
    for lst in re.findall(r"method_not_allowed\(\s*req\s*,\s*\"([^\"]*)\"\s*\)", code):
        listed |= {x.strip() for x in lst.split(",") if x.strip()}
    return compared, listed


def split_on(body, cond_re, where="api-storage.c"):
    """(block of the first top-level `if` whose condition matches cond_re,
    the code after it)."""
    for cond, block, end in top_level_ifs_at(body):
        if re.fullmatch(cond_re, cond):
            return block, body[end:]
    raise ValueError(f"{where}: no top-level if ({cond_re})")


def storage_routes():
    """The code that serves each storage route in daemon/api-storage.c:
    {"templates": ..., "template": ..., "snapshots": ..., "snapshot": ...,
    "actions": {name: code}}."""
    src = strip_comments(API_STORAGE_C.read_text())
    out = {}
    out["templates"], out["template"] = split_on(function_body(src, "api_templates"),
                                                 r"\s*!\s*name\s*")
    snaps = function_body(src, "api_snapshots")
    out["snapshots"], rest = split_on(snaps, r"\s*!\s*snap\s*")
    names = []
    for cond, _, _ in top_level_ifs_at(rest):
        if re.search(r"strcmp\(\s*action\s*,", cond):
            names += re.findall(r"strcmp\(\s*action\s*,\s*\"([^\"]*)\"\s*\)", cond)
    if not names:
        raise ValueError("api-storage.c: api_snapshots' actions not found")
    action_code, out["snapshot"] = split_on(rest, r"\s*action\s*")
    out["actions"] = {a: action_code for a in names}
    return out


def hostdev_routes():
    """The code that serves each PCI passthrough route in daemon/hostdev.c:
    {"pci": ..., "pci_action": (suffix, code), "hostdevs": ..., "hostdev": ...}.
    api_pci: `if (!rest[0])` is /v1/pci, the rest /v1/pci/{address} and the
    suffix compared with `slash`; api_vm_hostdevs: `if (!addr)` is the
    collection, the rest (its else) one device."""
    src = strip_comments(HOSTDEV_C.read_text())
    out = {}
    pci = function_body(src, "api_pci", HOSTDEV_C)
    out["pci"], rest = split_on(pci, r"\s*!\s*rest\[0\]\s*", "hostdev.c")
    suffix = re.findall(r"strcmp\(\s*slash\s*,\s*\"(/[^\"]*)\"\s*\)", rest)
    if len(suffix) != 1:
        raise ValueError(f"hostdev.c: api_pci's action suffix not found ({suffix})")
    out["pci_action"] = (suffix[0], rest)
    hd = function_body(src, "api_vm_hostdevs", HOSTDEV_C)
    out["hostdevs"], out["hostdev"] = split_on(hd, r"\s*!\s*addr\s*", "hostdev.c")
    return out


def network_routes(func):
    """The code of a route function of daemon/network.c, as (collection,
    item): its first top-level `if (!x)` or `if (!x[0])` serves the
    collection, the code after it one item. None when network.c does not
    exist or has no such function."""
    if not NETWORK_C.exists():
        return None
    src = strip_comments(NETWORK_C.read_text())
    try:
        body = function_body(src, func, NETWORK_C)
    except ValueError:
        return None
    return split_on(body, r"\s*!\s*\w+(\[0\])?\s*", "network.c")


def network_function(block):
    """The daemon/network.c route function a block of api.c calls
    (api_networks(...)), or None."""
    for name in re.findall(r"\b(api_\w+)\(", block):
        if name not in ("api_pci", "api_templates", "api_vm_hostdevs") and network_routes(name):
            return name
    return None


def api_routes():
    """({(path, METHOD)}, [notes]); path parameters as {name} (and
    {snapshot})."""
    src = strip_comments(API_C.read_text())
    routes, notes, seen_literals = {}, [], set()
    storage = None
    hostdev = None

    def add(path, code, where):
        compared, listed = methods_in(code)
        check(bool(compared or listed), f"api.c: methods of {path} found")
        check(not listed or compared == listed,
              f"api.c: {path}: the 405 message lists the methods the handler takes",
              f"compared with m: {sorted(compared)}, method_not_allowed: {sorted(listed)}")
        routes.setdefault(path, set()).update(compared | listed)

    handle = function_body(src, "api_handle")
    prefix_blocks = []
    for cond, block in top_level_ifs(handle):
        exact = re.findall(r"strcmp\(\s*path\s*,\s*\"([^\"]*)\"\s*\)", cond)
        prefix = re.findall(r"hs_str_has_prefix\(\s*path\s*,\s*\"([^\"]*)\"\s*\)", cond)
        seen_literals.update(exact + prefix)
        if exact:
            canon = [p.rstrip("/") or "/" for p in exact]
            main = canon[0]
            for p, c in zip(exact, canon):
                if c != main:
                    raise ValueError(f"api.c: one branch serves two paths: {exact}")
                if p != main:
                    notes.append(f"{p} is served as an alias of {main}")
            if re.search(r"\bapi_templates\(\s*h\s*,\s*req\s*,\s*NULL\s*\)", block):
                storage = storage or storage_routes()
                add(main, storage["templates"], "api_templates")
            elif re.search(r"\bapi_pci\(", block):
                # /v1/pci and what is under it ("/v1/pci/" prefix): hostdev.c
                hostdev = hostdev or hostdev_routes()
                add(main, hostdev["pci"], "api_pci")
                suffix, code = hostdev["pci_action"]
                add(main + "/{address}" + suffix, code, "api_pci")
            elif network_function(block):
                # /v1/networks, /v1/sriov and what is under each: network.c
                fn = network_function(block)
                coll_code, item_code = network_routes(fn)
                add(main, coll_code, fn)
                add(main + "/{item}", item_code, fn)
            else:
                add(main, block, "api_handle")
        elif prefix:
            prefix_blocks.append((prefix[0], block))
    for prefix, block in prefix_blocks:
        if re.search(r"\bapi_templates\(", block):
            storage = storage or storage_routes()
            add(prefix + "{name}", storage["template"], "api_templates")
            continue
        if "handle_vm(" not in block:
            # a resource of its own under the prefix, methods checked inline
            add(prefix + "{name}", block, "api_handle")
            continue
        vm = function_body(src, "handle_vm")
        base = prefix + "{name}"
        snap = re.search(r"hs_str_has_prefix\(\s*slash\s*,\s*\"(/[^\"]*)\"\s*\)\s*\)\s*\{[^}]*"
                         r"handle_snapshots\(", block)
        if snap:
            if not re.search(r"\bapi_snapshots\(", function_body(src, "handle_snapshots")):
                raise ValueError("api.c: handle_snapshots does not call api_snapshots")
            storage = storage or storage_routes()
            coll = base + snap.group(1)
            add(coll, storage["snapshots"], "api_snapshots")
            add(coll + "/{snapshot}", storage["snapshot"], "api_snapshots")
            for a, code in storage["actions"].items():
                add(f"{coll}/{{snapshot}}/{a}", code, "api_snapshots")
        hd = re.search(r"strcmp\(\s*slash\s*,\s*\"(/[^\"]*)\"\s*\)[^{]*\{[^}]*"
                       r"\bapi_vm_hostdevs\(", block)
        if hd:
            hostdev = hostdev or hostdev_routes()
            coll = base + hd.group(1)
            add(coll, hostdev["hostdevs"], "api_vm_hostdevs")
            add(coll + "/{address}", hostdev["hostdev"], "api_vm_hostdevs")
        # a VM's sub-resources served by network.c (/nics)
        for sub, fn in re.findall(r"strcmp\(\s*slash\s*,\s*\"(/[^\"]*)\"\s*\)[^{]*\{[^}]*"
                                  r"\b(api_vm_\w+)\(", block):
            if fn == "api_vm_hostdevs" or not network_routes(fn):
                continue
            coll_code, item_code = network_routes(fn)
            add(base + sub, coll_code, fn)
            add(base + sub + "/{item}", item_code, fn)
        table = re.search(r"actions\[\]\s*=\s*\{([^}]*)\}", vm)
        if not table:
            raise ValueError("api.c: handle_vm's action table not found")
        actions = re.findall(r"\"([^\"]*)\"", table.group(1))
        after_table = vm[table.end():]
        table_methods = set()
        # routes of their own come before the table; the `action` literals
        # after it dispatch the table's actions
        for cond, code in top_level_ifs(vm[:table.start()]):
            if re.fullmatch(r"\s*!\s*action\s*", cond):
                add(base, code, "handle_vm")
            elif re.search(r"strcmp\(\s*action\s*,", cond):
                for a in re.findall(r"strcmp\(\s*action\s*,\s*\"([^\"]*)\"\s*\)", cond):
                    add(f"{base}/{a}", code, "handle_vm")
        for cond, code in top_level_ifs(after_table):
            if re.search(r"\bm\b", cond) and "action" not in cond:
                table_methods |= set().union(*methods_in(cond + ";" + code))
        check(bool(table_methods), "api.c: methods of the action table found")
        for a in actions:
            routes.setdefault(f"{base}/{a}", set()).update(table_methods)
    # every path literal in api.c is accounted for
    for lit in re.findall(r"(?:strcmp|hs_str_has_prefix)\(\s*path\s*,\s*\"([^\"]*)\"", src):
        check(lit in seen_literals, f"api.c: path literal {lit!r} understood",
              "compared with path outside api_handle's top-level branches")
    return {(p, m) for p, ms in routes.items() for m in ms}, notes


# --------------------------------------------------------------------------
# A live hsd


class Conn(http.client.HTTPConnection):
    def __init__(self, sock_path, timeout=15):
        super().__init__("localhost", timeout=timeout)
        self.sock_path = sock_path

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self.sock_path)
        self.sock = s


def request(sock, method, path, body=None, headers=None, stream=False):
    """(status, headers, parsed JSON or text or first stream line)."""
    c = Conn(sock)
    try:
        h = dict(headers or {})
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            h["Content-Type"] = "application/json"
        c.request(method, path, body=data, headers=h)
        r = c.getresponse()
        hdrs = {k.lower(): v for k, v in r.getheaders()}
        if stream and r.status == 200:
            return r.status, hdrs, r.readline().decode(errors="replace")
        raw = b"" if method == "HEAD" or r.status == 101 else r.read()
        text = raw.decode(errors="replace")
        try:
            return r.status, hdrs, json.loads(text)
        except ValueError:
            return r.status, hdrs, text
    finally:
        c.close()


def error_code(payload):
    if isinstance(payload, dict) and isinstance(payload.get("error"), dict):
        return payload["error"].get("code")
    return None


def start_hsd(hsd_bin, base):
    state, run = base / "state", base / "run"
    # A fake /proc/meminfo and CPU list (as tests/integration/test_ksm.py
    # does): hsd reads these instead of the host's, and finds no KSM to tune.
    sysroot = base / "sysroot"
    (sysroot / "proc").mkdir(parents=True)
    (sysroot / "sys/devices/system/cpu").mkdir(parents=True)
    (sysroot / "sys/devices/system/cpu/online").write_text("0-1\n")
    # A bridge (without VLAN filtering) for network_cases: hsd looks for
    # sys/class/net/BR/bridge; nothing is made on the host.
    (sysroot / "sys/class/net" / FAKE_BRIDGE / "bridge").mkdir(parents=True)
    (sysroot / "sys/class/net" / FAKE_BRIDGE / "bridge/vlan_filtering").write_text("0\n")
    (sysroot / "proc/meminfo").write_text(
        "MemTotal:       8388608 kB\nMemFree:        4194304 kB\nMemAvailable:   4194304 kB\n")
    log = open(base / "hsd.log", "wb")
    # --overcommit 0.1 of a fake 8 GiB host: a start of the 1 GiB test VM is
    # refused by admission (409 overcommit), so the start route is exercised
    # with no QEMU ever run.
    args = [str(hsd_bin), "--state-dir", str(state), "--run-dir", str(run),
            "--sysfs-root", str(sysroot), "--overcommit", "0.1"]
    if os.geteuid() == 0:
        # No QEMU runs here: spare the system the hsd-qemu user that a root
        # hsd would otherwise create.
        args += ["--qemu-user", "root"]
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
    sock = str(run / "hsd.sock")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        try:
            if request(sock, "GET", "/v1")[0] == 200:
                return proc, sock, state
        except OSError:
            pass
        time.sleep(0.05)
    return proc, None, state


def stop_hsd(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


# Requests with more than no body, and the answers expected on a VM that is
# defined and never started. Keys are (path, METHOD) as the description has
# them; a described operation missing here is still requested, with no body.
PLAN = {
    ("/v1", "GET"): dict(expect={200}),
    ("/v1/host", "GET"): dict(expect={200}),
    ("/v1/vms", "GET"): dict(expect={200}),
    ("/v1/vms", "POST"): dict(expect={201}),  # sent first: it defines the VM
    ("/v1/vms/{name}", "GET"): dict(expect={200}),
    ("/v1/vms/{name}", "DELETE"): dict(expect={200}),  # sent last
    # Not running: stored, applied at the next start (patch_cases has more).
    ("/v1/vms/{name}", "PATCH"): dict(body={"balloon_mib": 512, "disks": [
        {"limits": {"bps_read": 10 << 20, "iops_total": 200, "group": "g1"}}]}, expect={200}),
    ("/v1/vms/{name}/start", "POST"): dict(body={}, expect={409}, code="overcommit"),
    ("/v1/vms/{name}/stop", "POST"): dict(body={"timeout": 5}, expect={409}, code="not-running"),
    ("/v1/vms/{name}/kill", "POST"): dict(expect={409}, code="not-running"),
    ("/v1/vms/{name}/reboot", "POST"): dict(expect={409}, code="not-running"),
    ("/v1/vms/{name}/pause", "POST"): dict(expect={409}, code="not-running"),
    ("/v1/vms/{name}/resume", "POST"): dict(expect={409}, code="not-running"),
    ("/v1/vms/{name}/qmp", "POST"): dict(body={"execute": "query-status"}, expect={409},
                                         code="not-running"),
    ("/v1/vms/{name}/console", "GET"): dict(expect={426}, code="upgrade-required",
                                            upgraded=dict(expect={409}, code="not-running")),
    ("/v1/vms/{name}/console", "POST"): dict(expect={426}, code="upgrade-required",
                                             upgraded=dict(expect={409}, code="not-running")),
    ("/v1/events", "GET"): dict(expect={200}, stream=True),
    ("/v1/ksm", "GET"): dict(expect={200}),
    ("/v1/ksm", "PUT"): dict(body={}, expect={200}),
    ("/metrics", "GET"): dict(expect={200}),
    # The VM has only a `path` disk: no snapshots. No template of its name
    # exists. (storage_cases makes real ones.)
    ("/v1/templates", "GET"): dict(expect={200}),
    ("/v1/templates", "POST"): dict(body={}, expect={400}, code="invalid-request"),
    ("/v1/templates/{name}", "GET"): dict(expect={404}, code="not-found"),
    ("/v1/templates/{name}", "DELETE"): dict(expect={404}, code="not-found"),
    ("/v1/vms/{name}/snapshots", "GET"): dict(expect={200}),
    ("/v1/vms/{name}/snapshots", "POST"): dict(body={"name": SNAPSHOT}, expect={400},
                                               code="no-managed-disk"),
    ("/v1/vms/{name}/snapshots/{snapshot}", "GET"): dict(expect={404}, code="not-found"),
    ("/v1/vms/{name}/snapshots/{snapshot}", "DELETE"): dict(expect={400},
                                                           code="no-managed-disk"),
    ("/v1/vms/{name}/snapshots/{snapshot}/rollback", "POST"): dict(expect={400},
                                                                  code="no-managed-disk"),
    # No IOMMU and no PCI devices in the fake /sys; nothing is claimed. The
    # VM is stopped: a device is attached to (and detached from) its spec
    # only, and the DELETE (sent after the POST) finds it there.
    ("/v1/pci", "GET"): dict(expect={200}),
    ("/v1/pci/{address}/release", "POST"): dict(expect={404}, code="not-found"),
    ("/v1/vms/{name}/hostdevs", "POST"): dict(body={"address": PCI_ADDR, "x_vga": True},
                                              expect={200}),
    ("/v1/vms/{name}/hostdevs/{address}", "DELETE"): dict(expect={200, 404}),
    # Networks: none exists, the fake /sys has no bridge, interface or PF.
    # The VM is stopped: a NIC is added to its spec only; the DELETE (sent
    # before the GET and the PATCH) removes it at once (200).
    ("/v1/networks", "GET"): dict(expect={200}),
    # (a bridge network without "bridge" or "create": 400 before the host
    # is looked at; a 404 unknown-bridge would read as "not served")
    ("/v1/networks", "POST"): dict(body={"name": "openapi-check", "type": "bridge"},
                                   expect={400}, code="invalid"),
    ("/v1/networks/{name}", "GET"): dict(expect={404}, code="not-found"),
    ("/v1/networks/{name}", "DELETE"): dict(expect={404}, code="not-found"),
    ("/v1/sriov", "GET"): dict(expect={200}),
    ("/v1/sriov/{pf}", "PUT"): dict(body={"numvfs": 1}, expect={404}, code="not-found"),
    ("/v1/sriov/{pf}", "GET"): dict(expect={404}, code="not-found"),
    ("/v1/vms/{name}/nics", "GET"): dict(expect={200}),
    ("/v1/vms/{name}/nics", "POST"): dict(body={"id": NIC_ID, "type": "user"}, expect={201}),
    ("/v1/vms/{name}/nics/{id}", "DELETE"): dict(expect={200}),
    ("/v1/vms/{name}/nics/{id}", "GET"): dict(expect={404}, code="not-found"),
    ("/v1/vms/{name}/nics/{id}", "PATCH"): dict(body={"link": "down"}, expect={404},
                                                code="not-found"),
}
UPGRADE = {"Connection": "Upgrade", "Upgrade": "hs-console"}
# A disk's I/O limits with every kind of member (as the spec shows them).
LIMITS = {"bps_read": 10 << 20, "bps_read_max": 20 << 20, "bps_write": 5 << 20,
          "iops_total": 200, "iops_total_max": 400, "group": "g-1_x"}
DOC = None


def media_ok(declared, content_type):
    """The declared media type the answer's Content-Type matches (parameters
    declared must be present; others, e.g. charset, may be added), "" when
    nothing is declared, None when none matches."""
    if not declared:
        return ""
    got = [p.strip().lower() for p in (content_type or "").split(";")]
    for d in declared:
        want = [p.strip().lower() for p in d.split(";")]
        if got and want[0] == got[0] and all(p in got[1:] for p in want[1:]):
            return d
    return None


def fill(path):
    """A described path with its parameters filled in."""
    return path.replace("{name}", VM).replace("{snapshot}", SNAPSHOT).replace(
        "{address}", PCI_ADDR).replace("{pf}", PF).replace("{id}", NIC_ID)


def probe(sock, ops, path, method, plan, label=None, headers=None):
    url = plan.get("url") or fill(path)
    label = label or f"{method} {url}"
    status, hdrs, payload = request(sock, method, url, body=plan.get("body"), headers=headers,
                                    stream=plan.get("stream", False))
    responses = ops[(path, method)]["responses"]
    code = error_code(payload)
    # (a 404 with a code of its own, e.g. unknown-bridge, is an answer of
    # the route; hsd's 404 for a path it does not serve is not-found)
    served = not (status == 405 or
                  (status == 404 and "{" not in path and code in ("", None, "not-found")) or
                  (status == 404 and isinstance(payload, dict) and
                   "no such" in str(payload.get("error", {}).get("message", ""))))
    check(served, f"{label}: served", f"{status} {payload}")
    check(str(status) in responses, f"{label}: {status} is a described answer",
          f"described: {sorted(responses)}; got {status} {payload}")
    if "expect" in plan:
        check(status in plan["expect"] and (not plan.get("code") or code == plan["code"]),
              f"{label}: {status}{' ' + code if code else ''} as expected",
              f"expected {sorted(plan['expect'])} {plan.get('code') or ''}; got {status} {payload}")
    declared = responses.get(str(status), responses.get("default"))
    if declared is not None and status != 101:
        media = media_ok(declared, hdrs.get("content-type"))
        check(media is not None, f"{label}: Content-Type {hdrs.get('content-type')!r} is described",
              f"described: {sorted(declared)}")
        schema = declared.get(media) if media else None
        if plan.get("stream") and status == 200:
            try:
                line = json.loads(payload)
            except (TypeError, ValueError):
                line = None
            check(isinstance(line, dict) and line.get("type") == "hello",
                  f"{label}: the stream starts with a hello line", repr(payload))
            payload = line
        if schema and media.startswith("application/"):
            errs = schema_errors(DOC, schema, payload, strict=True)
            check(not errs, f"{label}: the answer matches its schema", "; ".join(errs[:8]))
        elif media and media.startswith("text/plain") and url == "/metrics":
            bad = [l for l in payload.splitlines() if l and not l.startswith("#") and not
                   re.fullmatch(r"[a-zA-Z_:][a-zA-Z0-9_:]*(\{[^}]*\})? \S+", l)]
            check(isinstance(payload, str) and "# TYPE" in payload and not bad,
                  f"{label}: Prometheus text format", f"bad lines: {bad[:3]}")
    return status, payload


def spec_cases(sock, ops, disk):
    """VM specs at and past the limits: openapi.yaml's VmSpec schema and hsd
    must agree on each (201 or 400 invalid-spec)."""
    schema = ops[("/v1/vms", "POST")]["request"]
    d = [{"path": disk, "format": "raw"}]
    base = {"accel": "tcg", "disks": d}
    cases = [
        ("smallest", {"name": "a", "disks": d}),
        ("all fields", {"name": "b-1_x", "cpus": 255, "memory_mib": 4194304, "accel": "kvm",
                        "machine": "pc-q35-7.2", "cpu_model": "qemu64,+ssse3,-vmx,model_id=x",
                        "mem_merge": False, "kernel": disk, "initrd": disk,
                        "cmdline": "console=ttyS0", "balloon_mib": 2048,
                        "disks": [dict(d[0], readonly=True, limits=LIMITS)],
                        "nics": [{"type": "user", "mac": "52:54:00:AB:cd:01"},
                                 {"type": "user"}]}),
        ("kernel only", {"name": "k", "kernel": disk, "accel": "tcg"}),
        ("16 disks", dict(base, name="d16", disks=d * 16)),
        ("8 nics", dict(base, name="n8", nics=[{"type": "user"}] * 8)),
        ("63-char name", dict(base, name="x" * 63)),
        ("memory 16", dict(base, name="m16", memory_mib=16)),
        ("no name", dict(base)),
        ("64-char name", dict(base, name="x" * 64)),
        ("name with capitals", dict(base, name="Web1")),
        ("name starting with -", dict(base, name="-web")),
        ("name with a dot", dict(base, name="web.1")),
        ("cpus 0", dict(base, name="c0", cpus=0)),
        ("cpus 256", dict(base, name="c256", cpus=256)),
        ("cpus 1.5", dict(base, name="c15", cpus=1.5)),
        ("memory 15", dict(base, name="m15", memory_mib=15)),
        ("memory 4194305", dict(base, name="mbig", memory_mib=4194305)),
        ("accel xen", dict(base, name="ax", accel="xen")),
        ("machine with a space", dict(base, name="mx", machine="q35 x")),
        ("cpu_model starting with ,", dict(base, name="cx", cpu_model=",+vmx")),
        ("mem_merge 1", dict(base, name="mm", mem_merge=1)),
        ("unknown field", dict(base, name="u", colour="blue")),
        ("neither kernel nor disk", {"name": "nk", "accel": "tcg"}),
        ("relative kernel", dict(base, name="rk", kernel="vmlinuz")),
        ("kernel with ..", dict(base, name="dk", kernel="/srv/../vmlinuz")),
        ("17 disks", dict(base, name="d17", disks=d * 17)),
        ("disk format vmdk", dict(base, name="fv", disks=[dict(d[0], format="vmdk")])),
        ("disk without path", dict(base, name="dp", disks=[{"format": "raw"}])),
        ("disk with path and size", dict(base, name="dps", disks=[dict(d[0], size="1G")])),
        ("managed disk of size 0", dict(base, name="ms0", disks=[{"size": 0}])),
        ("managed disk of size 20X", dict(base, name="msx", disks=[{"size": "20X"}])),
        ("template name with capitals", dict(base, name="tc", disks=[{"template": "Deb"}])),
        ("disk with an unknown field", dict(base, name="du", disks=[dict(d[0], cache="none")])),
        ("9 nics", dict(base, name="n9", nics=[{"type": "user"}] * 9)),
        ("nic type tap", dict(base, name="nt", nics=[{"type": "tap"}])),
        ("multicast mac", dict(base, name="mc", nics=[{"mac": "01:00:5e:00:00:01"}])),
        ("short mac", dict(base, name="ms", nics=[{"mac": "52:54:00:12:34"}])),
        ("nic with an unknown field", dict(base, name="nu", nics=[{"model": "e1000"}])),
    ]
    # I/O limits and the balloon target
    def lim(**limits):
        return dict(base, disks=[dict(d[0], limits=limits)])

    cases += [
        ("disk limits, every kind", dict(lim(**LIMITS), name="l1")),
        ("disk limits, each total with its burst", dict(
            lim(bps_total=1, bps_total_max=1, iops_total=10**15, iops_total_max=10**15), name="l2")),
        ("disk limits of 0", dict(lim(bps_total=0, bps_read=1, iops_write=0), name="l3")),
        ("disk limits {}", dict(lim(), name="l4")),
        ("disk limits null", dict(base, name="l5", disks=[dict(d[0], limits=None)])),
        ("disk limits, a group alone", dict(lim(group="g"), name="l6")),
        ("disk limits bps_total with bps_read", dict(lim(bps_total=1, bps_read=1), name="lx1")),
        ("disk limits iops_total with iops_write", dict(lim(iops_total=1, iops_write=2), name="lx2")),
        ("disk limits, a burst without its rate", dict(lim(bps_write_max=1), name="lx3")),
        ("disk limits, a burst with a rate of 0", dict(lim(iops_read=0, iops_read_max=5),
                                                       name="lx4")),
        ("disk limits above 10^15", dict(lim(bps_read=10**15 + 1), name="lx5")),
        ("disk limits negative", dict(lim(iops_total=-1), name="lx6")),
        ("disk limits as a string", dict(lim(bps_read="10M"), name="lx7")),
        ("disk limits, an unknown member", dict(lim(bps=1), name="lx8")),
        ("disk limits, a group with capitals", dict(lim(group="G1"), name="lx9")),
        ("disk limits, a group of 33 characters", dict(lim(group="g" * 33), name="lxa")),
        ("disk limits, not an object", dict(base, name="lxb", disks=[dict(d[0], limits=[])])),
        ("balloon_mib 16", dict(base, name="b16", balloon_mib=16)),
        ("balloon_mib 0", dict(base, name="b0", balloon_mib=0)),
        ("balloon_mib 15", dict(base, name="b15", balloon_mib=15)),
        ("balloon_mib -1", dict(base, name="bm1", balloon_mib=-1)),
        ("balloon_mib 1.5", dict(base, name="bf", balloon_mib=1.5)),
    ]
    # a well-formed ed25519 public key (the blob names its type; 32 key bytes)
    blob = b"".join(len(x).to_bytes(4, "big") + x for x in (b"ssh-ed25519", bytes(range(32))))
    ci = {"user_data": "#cloud-config\npackages: [nginx]\n",
          "network_config": "version: 2\nethernets:\n  eth0:\n    dhcp4: true\n",
          "ssh_key": "ssh-ed25519 " + base64.b64encode(blob).decode() + " admin@example",
          "hostname": "web-1"}
    cases += [
        ("cloud_init, every member", dict(base, name="ci", cloud_init=ci)),
        ("cloud_init null", dict(base, name="cn", cloud_init=None)),
        ("cloud_init members null", dict(base, name="cm", cloud_init=dict.fromkeys(ci))),
        ("cloud_init with an unknown member", dict(base, name="cu", cloud_init={"vendor_data": ""})),
        ("cloud_init hostname with _", dict(base, name="ch", cloud_init={"hostname": "web_1"})),
        ("cloud_init user_data not a string", dict(base, name="cs", cloud_init={"user_data": 1})),
    ]
    # host devices (none exists here: the spec is only stored)
    hd = {"address": "0000:01:00.0"}
    cases += [
        ("hostdevs by address and by id", dict(base, name="h1", hostdevs=[
            hd, {"id": "10DE:1b80", "index": 1, "all_functions": False}])),
        ("hostdevs, every member", dict(base, name="h2", hotplug_ports=2, hostdevs=[
            dict(hd, all_functions=True, x_vga=True, rom_file="/srv/gpu.rom", rom_bar=False,
                 display="off")])),
        ("hostdevs, a short address", dict(base, name="h3", hostdevs=[{"address": "01:1f.7"}])),
        ("8 hostdevs", dict(base, name="h8", hostdevs=[{"address": f"0000:0{i}:00.0"}
                                                       for i in range(8)])),
        ("hostdevs null", dict(base, name="hn", hostdevs=None)),
        ("hotplug_ports 8", dict(base, name="hp8", hotplug_ports=8)),
        ("9 hostdevs", dict(base, name="h9", hostdevs=[{"address": f"0000:0{i}:00.0"}
                                                       for i in range(9)])),
        ("hotplug_ports 9", dict(base, name="hp9", hotplug_ports=9)),
        ("hotplug_ports -1", dict(base, name="hpm", hotplug_ports=-1)),
        ("hostdev device 0x20", dict(base, name="hx1", hostdevs=[{"address": "0000:01:20.0"}])),
        ("hostdev function 8", dict(base, name="hx2", hostdevs=[{"address": "01:00.8"}])),
        ("hostdev with address and id", dict(base, name="hx3", hostdevs=[
            dict(hd, id="10de:1b80")])),
        ("hostdev with neither", dict(base, name="hx4", hostdevs=[{"x_vga": True}])),
        ("hostdev id of 3 digits", dict(base, name="hx5", hostdevs=[{"id": "10de:1b8"}])),
        ("hostdev index 256", dict(base, name="hx6", hostdevs=[{"id": "10de:1b80",
                                                                 "index": 256}])),
        ("hostdev display maybe", dict(base, name="hx7", hostdevs=[dict(hd, display="maybe")])),
        ("hostdev relative rom_file", dict(base, name="hx8", hostdevs=[dict(hd,
                                                                          rom_file="gpu.rom")])),
        ("hostdev with an unknown member", dict(base, name="hx9", hostdevs=[dict(hd, bar=1)])),
        ("hostdevs not an array", dict(base, name="hxa", hostdevs=hd)),
    ]
    if shutil.which("qemu-img"):  # hsd makes managed disks with it
        cases += [("managed blank disk", dict(base, name="mb", disks=[{"size": "1.5M"}])),
                  ("managed disk of 1048576 bytes", dict(base, name="mi",
                                                         disks=[{"size": 1048576}]))]
    for what, spec in cases:
        valid = not schema_errors(DOC, schema, spec)
        st, _, body = request(sock, "POST", "/v1/vms", body=spec)
        if st == 201:
            request(sock, "DELETE", f"/v1/vms/{spec['name']}")
        want = "201" if valid else "400 invalid-spec"
        got = f"{st} {error_code(body)}" if st >= 400 else str(st)
        check(got == want, f"VmSpec {what}: the schema and hsd agree ({want})",
              f"schema says {'valid' if valid else 'invalid'}; hsd answered {st} {body}")


def patch_cases(sock, ops, disk):
    """PATCH /v1/vms/{name} on a VM that is not running (the change is
    stored): hsd and the VmPatch schema agree on each body; the VM answered,
    and the one GET gives, shows what was stored, and a refused change
    changes nothing."""
    vm = "openapi-check-p"
    url = f"/v1/vms/{vm}"

    def step(method, expect, code=None, body=None, what=None, path="/v1/vms/{name}", u=url):
        return probe(sock, ops, path, method, dict(url=u, body=body, expect={expect}, code=code),
                     label=f"patch: {method} {u} {json.dumps(body) if what is None else what}"
                     .rstrip())

    d = {"path": disk, "format": "raw"}
    st, _ = step("POST", 201, path="/v1/vms", u="/v1/vms", what="(2 disks, 512 MiB)",
                 body={"name": vm, "accel": "tcg", "memory_mib": 512,
                       "disks": [d, dict(d, readonly=True)]})
    if st != 201:
        return
    schema = ops[("/v1/vms/{name}", "PATCH")]["request"]

    def spec():
        return (request(sock, "GET", url)[2] or {}).get("spec", {})

    def case(what, body, refused=None):
        """refused: the code hsd answers where the schema cannot tell (a
        bound that depends on the VM, or on another member's value)."""
        valid = not schema_errors(DOC, schema, body)
        if refused:
            check(valid, f"patch: {what}: the schema cannot tell (hsd refuses it)")
            want, code = 400, refused
        elif valid:
            want, code = 200, None
        else:
            want = 400
            code = "invalid-request" if set(body) - {"balloon_mib", "disks"} else "invalid-spec"
        return step("PATCH", want, code, body, what)

    lim0 = dict(LIMITS)
    case("nothing", {})
    _, j = case("balloon 256", {"balloon_mib": 256})
    check(isinstance(j, dict) and j.get("spec", {}).get("balloon_mib") == 256,
          "patch: the answer has the new balloon target", repr(j))
    case("limits of disk 0", {"disks": [{"limits": lim0}]})
    case("disk 1 only", {"disks": [None, {"limits": {"iops_write": 100}}]})
    got = [x.get("limits") for x in spec().get("disks", [])]
    check(got == [lim0, {"iops_write": 100}] and spec().get("balloon_mib") == 256,
          "patch: GET shows what was stored, disks not named unchanged", repr(got))
    before = spec()
    for what, body, refused in [
            ("balloon 15", {"balloon_mib": 15}, None),
            ("balloon -1", {"balloon_mib": -1}, None),
            ("balloon 1.5", {"balloon_mib": 1.5}, None),
            ("balloon null", {"balloon_mib": None}, None),
            ("balloon above memory_mib", {"balloon_mib": 513}, "invalid-spec"),
            ("an unknown member", {"memory_mib": 1024}, None),
            ("disks not an array", {"disks": {}}, None),
            ("more disks than the VM has", {"disks": [None, None, {"limits": {}}]},
             "invalid-spec"),
            ("a disk member other than limits", {"disks": [{"limits": {}, "size": "1G"}]},
             None),
            ("a disk without limits", {"disks": [{}]}, None),
            ("bps_total with bps_read", {"disks": [{"limits": {"bps_total": 1, "bps_read": 1}}]},
             None),
            ("iops_total with iops_write",
             {"disks": [None, {"limits": {"iops_total": 1, "iops_write": 1}}]}, None),
            ("a burst without its rate", {"disks": [{"limits": {"iops_read_max": 10}}]}, None),
            ("a burst below its rate",
             {"disks": [{"limits": {"bps_write": 10, "bps_write_max": 5}}]}, "invalid-spec"),
            ("a limit above 10^15", {"disks": [{"limits": {"bps_total": 10**15 + 1}}]}, None),
            ("a limit as a string", {"disks": [{"limits": {"bps_read": "10M"}}]}, None),
            ("an unknown limit", {"disks": [{"limits": {"bps": 1}}]}, None),
            ("a group with capitals", {"disks": [{"limits": {"group": "G1"}}]}, None),
            ("a valid change with a refused one",
             {"balloon_mib": 128, "disks": [{"limits": {"bps_read_max": 1}}]}, None)]:
        case(what, body, refused)
    check(spec() == before, "patch: the refused changes changed nothing",
          f"{before!r} -> {spec()!r}")
    step("PATCH", 400, "invalid-json", None, "(no body)")
    step("PATCH", 404, "not-found", {"balloon_mib": 0}, u="/v1/vms/openapi-check-none")
    case("balloon 0, limits lifted", {"balloon_mib": 0, "disks": [{"limits": {}},
                                                                  {"limits": None}]})
    s = spec()
    check("balloon_mib" not in s and not any("limits" in x for x in s.get("disks", [])),
          "patch: balloon 0 and {} leave no target and no limits in the spec", repr(s))
    case("balloon equal to memory_mib", {"balloon_mib": 512})
    check("balloon_mib" not in spec(), "patch: a target of all the memory is no target",
          repr(spec()))
    step("DELETE", 200, what="", u=url)


def storage_cases(sock, ops, disk):
    """Templates, managed disks and snapshots for real (qemu-img makes the
    images; no QEMU runs): every answer must be described, with the status
    and code expected, and match its schema."""
    if not shutil.which("qemu-img"):
        print("note  qemu-img not found: templates and snapshots are not exercised live")
        return
    t, t2, vm, vm2 = "openapi-check-t", "openapi-check-t2", "openapi-check-m", "openapi-check-w"
    snaps = f"/v1/vms/{vm}/snapshots"

    def step(path, method, url, expect, code=None, body=None):
        return probe(sock, ops, path, method, dict(url=url, body=body, expect={expect}, code=code),
                     label=f"storage: {method} {url}" + (f" {json.dumps(body)}" if body else ""))

    imp = {"name": t, "file": disk, "format": "raw"}
    st, tj = step("/v1/templates", "POST", "/v1/templates", 201, body=imp)
    if st != 201:
        return
    check(isinstance(tj, dict) and tj.get("users") == [] and tj.get("format") == "raw",
          "storage: a new template has no users and the format given", repr(tj))
    step("/v1/templates", "POST", "/v1/templates", 409, "conflict", body=imp)
    step("/v1/templates", "POST", "/v1/templates", 400, "invalid-name", body=dict(imp, name="T"))
    qcow2 = os.path.join(os.path.dirname(disk), "disk.qcow2")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", qcow2, "1M"], check=True)
    step("/v1/templates", "POST", "/v1/templates", 400, "invalid-image",  # its metadata, as raw
         body={"name": t2, "file": qcow2, "format": "raw"})
    step("/v1/templates", "POST", "/v1/templates", 400, "invalid-request",
         body={"name": t2, "file": disk, "vm": VM})
    step("/v1/templates", "GET", "/v1/templates", 200)
    step("/v1/templates/{name}", "GET", f"/v1/templates/{t}", 200)
    spec = {"name": vm, "accel": "tcg", "disks": [
        {"template": t, "size": "2M"}, {"size": 1 << 20},
        {"path": disk, "format": "raw", "readonly": True}],
        "cloud_init": {"user_data": "#cloud-config\n", "hostname": "openapi-check"}}
    st, vj = step("/v1/vms", "POST", "/v1/vms", 201, body=spec)
    if st != 201:
        return
    sto = vj.get("storage") if isinstance(vj, dict) else None
    check(isinstance(sto, list) and len(sto) == 3 and sto[2] is None and
          sto[0].get("template") == t and sto[0].get("size") == 2 << 20,
          "storage: the new VM's storage has a layer per managed disk, null for the file",
          repr(sto))
    st, vj = step("/v1/vms/{name}", "GET", f"/v1/vms/{vm}", 200)
    check(isinstance(vj, dict) and vj.get("spec", {}).get("cloud_init") == spec["cloud_init"],
          "storage: the spec shows cloud_init as given", repr(vj.get("spec") if isinstance(vj, dict) else vj))
    step("/v1/templates/{name}", "DELETE", f"/v1/templates/{t}", 409, "in-use")
    for name in ("s1", "s2"):
        step("/v1/vms/{name}/snapshots", "POST", snaps, 201, body={"name": name})
    step("/v1/vms/{name}/snapshots", "POST", snaps, 409, "conflict", body={"name": "s1"})
    step("/v1/vms/{name}/snapshots", "POST", snaps, 400, "invalid-name", body={"name": ".s"})
    step("/v1/vms/{name}/snapshots", "POST", snaps, 409, "not-running",
         body={"name": "m", "memory": True})
    st, lj = step("/v1/vms/{name}/snapshots", "GET", snaps, 200)
    got = [(x.get("name"), x.get("parent"), x.get("current"))
           for x in (lj or {}).get("snapshots", [])] if isinstance(lj, dict) else lj
    check(got == [("s1", None, False), ("s2", "s1", True)],
          "storage: snapshots listed in order, with parent and current", repr(got))
    step("/v1/vms/{name}/snapshots/{snapshot}", "GET", f"{snaps}/s1", 200)
    step("/v1/templates", "POST", "/v1/templates", 201, body={"name": t2, "vm": vm, "disk": 1})
    step("/v1/vms/{name}/snapshots/{snapshot}/rollback", "POST", f"{snaps}/s1/rollback", 200)
    st, sj = step("/v1/vms/{name}/snapshots/{snapshot}", "GET", f"{snaps}/s1", 200)
    check(isinstance(sj, dict) and sj.get("current") is True,
          "storage: after a rollback the snapshot is current", repr(sj))
    step("/v1/vms/{name}/snapshots/{snapshot}", "DELETE", f"{snaps}/s1", 200)
    step("/v1/vms/{name}/snapshots/{snapshot}", "DELETE", f"{snaps}/s1", 404, "not-found")
    step("/v1/vms/{name}/snapshots/{snapshot}/rollback", "POST", f"{snaps}/s1/rollback", 404,
         "not-found")
    # a writable file of the user's cannot be brought back by a snapshot
    st, _ = step("/v1/vms", "POST", "/v1/vms", 201, body={
        "name": vm2, "accel": "tcg", "disks": [{"size": "1M"}, {"path": disk, "format": "raw"}]})
    step("/v1/vms/{name}/snapshots", "POST", f"/v1/vms/{vm2}/snapshots", 400, "unmanaged-disk",
         body={"name": "s"})
    for v in (vm, vm2):
        step("/v1/vms/{name}", "DELETE", f"/v1/vms/{v}", 200)
    for x in (t, t2):
        step("/v1/templates/{name}", "DELETE", f"/v1/templates/{x}", 200)
    step("/v1/templates/{name}", "GET", f"/v1/templates/{t}", 404, "not-found")


def network_cases(sock, ops, disk):
    """A network on the fake /sys's bridge, a NIC on it in a stopped VM's
    spec, and both removed, each answer described (no interface is made:
    the VM never starts)."""
    vm = "openapi-check-n"
    nics = f"/v1/vms/{vm}/nics"

    def step(path, method, u, expect, code=None, body=None):
        return probe(sock, ops, path, method, dict(url=u, body=body, expect={expect}, code=code),
                     label=f"net: {method} {u}" + (f" {json.dumps(body)}" if body else ""))

    st, j = step("/v1/networks", "POST", "/v1/networks", 201,
                 body={"name": "lan", "type": "bridge", "bridge": FAKE_BRIDGE})
    check(isinstance(j, dict) and j.get("present") is True and j.get("create") is False and
          j.get("vlan_filtering") is False and j.get("ports") == [] and "vfs" not in j,
          "net: the network has its live state", repr(j))
    step("/v1/networks", "POST", "/v1/networks", 409, "exists",
         body={"name": "lan", "type": "bridge", "bridge": FAKE_BRIDGE})
    step("/v1/networks", "POST", "/v1/networks", 404, "unknown-bridge",
         body={"name": "lan2", "type": "bridge", "bridge": "hs-no-br0"})
    step("/v1/networks", "POST", "/v1/networks", 404, "unknown-interface",
         body={"name": "direct", "type": "macvtap", "parent": "hs-no-eth0"})
    step("/v1/networks", "POST", "/v1/networks", 400, "invalid",
         body={"name": "lan2", "type": "bridge", "bridge": FAKE_BRIDGE, "vlan_filtering": True})
    step("/v1/networks/{name}", "GET", "/v1/networks/lan", 200)
    st, _ = step("/v1/vms", "POST", "/v1/vms", 201,
                 body={"name": vm, "accel": "tcg", "disks": [{"path": disk, "format": "raw"}],
                       "nics": [{"network": "lan", "vlan": 10}]})
    if st != 201:
        return
    step("/v1/vms", "POST", "/v1/vms", 404, "unknown-network",
         body={"name": vm + "x", "accel": "tcg", "disks": [{"path": disk, "format": "raw"}],
               "nics": [{"network": "nope"}]})
    st, j = step("/v1/vms/{name}/nics", "POST", nics, 201, body={"network": "lan", "queues": 2})
    check(isinstance(j, dict) and j.get("id") == "net1" and j.get("type") == "bridge" and
          "state" not in j, "net: a stopped VM's new NIC: net1, a bridge NIC, no state", repr(j))
    step("/v1/vms/{name}/nics", "POST", nics, 404, "unknown-network", body={"network": "nope"})
    step("/v1/vms/{name}/nics/{id}", "PATCH", f"{nics}/net1", 200, body={"vlan": 20})
    step("/v1/vms/{name}/nics/{id}", "PATCH", f"{nics}/net1", 400, "invalid",
         body={"model": "e1000"})
    step("/v1/vms/{name}/nics/{id}", "GET", f"{nics}/net1", 200)
    st, j = step("/v1/networks/{name}", "DELETE", "/v1/networks/lan", 409, "in-use")
    st, j = step("/v1/vms/{name}/nics/{id}", "DELETE", f"{nics}/net1", 200)
    check(j == {"vm": vm, "nic": "net1", "state": "detached"}, "net: NIC removed", repr(j))
    step("/v1/vms/{name}", "DELETE", f"/v1/vms/{vm}", 200)
    st, j = step("/v1/networks/{name}", "DELETE", "/v1/networks/lan", 200)
    check(j == {"name": "lan", "state": "deleted"}, "net: network deleted", repr(j))
    step("/v1/networks/{name}", "GET", "/v1/networks/lan", 404, "not-found")


def hostdev_cases(sock, ops, disk):
    """PCI passthrough on a host without an IOMMU or PCI devices (the fake
    /sys): the list, a release of what nobody holds, and a device attached
    to and detached from a stopped VM's spec, each answer described."""
    vm = "openapi-check-h"
    url = f"/v1/vms/{vm}/hostdevs"

    def step(path, method, u, expect, code=None, body=None):
        return probe(sock, ops, path, method, dict(url=u, body=body, expect={expect}, code=code),
                     label=f"pci: {method} {u}" + (f" {json.dumps(body)}" if body else ""))

    st, j = step("/v1/pci", "GET", "/v1/pci", 200)
    check(isinstance(j, dict) and j.get("iommu") is False and j.get("devices") == [] and
          bool(j.get("advice")), "pci: no IOMMU, no devices, and advice", repr(j))
    step("/v1/pci/{address}/release", "POST", f"/v1/pci/{PCI_ADDR}/release", 404, "not-found")
    step("/v1/pci/{address}/release", "POST", "/v1/pci/01:00/release", 400, "invalid")
    st, _ = step("/v1/vms", "POST", "/v1/vms", 201,
                 body={"name": vm, "accel": "tcg", "machine": "pc",
                       "disks": [{"path": disk, "format": "raw"}]})
    if st != 201:
        return
    st, j = step("/v1/vms/{name}/hostdevs", "POST", url, 200,
                 body={"id": "10de:1b80", "index": 1, "display": "on"})
    got = (j or {}).get("spec", {}).get("hostdevs") if isinstance(j, dict) else None
    check(got == [{"id": "10de:1b80", "index": 1, "display": "on"}] and
          j.get("hostdevs_bound") == [],
          "pci: a stopped VM's spec has the device; no claim holds anything", repr(j))
    step("/v1/vms/{name}/hostdevs", "POST", url, 200, body={"address": "01:00.0"})
    step("/v1/vms/{name}/hostdevs", "POST", url, 400, "invalid-spec",
         body={"address": "0000:01:00.0"})
    step("/v1/vms/{name}/hostdevs", "POST", url, 400, "invalid-spec",
         body={"address": "0000:02:00.0", "index": 0})
    step("/v1/vms/{name}/hostdevs", "POST", url, 400, "invalid-json")
    step("/v1/vms/{name}/hostdevs", "POST", "/v1/vms/openapi-check-none/hostdevs", 404,
         "not-found", body={"address": "01:00.0"})
    st, j = step("/v1/vms/{name}/hostdevs/{address}", "DELETE", f"{url}/01:00.0", 200)
    got = (j or {}).get("spec", {}).get("hostdevs") if isinstance(j, dict) else None
    check(got == [{"id": "10de:1b80", "index": 1, "display": "on"}],
          "pci: the detached device left the spec, the other stayed", repr(j))
    step("/v1/vms/{name}/hostdevs/{address}", "DELETE", f"{url}/01:00.0", 404, "not-found")
    step("/v1/vms/{name}/hostdevs/{address}", "DELETE", f"{url}/zz", 400, "invalid")
    step("/v1/vms/{name}", "DELETE", f"/v1/vms/{vm}", 200)


def live(ops, hsd_bin):
    base = Path(tempfile.mkdtemp(prefix="hs-openapi-", dir="/tmp"))
    proc = None
    try:
        proc, sock, state = start_hsd(hsd_bin, base)
        if not check(sock is not None, f"hsd started ({hsd_bin})",
                     (base / "hsd.log").read_text(errors="replace")[-2000:]):
            return
        images = state / "images"
        images.mkdir(exist_ok=True)
        disk = images / "disk.raw"
        with open(disk, "wb") as f:
            f.truncate(1 << 20)
        spec = {"name": VM, "memory_mib": 1024, "accel": "tcg",
                "disks": [{"path": str(disk), "format": "raw"}]}

        order = sorted(ops, key=lambda k: (k != ("/v1/vms", "POST"),
                                           k == ("/v1/vms/{name}", "DELETE"), k))
        for path, method in order:
            plan = dict(PLAN.get((path, method), {}))
            if (path, method) == ("/v1/vms", "POST"):
                plan["body"] = spec
            probe(sock, ops, path, method, plan)
            if "upgraded" in plan:
                probe(sock, ops, path, method, plan["upgraded"],
                      label=f"{method} {fill(path)} (Upgrade: hs-console)",
                      headers=UPGRADE)
            if (path, method) == ("/v1/vms", "POST"):
                # The VM exists now; every method not described for a path
                # must be refused with 405 and the described ones listed.
                for p in sorted({p for p, _ in ops}):
                    described = sorted(m for q, m in ops if q == p)
                    for m in PROBE_METHODS:
                        if m in described:
                            continue
                        url = fill(p)
                        st, _, body = request(sock, m, url)
                        msg = body.get("error", {}).get("message", "") if isinstance(body, dict) else ""
                        allowed = sorted(x.strip() for x in msg.split("allowed:")[-1].split(",")) \
                            if "allowed:" in msg else None
                        # (a HEAD answer has no body to read the list from)
                        check(st == 405 and (m == "HEAD" or allowed == described),
                              f"{m} {url}: 405" +
                              ("" if m == "HEAD" else f", allowed {', '.join(described)}"),
                              f"got {st} {body}")
        spec_cases(sock, ops, str(disk))
        patch_cases(sock, ops, str(disk))
        storage_cases(sock, ops, str(disk))
        hostdev_cases(sock, ops, str(disk))
        network_cases(sock, ops, str(disk))
        # paths hsd must not serve
        for m, url in [("GET", "/"), ("GET", "/v2"), ("GET", "/v1/nope"), ("GET", "/v1/hosts"),
                       ("GET", "/metrics/"), ("GET", "/v1/metrics"), ("GET", "/v1/vms/"),
                       ("POST", f"/v1/vms/{VM}/bogus"), ("POST", f"/v1/vms/{VM}/start/now"),
                       ("GET", f"/v1/vms/{VM}/console/x"), ("GET", f"/v1/pci/{PCI_ADDR}"),
                       ("POST", f"/v1/pci/{PCI_ADDR}/bind")]:
            st, _, body = request(sock, m, url)
            check(st == 404 and error_code(body) == "not-found", f"{m} {url}: 404 not-found",
                  f"got {st} {body}")
    finally:
        if proc:
            stop_hsd(proc)
            log = (base / "hsd.log").read_text(errors="replace")
            for marker in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:"):
                check(marker not in log, f"hsd log has no {marker!r}")
        shutil.rmtree(base, ignore_errors=True)


def main():
    args = sys.argv[1:]
    static_only = "--static-only" in args
    hsd_bin = Path(os.environ.get("HS_BUILD_DIR", ROOT / "build")) / "daemon" / "hsd"
    if "--hsd" in args:
        hsd_bin = Path(args[args.index("--hsd") + 1])

    try:
        doc = load_spec()
    except YamlError as e:
        check(False, "openapi.yaml parses", str(e))
        return finish()
    check(str(doc.get("openapi", "")).startswith("3.0"), "openapi.yaml is OpenAPI 3.0")
    global DOC
    DOC = doc
    ops = spec_operations(doc)
    check(bool(ops), f"openapi.yaml describes {len(ops)} operations")

    served, notes = api_routes()
    for n in notes:
        print(f"note  {n}")
    described = {(norm(p), m) for p, m in ops}
    served_n = {(norm(p), m) for p, m in served}
    for p, m in sorted(served):
        check((norm(p), m) in described, f"served {m} {p} is described in openapi.yaml")
    for p, m in sorted(ops):
        check((norm(p), m) in served_n, f"described {m} {p} is served by api.c")

    if not static_only:
        if not hsd_bin.exists():
            check(False, f"hsd binary {hsd_bin} exists", "build first (scripts/build.sh)")
        else:
            live(ops, hsd_bin)
    return finish()


def finish():
    print(f"openapi: {passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
