#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Signs a PEM CSR with a test CA using python3-cryptography (no ambit code), for the
independent certificate service tests/node/ca_server.js: the leaf gets the CSR's public key and
subjectAltName (or --san URI instead), a validity of --validity seconds from a minute ago, and
the workload profile (CA:FALSE, digitalSignature+keyEncipherment, serverAuth+clientAuth).

  sign_csr.py --csr req.pem --ca-cert ca.crt --ca-key ca.key --validity 3600 --out leaf.pem
              [--san spiffe://...]
Prints the CSR's URI SAN on stdout."""
import argparse
import datetime
import secrets

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtendedKeyUsageOID


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--csr", required=True)
    ap.add_argument("--ca-cert", required=True)
    ap.add_argument("--ca-key", required=True)
    ap.add_argument("--validity", type=int, default=86400)
    ap.add_argument("--san")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    csr = x509.load_pem_x509_csr(open(a.csr, "rb").read())
    ca = x509.load_pem_x509_certificate(open(a.ca_cert, "rb").read())
    key = serialization.load_pem_private_key(open(a.ca_key, "rb").read(), None)
    if not csr.is_signature_valid:
        raise SystemExit("CSR signature does not verify")
    san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    print(uris[0] if uris else "")
    if a.san:
        san = x509.SubjectAlternativeName([x509.UniformResourceIdentifier(a.san)])
    now = datetime.datetime.now(datetime.timezone.utc)
    b = (x509.CertificateBuilder()
         .subject_name(x509.Name([]))
         .issuer_name(ca.subject)
         .public_key(csr.public_key())
         .serial_number(int.from_bytes(secrets.token_bytes(16), "big") >> 1)
         .not_valid_before(now - datetime.timedelta(seconds=60))
         .not_valid_after(now + datetime.timedelta(seconds=max(a.validity, 1)))
         .add_extension(san, critical=True)
         .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
         .add_extension(x509.KeyUsage(True, False, True, False, False, False, False, False, False),
                        critical=True)
         .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                               ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False))
    cert = b.sign(key, hashes.SHA256())
    with open(a.out, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))


if __name__ == "__main__":
    main()
