"""Before an mTLS connection: is the broker reachable, and is its certificate trusted here?

awscrt (s2n) reports a broker certificate it does not trust as a generic "TLS negotiation
failed", and only after s2n's error blinding has held the connection for 10 to 30 seconds;
a device certificate the broker refuses ends the handshake at once with the same error.
A plain TLS handshake from Python's ``ssl`` first (no client certificate; the broker shows
its own certificate before it asks for ours) tells the two apart immediately, and an
unreachable endpoint fails here with the socket's own reason.
"""

from __future__ import annotations

import socket
import ssl

from devid.errors import CheckFailed, EnvironmentProblem


def _open(host: str, port: int, timeout: float) -> socket.socket:
    where = f"{host}:{port}" if ":" not in host else f"[{host}]:{port}"
    try:
        return socket.create_connection((host, port), timeout=timeout)
    except socket.gaierror as exc:
        raise EnvironmentProblem(f"cannot resolve {host}: {exc.strerror}") from exc
    except TimeoutError as exc:
        raise EnvironmentProblem(
            f"cannot reach {where}: no answer within {timeout:g} s",
            hint="check the endpoint and any firewall, or raise --timeout",
        ) from exc
    except OSError as exc:
        raise EnvironmentProblem(f"cannot reach {where}: {exc.strerror or exc}") from exc


def preflight_broker(host: str, port: int, *, ca_pem: bytes | None, timeout: float) -> None:
    """Raise EnvironmentProblem (unreachable) or CheckFailed (untrusted broker certificate).

    *ca_pem* replaces the system trust store, as ``--ca-file`` does for awscrt. Any other
    handshake failure is left to the real, mutual handshake to report.
    """
    try:
        context = ssl.create_default_context(cadata=ca_pem.decode("ascii") if ca_pem else None)
    except (ssl.SSLError, UnicodeDecodeError) as exc:
        raise EnvironmentProblem(f"cannot use the CA certificates: {exc}") from exc
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    with _open(host, port, timeout) as sock:
        try:
            with context.wrap_socket(sock, server_hostname=host):
                pass
        except ssl.SSLCertVerificationError as exc:
            hint = (
                "is --ca-file the CA that signed the broker's certificate?"
                if ca_pem
                else "give --ca-file with the CA that signed the broker's certificate"
            )
            raise CheckFailed(
                f"the broker's certificate is not trusted: {exc.verify_message}", hint=hint
            ) from exc
        except (ssl.SSLError, OSError):
            pass  # it wants a client certificate: the mutual handshake will tell
