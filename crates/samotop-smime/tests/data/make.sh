#!/usr/bin/env bash
# Makes the test certificates and keys here (throw-away, valid for 100 years). The private
# keys are test fixtures: a real server never has one (see the crate docs).
set -euo pipefail
cd "$(dirname "$0")"
mk() { # name keyopts usage subject
    openssl req -x509 -newkey "$2" -nodes -keyout "$1.key" -out "$1.pem" -days 36500 \
        -subj "/CN=$1/emailAddress=$1@example.org" \
        -addext "keyUsage=$3" -addext "extendedKeyUsage=emailProtection" \
        -addext "subjectAltName=email:$1@example.org" ${5:-} 2>/dev/null
}
mk rsa2048 rsa:2048 "digitalSignature,keyEncipherment"
mk rsa4096 rsa:4096 "digitalSignature,keyEncipherment"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout p256.key -out p256.pem \
    -days 36500 -subj "/CN=p256/emailAddress=p256@example.org" -addext "keyUsage=digitalSignature,keyAgreement" \
    -addext "extendedKeyUsage=emailProtection" -addext "subjectAltName=email:p256@example.org" 2>/dev/null
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-384 -nodes -keyout p384.key -out p384.pem \
    -days 36500 -subj "/CN=p384/emailAddress=p384@example.org" -addext "keyUsage=digitalSignature,keyAgreement" \
    -addext "extendedKeyUsage=emailProtection" -addext "subjectAltName=email:p384@example.org" 2>/dev/null
# Wrong usage: an RSA signing-only certificate, and one for TLS servers only.
mk signonly rsa:2048 "digitalSignature"
openssl req -x509 -newkey rsa:2048 -nodes -keyout tlsonly.key -out tlsonly.pem -days 36500 \
    -subj "/CN=tlsonly" -addext "keyUsage=keyEncipherment" -addext "extendedKeyUsage=serverAuth" 2>/dev/null
# P-521 is not supported.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-521 -nodes -keyout p521.key -out p521.pem \
    -days 36500 -subj "/CN=p521" 2>/dev/null
# A certificate file with its private key in it: refused.
cat rsa2048.pem rsa2048.key > withkey.pem
rm -f signonly.key tlsonly.key p521.key
