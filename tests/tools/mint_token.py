#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Kubernetes-style service-account tokens for tests (python3-cryptography, no ambit code).

  mint_token.py keygen --alg ES256|RS256 --key KEY.pem --pub PUB.pem
  mint_token.py mint --key KEY.pem --alg ES256|RS256 --sub NS:SA [--node N] [--pod P]
                [--aud istio-ca[,other]] [--exp-in 3600] [--nbf-in 0] [--header-alg none]

Prints the compact JWS on stdout. The claims are those of a projected service-account token
(kube-apiserver's): iss, sub system:serviceaccount:NS:SA, aud (a list), exp, iat, nbf, and
kubernetes.io {namespace, node {name, uid}, pod {name, uid}, serviceaccount {name, uid}}.
--header-alg overrides the header's alg (e.g. none, with an empty signature).
"""
import argparse
import base64
import json
import sys
import time

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature


def b64(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def keygen(a):
    key = ec.generate_private_key(ec.SECP256R1()) if a.alg == "ES256" else \
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with open(a.key, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    with open(a.pub, "wb") as f:
        f.write(key.public_key().public_bytes(serialization.Encoding.PEM,
                                              serialization.PublicFormat.SubjectPublicKeyInfo))


def mint(a):
    with open(a.key, "rb") as f:
        key = serialization.load_pem_private_key(f.read(), None)
    ns, sa = a.sub.split(":", 1)
    now = int(time.time())
    claims = {
        "aud": a.aud.split(","),
        "exp": now + a.exp_in, "iat": now, "nbf": now + a.nbf_in,
        "iss": "https://kubernetes.default.svc.cluster.local",
        "sub": f"system:serviceaccount:{ns}:{sa}",
        "kubernetes.io": {"namespace": ns, "serviceaccount": {"name": sa, "uid": "sa-uid"}},
    }
    if a.node:
        claims["kubernetes.io"]["node"] = {"name": a.node, "uid": "node-uid"}
    if a.pod:
        claims["kubernetes.io"]["pod"] = {"name": a.pod, "uid": "pod-uid"}
    header = {"alg": a.header_alg or a.alg, "kid": "test"}
    signing = (b64(json.dumps(header).encode()) + "." + b64(json.dumps(claims).encode())).encode()
    if a.header_alg == "none":
        sig = b""
    elif a.alg == "ES256":
        r, s = decode_dss_signature(key.sign(signing, ec.ECDSA(hashes.SHA256())))
        sig = r.to_bytes(32, "big") + s.to_bytes(32, "big")    # RFC 7518 §3.4
    else:
        sig = key.sign(signing, padding.PKCS1v15(), hashes.SHA256())
    print(signing.decode() + "." + b64(sig))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    k = sub.add_parser("keygen")
    k.add_argument("--alg", choices=["ES256", "RS256"], default="ES256")
    k.add_argument("--key", required=True)
    k.add_argument("--pub", required=True)
    m = sub.add_parser("mint")
    m.add_argument("--key", required=True)
    m.add_argument("--alg", choices=["ES256", "RS256"], default="ES256")
    m.add_argument("--sub", required=True)
    m.add_argument("--node")
    m.add_argument("--pod")
    m.add_argument("--aud", default="istio-ca")
    m.add_argument("--exp-in", type=int, default=3600)
    m.add_argument("--nbf-in", type=int, default=0)
    m.add_argument("--header-alg")
    a = ap.parse_args()
    keygen(a) if a.cmd == "keygen" else mint(a)


if __name__ == "__main__":
    sys.exit(main())
