"""X.509 device PKI: names, profiles, CAs, CSRs, issuance, revocation and CRLs.

Every signing step goes through cryptography's builders with a private key object, so a CA
or device key on a PKCS#11 token (:mod:`hsm.keys`) works exactly like a key file.
"""

from __future__ import annotations
