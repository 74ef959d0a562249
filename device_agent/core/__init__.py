# DIAMS protocol core: sans-IO, stdlib only, runs unchanged on CPython and MicroPython.
#
# Modules (each one job): crypto (HMAC, HKDF, constant-time compare), otp (HOTP), wire (the
# codec), keys (derivations and commitments), states (the device role's transition table),
# session (MAC'd data after authentication), device and gateway (the two roles; the gateway's
# transition table is in gateway.py), events, errors.
# The device side needs crypto, otp, wire, keys, states, session, device, events, errors; the
# gateway module is not installed on boards. docs/PROTOCOL.md is the specification.
