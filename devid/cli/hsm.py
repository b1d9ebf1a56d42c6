"""``devid hsm``: tokens and the keys on them."""

from __future__ import annotations

import dataclasses

import click

import hsm as backend
from devid.cli._common import emit, examples, json_option, secret
from devid.errors import BadInput


@click.group()
def hsm() -> None:
    """PKCS#11 tokens: list tokens and keys, delete keys, initialise SoftHSM tokens.

    The module is DEVID_PKCS11_MODULE or an installed SoftHSM2; the PIN comes from the URI's
    pin-source=file:..., DEVID_PKCS11_PIN, or a prompt.
    """


@hsm.command()
@click.option("--module", "module_path", help="PKCS#11 module (else DEVID_PKCS11_MODULE).")
@json_option
@examples("devid hsm tokens\ndevid hsm tokens --json")
def tokens(module_path: str | None, as_json: bool) -> None:
    """List the initialised tokens."""
    found = backend.list_tokens(module_path)
    emit(
        [dataclasses.asdict(t) for t in found],
        as_json=as_json,
        text=[f"{t.label}\tserial={t.serial}\t{t.model}\t{t.uri}" for t in found]
        or ["(no initialised tokens)"],
    )


def _flag(value: bool | None, name: str) -> str:
    return name if value else f"!{name}"


@hsm.command()
@click.argument("uri", metavar="URI")
@json_option
@examples(
    "devid hsm keys 'pkcs11:token=factory'\ndevid hsm keys 'pkcs11:token=factory;type=private'"
)
def keys(uri: str, as_json: bool) -> None:
    """List the key (and certificate) objects on the token URI names."""
    found = backend.list_keys(uri)
    lines = []
    for k in found:
        flags = ""
        if k.object_class == "private":
            flags = " ".join(
                _flag(v, n)
                for v, n in (
                    (k.sensitive, "sensitive"),
                    (k.always_sensitive, "always_sensitive"),
                    (not k.extractable, "not_extractable"),
                    (k.never_extractable, "never_extractable"),
                    (k.local, "local"),
                )
            )
        lines.append(f"{k.object_class:8} {k.key_type:8} {k.size:8} {k.label}  {flags}".rstrip())
        lines.append(f"         {k.uri}")
    emit([dataclasses.asdict(k) for k in found], as_json=as_json, text=lines or ["(no objects)"])


def _text(value: bytes, what: str) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError as exc:  # never quote the content: it is a secret
        raise BadInput(f"the {what} is not UTF-8 text") from exc


@hsm.command("init-token")
@click.option("--label", required=True, help="Label of the new token.")
@click.option("--pin-file", type=click.Path(dir_okay=False), help="User PIN file.")
@click.option("--so-pin-file", type=click.Path(dir_okay=False), help="Security officer PIN file.")
@json_option
@examples(
    """
DEVID_PKCS11_PIN=1234 DEVID_PKCS11_SO_PIN=5678 devid hsm init-token --label factory
devid hsm init-token --label factory --pin-file pin.txt --so-pin-file so-pin.txt --json
"""
)
def init_token(label: str, pin_file: str | None, so_pin_file: str | None, as_json: bool) -> None:
    """Initialise a new token in the module's free slot (SoftHSM2: tests, demos, factories).

    PINs come from --pin-file/--so-pin-file, DEVID_PKCS11_PIN/DEVID_PKCS11_SO_PIN, or a
    prompt; never from the command line, and devid passes them to no other program.
    """
    pin = secret(
        file=pin_file, env="DEVID_PKCS11_PIN", prompt="New user PIN", what="PIN", confirm=True
    )
    so_pin = secret(
        file=so_pin_file,
        env="DEVID_PKCS11_SO_PIN",
        prompt="New SO PIN",
        what="SO PIN",
        confirm=True,
    )
    if not pin or not so_pin:
        raise BadInput(
            "no PIN: give --pin-file and --so-pin-file, or set DEVID_PKCS11_PIN "
            "and DEVID_PKCS11_SO_PIN"
        )
    info = backend.init_softhsm_token(
        label, so_pin=_text(so_pin, "SO PIN"), user_pin=_text(pin, "PIN")
    )
    emit(dataclasses.asdict(info), as_json=as_json, text=info.uri)


@hsm.command()
@click.argument("uri", metavar="URI")
@json_option
@examples(
    "devid hsm delete 'pkcs11:token=factory;object=old-key'\n"
    "devid hsm delete 'pkcs11:token=factory;object=old-key;type=cert'"
)
def delete(uri: str, as_json: bool) -> None:
    """Delete the key pair (private, public, certificate objects) URI names.

    With type=cert or type=public in the URI, only those objects are deleted.
    """
    count = backend.delete_key(uri)
    emit(
        {"deleted_objects": count, "uri": str(backend.parse_uri(uri))},
        as_json=as_json,
        text=f"deleted {count} objects",
    )
