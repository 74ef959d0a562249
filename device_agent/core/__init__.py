# DIAMS protocol core: sans-IO, stdlib only, runs unchanged on CPython and MicroPython.
#
# Modules (each one job): crypto (HMAC, HKDF, constant-time compare), otp (HOTP), wire (the
# codec), keys (derivations and commitments), states (every state transition, one table),
# session (MAC'd data after authentication), device and gateway (the two roles), events, errors.
# The device side needs crypto, otp, wire, keys, states, session, device, events, errors; the
# gateway module is not installed on boards. docs/PROTOCOL.md is the specification.
