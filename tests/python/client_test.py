#!/usr/bin/env python3
"""An independent AgencyApi client: grpcio from PyPI, stubs generated from proto/ at run time.

Against a running node it checks grpc.health.v1 (SERVING), refuses to work without a token,
records a consent (categories, legal basis, form, SHA-256 of the signed form), submits a
CertificationRequest citing it (answered QUEUED), and sees a submission without consent
refused with FAILED_PRECONDITION and the `kurzdraht-reason` metadata `no-consent` — in the
trailing metadata, as every refusal arrives (a stream refused for want of a token too).

    python3 tests/python/client_test.py --client fed/jobcenter-segeberg/client.toml \
        --recipient jugendamt-kreis-segeberg [--ca fed/ca.pem] [--proto-dir proto]

The token is read from $KURZDRAHT_TOKEN if set, else from the client.toml's token_file; the CA
from --ca if given, else from the client.toml's ca_cert. On success it prints
`consent_id=...`, `message_id=...` and `notice_message_id=...` lines and exits 0.

Needs: python3 -m pip install grpcio==1.85.1 grpcio-tools==1.85.1 (what .ci/run installs).
Exit codes: 0 passed, 1 a check failed, 2 usage, 3 grpcio/grpcio-tools missing.
"""

import argparse
import hashlib
import os
import sys
import tempfile
import time
import tomllib
from pathlib import Path

INSTALL = "python3 -m pip install grpcio==1.85.1 grpcio-tools==1.85.1"

try:
    import grpc
    from grpc_tools import protoc
    import importlib.resources
except ImportError as e:  # the Rust test relies on this message and exit code
    print(
        f"client_test.py: {e.name or e} is missing: run `{INSTALL}` (the install step of .ci/run)",
        file=sys.stderr,
    )
    sys.exit(3)

# grpc.health.v1 as published by the gRPC project (health.proto), generated like ours.
HEALTH_PROTO = """
syntax = "proto3";
package grpc.health.v1;
message HealthCheckRequest { string service = 1; }
message HealthCheckResponse {
  enum ServingStatus { UNKNOWN = 0; SERVING = 1; NOT_SERVING = 2; SERVICE_UNKNOWN = 3; }
  ServingStatus status = 1;
}
service Health {
  rpc Check(HealthCheckRequest) returns (HealthCheckResponse);
  rpc Watch(HealthCheckRequest) returns (stream HealthCheckResponse);
}
"""


class CheckFailed(Exception):
    pass


def check(cond, what):
    if not cond:
        raise CheckFailed(what)
    print(f"ok: {what}", file=sys.stderr)


def generate_stubs(proto_dir: Path, out: Path):
    """Compiles kurzdraht's .proto files and health.proto into Python modules in `out`."""
    # Its proto package is grpc.health.v1 (that names the service on the wire); its Python
    # module is kurzdraht_health.health_pb2, as `grpc` itself is an installed package.
    health_root = out / "health_src"
    (health_root / "kurzdraht_health").mkdir(parents=True)
    (health_root / "kurzdraht_health/health.proto").write_text(HEALTH_PROTO)
    well_known = str(importlib.resources.files("grpc_tools") / "_proto")
    gen = out / "gen"
    gen.mkdir()
    ours = sorted(str(p.relative_to(proto_dir)) for p in proto_dir.rglob("*.proto"))
    if not ours:
        raise CheckFailed(f"no .proto files under {proto_dir}")
    for include, files in ((proto_dir, ours), (health_root, ["kurzdraht_health/health.proto"])):
        args = [
            "grpc_tools.protoc",
            f"-I{include}",
            f"-I{proto_dir}",
            f"-I{well_known}",
            f"--python_out={gen}",
            f"--grpc_python_out={gen}",
            *files,
        ]
        if protoc.main(args) != 0:
            raise CheckFailed(f"protoc failed on {files}")
    sys.path.insert(0, str(gen))


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--client", required=True, help="the IT system's client.toml")
    ap.add_argument("--recipient", required=True, help="agency id to send the request to")
    ap.add_argument("--ca", help="CA certificate (default: the client.toml's ca_cert)")
    ap.add_argument(
        "--proto-dir",
        default=str(Path(__file__).resolve().parents[2] / "proto"),
        help="root of the .proto files (default: the repository's proto/)",
    )
    args = ap.parse_args(argv)

    client_path = Path(args.client)
    client = tomllib.loads(client_path.read_text())
    base = client_path.parent
    agency = client["agency"]
    endpoint = client["endpoint"]
    target = endpoint.removeprefix("https://").rstrip("/")
    check(endpoint.startswith("https://"), f"the endpoint {endpoint} is https")
    ca = Path(args.ca) if args.ca else base / client["ca_cert"]
    token = os.environ.get("KURZDRAHT_TOKEN") or (base / client["token_file"]).read_text()
    token = token.strip()

    sys.dont_write_bytecode = True
    with tempfile.TemporaryDirectory(prefix="kurzdraht-py-") as tmp:
        generate_stubs(Path(args.proto_dir).resolve(), Path(tmp))
        from kurzdraht.v1 import agency_pb2, agency_pb2_grpc, messages_pb2
        from kurzdraht_health import health_pb2, health_pb2_grpc

        credentials = grpc.ssl_channel_credentials(root_certificates=ca.read_bytes())
        # The node's certificate names the agency id, not the host it listens on.
        options = [("grpc.ssl_target_name_override", agency), ("grpc.default_authority", agency)]
        with grpc.secure_channel(target, credentials, options=options) as channel:
            grpc.channel_ready_future(channel).result(timeout=15)

            # grpc.health.v1, without a token, as a load balancer would ask.
            health = health_pb2_grpc.HealthStub(channel)
            serving = health_pb2.HealthCheckResponse.SERVING
            for service in ["", "kurzdraht.v1.AgencyApi"]:
                deadline = time.monotonic() + 10
                while True:
                    status = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status
                    if status == serving or time.monotonic() > deadline:
                        break
                    time.sleep(0.1)
                check(status == serving, f"health of {service!r} is SERVING (got {status})")

            api = agency_pb2_grpc.AgencyApiStub(channel)
            auth = [("authorization", f"Bearer {token}")]

            try:
                api.ListConsents(agency_pb2.ListConsentsRequest(), timeout=10)
                check(False, "a call without a token is refused")
            except grpc.RpcError as e:
                check(e.code() == grpc.StatusCode.UNAUTHENTICATED, "a call without a token is UNAUTHENTICATED")
            # A refused stream too: its reason arrives in the trailing metadata.
            try:
                for _ in api.ReadInbox(agency_pb2.ReadInboxRequest(), timeout=10):
                    pass
                check(False, "a stream without a token is refused")
            except grpc.RpcError as e:
                reason = dict(e.trailing_metadata() or ()).get("kurzdraht-reason")
                check(
                    e.code() == grpc.StatusCode.UNAUTHENTICATED and reason == "unauthenticated",
                    f"a stream without a token is UNAUTHENTICATED/unauthenticated in the trailers (got {e.code()}/{reason})",
                )

            subject = messages_pb2.Subject(
                given_name="Jonas",
                family_name="Petersen",
                date_of_birth="2006-09-21",
                address=messages_pb2.Address(
                    street="Hamburger Straße 12", postal_code="23795", city="Bad Segeberg"
                ),
            )
            evidence = hashlib.sha256(b"JC-SE/Einwilligung/2026/4711 (signed form, scanned)").digest()
            recorded = api.RecordConsent(
                agency_pb2.RecordConsentRequest(
                    subject=subject,
                    given_by=messages_pb2.PERSON,
                    recipients=[args.recipient],
                    purposes=[messages_pb2.U25_MOVE_OUT],
                    categories=[
                        messages_pb2.IDENTITY,
                        messages_pb2.ADDRESS,
                        messages_pb2.HOUSING_SITUATION,
                        messages_pb2.FAMILY_SITUATION,
                        messages_pb2.BENEFIT_DECISION,
                    ],
                    legal_basis=messages_pb2.CONSENT_GDPR_6_1_A_SGB_X_67B,
                    form=messages_pb2.WRITTEN,
                    evidence_sha256=evidence,
                    evidence_reference="JC-SE/Einwilligung/2026/4711",
                    recorded_by="Frau Lüders",
                ),
                metadata=auth,
                timeout=10,
            )
            consent = recorded.consent
            check(len(consent.consent_id) == 36, f"consent {consent.consent_id} recorded")
            check(consent.recording_agency == agency, "the consent names this agency as recorder")
            check(consent.evidence_sha256 == evidence, "the record keeps the evidence hash")
            check(list(consent.recipients) == [args.recipient], "the record names the recipient")
            check(len(recorded.notice_message_ids) == 1, "one consent notice is queued")

            body = messages_pb2.MessageBody(
                certification_request=messages_pb2.CertificationRequest(
                    subject=subject,
                    reason="Antrag auf Zusicherung nach § 22 Abs. 5 SGB II",
                    caseworker="Frau Lüders",
                )
            )
            submitted = api.Submit(
                agency_pb2.SubmitRequest(
                    recipient=args.recipient, consent_id=consent.consent_id, body=body
                ),
                metadata=auth,
                timeout=10,
            )
            check(
                submitted.state == agency_pb2.QUEUED,
                f"the certification request {submitted.message_id} is QUEUED "
                f"(got {agency_pb2.DeliveryState.Name(submitted.state)})",
            )

            try:
                api.Submit(
                    agency_pb2.SubmitRequest(recipient=args.recipient, body=body),
                    metadata=auth,
                    timeout=10,
                )
                check(False, "a submission without consent is refused")
            except grpc.RpcError as e:
                # The README's promise: a refusal's reason is trailing metadata (a
                # Trailers-Only answer), never initial metadata.
                reason = dict(e.trailing_metadata() or ()).get("kurzdraht-reason")
                check(
                    e.code() == grpc.StatusCode.FAILED_PRECONDITION and reason == "no-consent",
                    f"a submission without consent is FAILED_PRECONDITION/no-consent in the trailers (got {e.code()}/{reason})",
                )
                initial = dict(e.initial_metadata() or ())
                check("kurzdraht-reason" not in initial, f"no reason in the initial metadata ({initial})")

    print(f"consent_id={consent.consent_id}")
    print(f"message_id={submitted.message_id}")
    for n in recorded.notice_message_ids:
        print(f"notice_message_id={n}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except CheckFailed as e:
        print(f"client_test.py: FAILED: {e}", file=sys.stderr)
        sys.exit(1)
    except grpc.RpcError as e:
        print(f"client_test.py: FAILED: unexpected {e.code()}: {e.details()}", file=sys.stderr)
        sys.exit(1)
