"""`certfleet keys`: the bundle signing key."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from cryptography.hazmat.primitives import serialization

from orchestrator.adapters.file_signer import generate_key_file, load_public_key
from orchestrator.cli.common import JsonFlag, err, fail, out, print_json
from orchestrator.config import Settings
from orchestrator.domain.errors import CertfleetError
from orchestrator.protocol.cose import key_id

__all__ = ["keys_app"]

keys_app = typer.Typer(help="The bundle signing key (ES256, P-256).", no_args_is_help=True)


@keys_app.command("generate")
def generate(
    out_file: Annotated[
        Path | None,
        typer.Option("--out", help="Where to write it (default: CERTFLEET_SIGNING_KEY_FILE)."),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing key.")] = False,
) -> None:
    """Create a P-256 signing key in a file of mode 0600 and print its key id."""
    path = out_file or Settings().signing_key_file
    try:
        public = generate_key_file(path, overwrite=force)
    except CertfleetError as exc:
        raise fail(str(exc)) from None
    err.print(f"wrote {path} (mode 0600)")
    out.print(key_id(public).hex(), highlight=False)


@keys_app.command("export-public")
def export_public(
    key_file: Annotated[
        Path | None,
        typer.Option("--key", help="Key file (default: CERTFLEET_SIGNING_KEY_FILE)."),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Print the public key and key id that devices are provisioned to trust."""
    path = key_file or Settings().signing_key_file
    try:
        public = load_public_key(path)
    except (CertfleetError, OSError) as exc:
        raise fail(str(exc)) from None
    pem = public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
    point = public.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    kid = key_id(public).hex()
    if as_json:
        print_json({"kid": kid, "alg": "ES256", "public_key_pem": pem, "public_point": point.hex()})
    else:
        out.print(f"# key id {kid} (ES256, P-256)", highlight=False)
        out.print(pem, end="", highlight=False)
