"""Keys the local runtime makes for itself: a self-signed certificate (when
no TLS Secret is given) and a DKIM key per domain, kept in the data folder so
that a restart keeps them.  On Kubernetes cert-manager and the operator make
these; the files land in the same places of the configuration folder."""
from __future__ import annotations

import base64
import datetime
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from .layout import write_atomic


def self_signed(cert_path: Path, key_path: Path, hostnames: list[str], *, ips: tuple[str, ...] = (),
                days: int = 825) -> None:
    """A self-signed certificate for ``hostnames`` (and localhost, 127.0.0.1,
    ::1 and ``ips``: the address the stack listens on)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostnames[0]),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "correo (self-signed, local)")])
    now = datetime.datetime.now(datetime.timezone.utc)
    sans: list[x509.GeneralName] = [x509.DNSName(h) for h in dict.fromkeys([*hostnames, "localhost"])]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in dict.fromkeys(["127.0.0.1", "::1", *ips])]
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    write_atomic(key_path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                             serialization.NoEncryption()), 0o600)
    write_atomic(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)


def certificate_names(cert_path: Path) -> set[str]:
    """The DNS names and IP addresses (as text) a certificate is for."""
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (OSError, ValueError, x509.ExtensionNotFound):
        return set()
    return set(san.get_values_for_type(x509.DNSName)) | {str(ip) for ip in san.get_values_for_type(x509.IPAddress)}


def ensure_dkim_key(path: Path) -> str:
    """Create an RSA-2048 DKIM key at ``path`` unless one is there; return the
    public key as the base64 ``p=`` value of its DNS record."""
    if not path.exists():
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        write_atomic(path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                             serialization.NoEncryption()), 0o600)
    return dkim_public_key(path)


def dkim_public_key(path: Path) -> str | None:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError):
        return None
    der = key.public_key().public_bytes(serialization.Encoding.DER,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(der).decode("ascii")


def ensure_secret(path: Path) -> None:
    """A random shared secret (the proxy's credential), made once, mode 0600."""
    import secrets
    try:
        if len(path.read_text().strip()) >= 16:
            return
    except OSError:
        pass
    write_atomic(path, secrets.token_hex(32) + "\n", 0o600)
