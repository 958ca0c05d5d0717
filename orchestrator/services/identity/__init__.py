"""Device identity rotation: checking CSRs, issuing certificates and revoking old ones.

`check_csr` decides whether a device's CSR may be given a certificate (`csr`); the
issue, revoke and CRL use cases build on it.
"""

from orchestrator.services.identity.csr import CheckedCsr, KeyHolders, RefusedCsr, check_csr

__all__ = ["CheckedCsr", "KeyHolders", "RefusedCsr", "check_csr"]
