#!/usr/bin/env python3
"""Writes seeds for the `restore` fuzz target: a backup envelope as `vault backup` writes it
(password `fuzz-password`, see src/ops/vault/backup.rs for the format) and its decrypted
contents alone. Usage: make_backup_seed.py CERT.pem KEY.pem CHAIN.pem OUTDIR"""
import json, os, subprocess, sys
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

cert_pem, key_pem, chain_pem, out = sys.argv[1:5]
der = lambda args: subprocess.run(args, check=True, capture_output=True).stdout.hex().upper()
cert = der(["openssl", "x509", "-in", cert_pem, "-outform", "DER"])
key = der(["openssl", "pkey", "-in", key_pem, "-outform", "DER"])
chain = der(["openssl", "x509", "-in", chain_pem, "-outform", "DER"])

def doc(name):
    version = lambda v, k: {"version": v, "cert": cert, "key": k, "kty": "RSA", "exportable": True,
        "enabled": True, "nbf": 1700000000, "exp": 1800000000, "created": 1700000000,
        "updated": 1700000001, "tags": {"env": "fuzz"}, "issuer": None, "chain": [chain]}
    return json.dumps({"name": name, "policy": "{\"id\":\"fuzz\"}", "tags": {"a": "b"},
        "created": 1700000000, "updated": 1700000002,
        "versions": [version("0a1b", {"pkcs8": key}), version("0a1c", {"sealed": "00ff"})]}).encode()

name, iterations, salt = "fuzz", 600000, bytes(range(16))
nonce = bytes(12)
k = PBKDF2HMAC(algorithm=hashes.SHA256(), length=32, salt=salt, iterations=iterations).derive(b"fuzz-password")
kdf = {"algorithm": "PBKDF2-HMAC-SHA256", "iterations": iterations, "salt": salt.hex().upper()}
aad = f"certroll-vault-backup/1/{name}/{kdf['algorithm']}/{iterations}/{kdf['salt']}".encode()
ct = AESGCM(k).encrypt(nonce, doc(name), aad)
env = {"format": "certroll-vault-backup", "version": 1, "name": name, "kdf": kdf,
       "cipher": "AES-256-GCM", "nonce": nonce.hex().upper(), "ciphertext": ct.hex().upper()}
# The target's first byte picks the mode: even = envelope, odd = contents.
with open(os.path.join(out, "envelope"), "wb") as f:
    f.write(b"\x00" + json.dumps(env, indent=2).encode())
with open(os.path.join(out, "contents"), "wb") as f:
    f.write(b"\x01" + doc("fuzz"))
