#!/usr/bin/env python3
"""The CLI's --json output, held to the protobuf project's own JSON mapping (google.protobuf.json_format).

Reads a file of cases, each the JSON one `kurzdraht … --json` command printed and the
message type it prints. For each case it
  - takes off the CLI's additions: `idempotencyKey` (top level, a string) and, beside every
    `…Ms` timestamp that is not "0", its RFC 3339 sibling without `Ms` — checking that the
    sibling is RFC 3339 in UTC (`YYYY-MM-DDTHH:MM:SS[.fff]Z`) and names the same
    millisecond, and that no sibling stands beside a "0" or without its timestamp;
  - parses the rest strictly (unknown fields are errors) with json_format.ParseDict into the
    message class that grpc_tools.protoc generates from proto/;
  - prints that message again with json_format.MessageToDict(always_print_fields_with_no_presence=True)
    (lowerCamelCase names, enum names, base64 bytes, 64-bit integers as strings, fields with
    default values printed) and demands exactly the CLI's JSON back.

    python3 tests/python/json_mapping_test.py --cases cases.json [--proto-dir proto]

cases.json: [{"what": "...", "type": "kurzdraht.v1.MessageStatus", "json": {...}}, ...]
Prints `checked=N` and `times=N` (timestamps with a sibling checked) on success.
Needs: python3 -m pip install grpcio-tools==1.85.1 (brings protobuf).
Exit codes: 0 passed, 1 a check failed, 2 usage, 3 grpcio-tools missing.
"""

import argparse
import copy
import datetime
import importlib.resources
import json
import re
import sys
import tempfile
from pathlib import Path

INSTALL = "python3 -m pip install grpcio==1.85.1 grpcio-tools==1.85.1"

try:
    from google.protobuf import descriptor_pool, json_format, message_factory
    from grpc_tools import protoc
except ImportError as e:
    print(f"json_mapping_test.py: {e.name or e} is missing: run `{INSTALL}`", file=sys.stderr)
    sys.exit(3)

RFC3339_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?Z$")


class CheckFailed(Exception):
    pass


def generate(proto_dir: Path, out: Path):
    well_known = str(importlib.resources.files("grpc_tools") / "_proto")
    files = sorted(str(p.relative_to(proto_dir)) for p in proto_dir.rglob("*.proto"))
    if not files:
        raise CheckFailed(f"no .proto files under {proto_dir}")
    args = ["grpc_tools.protoc", f"-I{proto_dir}", f"-I{well_known}", f"--python_out={out}", *files]
    if protoc.main(args) != 0:
        raise CheckFailed("protoc failed")
    sys.path.insert(0, str(out))
    for f in files:
        __import__(f[: -len(".proto")].replace("/", ".") + "_pb2")


def strip_additions(value, where, counts):
    """Removes (after checking) the RFC 3339 siblings of `…Ms` timestamps, at every depth."""
    if isinstance(value, list):
        for i, v in enumerate(value):
            strip_additions(v, f"{where}[{i}]", counts)
        return
    if not isinstance(value, dict):
        return
    for key in list(value):
        if not key.endswith("Ms") or len(key) == 2:
            continue
        ms = value[key]
        sibling = key[:-2]
        if not (isinstance(ms, str) and re.fullmatch(r"-?\d+", ms)):
            raise CheckFailed(f"{where}.{key} is {ms!r}, not an int64 as a string of digits")
        if ms == "0":
            if sibling in value:
                raise CheckFailed(f"{where}.{sibling} stands beside {key} = \"0\"")
            continue
        if sibling not in value:
            raise CheckFailed(f"{where}.{key} = {ms} has no RFC 3339 sibling {sibling!r}")
        text = value.pop(sibling)
        if not (isinstance(text, str) and RFC3339_UTC.fullmatch(text)):
            raise CheckFailed(f"{where}.{sibling} = {text!r} is no RFC 3339 time in UTC")
        t = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
        epoch = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
        delta = t - epoch
        at_ms = (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000
        if at_ms != int(ms) or delta.microseconds % 1000:
            raise CheckFailed(f"{where}.{sibling} = {text} is not {key} = {ms} ms")
        counts["times"] += 1
    for key, v in value.items():
        strip_additions(v, f"{where}.{key}", counts)


def differences(a, b, where=""):
    if type(a) is not type(b):
        return [f"{where or '.'}: CLI {a!r} vs json_format {b!r}"]
    if isinstance(a, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            if k not in a:
                out.append(f"{where}.{k}: missing in the CLI's output (json_format: {b[k]!r})")
            elif k not in b:
                out.append(f"{where}.{k}: not printed by json_format (CLI: {a[k]!r})")
            else:
                out += differences(a[k], b[k], f"{where}.{k}")
        return out
    if isinstance(a, list):
        if len(a) != len(b):
            return [f"{where}: {len(a)} items vs {len(b)}"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in differences(x, y, f"{where}[{i}]")]
    return [] if a == b else [f"{where}: CLI {a!r} vs json_format {b!r}"]


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", required=True)
    ap.add_argument(
        "--proto-dir",
        default=str(Path(__file__).resolve().parents[2] / "proto"),
        help="root of the .proto files (default: the repository's proto/)",
    )
    args = ap.parse_args(argv)
    cases = json.loads(Path(args.cases).read_text())
    counts = {"checked": 0, "times": 0}
    sys.dont_write_bytecode = True
    with tempfile.TemporaryDirectory(prefix="kurzdraht-json-") as tmp:
        generate(Path(args.proto_dir).resolve(), Path(tmp))
        pool = descriptor_pool.Default()
        for case in cases:
            what, type_name, printed = case["what"], case["type"], case["json"]
            cls = message_factory.GetMessageClass(pool.FindMessageTypeByName(type_name))
            expected = copy.deepcopy(printed)
            if "idempotencyKey" in expected:
                if not isinstance(expected.pop("idempotencyKey"), str):
                    raise CheckFailed(f"{what}: idempotencyKey is no string")
            strip_additions(expected, what, counts)
            try:
                message = json_format.ParseDict(expected, cls())
            except json_format.ParseError as e:
                raise CheckFailed(f"{what}: not {type_name} in the canonical mapping: {e}")
            again = json_format.MessageToDict(message, always_print_fields_with_no_presence=True)
            diff = differences(expected, again)
            if diff:
                raise CheckFailed(f"{what} ({type_name}):\n  " + "\n  ".join(diff))
            counts["checked"] += 1
            print(f"ok: {what} ({type_name})", file=sys.stderr)
    print(f"checked={counts['checked']}")
    print(f"times={counts['times']}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except CheckFailed as e:
        print(f"json_mapping_test.py: FAILED: {e}", file=sys.stderr)
        sys.exit(1)
