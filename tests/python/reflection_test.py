#!/usr/bin/env python3
"""grpcio's own reflection client against a running node's API port.

grpcio-reflection's ProtoReflectionDescriptorDatabase speaks grpc.reflection.v1alpha only.
Against the node it lists the services (printed one per line as `service=NAME`) and resolves
each of them to its file descriptor through a DescriptorPool, as grpcio-based tools do.

    python3 tests/python/reflection_test.py --client fed/jobcenter-segeberg/client.toml

Needs: python3 -m pip install grpcio==1.85.1 grpcio-tools==1.85.1 grpcio-reflection==1.85.1
Exit codes: 0 passed, 1 a check failed, 3 a package is missing.
"""

import argparse
import sys
import tomllib
from pathlib import Path

INSTALL = "python3 -m pip install grpcio==1.85.1 grpcio-tools==1.85.1 grpcio-reflection==1.85.1"

try:
    import grpc
    from google.protobuf.descriptor_pool import DescriptorPool
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
        ProtoReflectionDescriptorDatabase,
    )
except ImportError as e:
    print(f"reflection_test.py: {e.name or e} is missing: run `{INSTALL}`", file=sys.stderr)
    sys.exit(3)


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--client", required=True, help="the IT system's client.toml")
    args = ap.parse_args(argv)
    client_path = Path(args.client)
    client = tomllib.loads(client_path.read_text())
    agency = client["agency"]
    target = client["endpoint"].removeprefix("https://").rstrip("/")
    ca = (client_path.parent / client["ca_cert"]).read_bytes()
    credentials = grpc.ssl_channel_credentials(root_certificates=ca)
    # The node's certificate names the agency id, not the host it listens on.
    options = [("grpc.ssl_target_name_override", agency), ("grpc.default_authority", agency)]
    with grpc.secure_channel(target, credentials, options=options) as channel:
        grpc.channel_ready_future(channel).result(timeout=15)
        database = ProtoReflectionDescriptorDatabase(channel)
        services = sorted(database.get_services())
        pool = DescriptorPool(database)
        for name in services:
            service = pool.FindServiceByName(name)
            if not service.methods:
                print(f"reflection_test.py: FAILED: {name} resolves without methods", file=sys.stderr)
                return 1
            print(f"service={name}")
            print(f"methods={name}:{','.join(m.name for m in service.methods)}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except grpc.RpcError as e:
        print(f"reflection_test.py: FAILED: {e.code()}: {e.details()}", file=sys.stderr)
        sys.exit(1)
