"""The ``devid`` command line: nouns then verbs, ``--json`` everywhere, stable exit codes.

Exit codes (DESIGN.md section 4): 0 success; 1 a check failed or a thing was not found;
2 bad input or usage; 3 environment (module, token, PIN, network, AWS credentials);
4 conflict (exists, duplicate, quota). Errors are one line on stderr, never a traceback
(set ``DEVID_DEBUG=1`` to see one), and never contain the parsed arguments, which may
hold secrets. Ctrl-C and SIGTERM (``systemctl stop``, ``timeout``, a cancelled CI job)
unwind the step in progress — files put back, transactions rolled back — and exit 130 / 143.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Sequence

import click

from devid.cli._common import redact
from devid.errors import DevidError
from hsm.errors import HsmError, one_line

EXIT_OK, EXIT_CHECK, EXIT_USAGE, EXIT_ENV, EXIT_CONFLICT = 0, 1, 2, 3, 4
_STOPPED: dict[int, str] = {
    signal.SIGINT: "interrupted (Ctrl-C)",
    signal.SIGTERM: "terminated (SIGTERM)",
}


class Stopped(BaseException):
    """Raised in the main thread on Ctrl-C or SIGTERM, so that every ``except BaseException``
    / ``finally`` on the way out undoes the step in progress. Not a KeyboardInterrupt: click
    would turn that into its own two-line "Aborted"."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.exit_code = 128 + signum
        self.message = (
            f"{_STOPPED.get(signum, f'signal {signum}')}; the step in progress was undone"
        )


def _on_stop(signum: int, _frame: object) -> None:
    for each in _STOPPED:  # a second signal must not cut the undo short
        signal.signal(each, signal.SIG_IGN)
    raise Stopped(signum)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="devid")
def cli() -> None:
    """devid: device identity and key management.

    SSH keys for CodeCommit users, EC2 key pairs, and X.509 device certificates whose keys
    live on PKCS#11 tokens. A key reference (--key, --ca-key) is a file path or a pkcs11:
    URI such as 'pkcs11:token=factory;object=device-key'.

    Exit codes: 0 ok, 1 check failed or not found, 2 bad input, 3 environment, 4 conflict;
    130 / 143 stopped by Ctrl-C / SIGTERM (the step in progress undone).
    """


def _register() -> None:
    from devid.cli import hsm as hsm_cli
    from devid.cli import key as key_cli

    cli.add_command(key_cli.key)
    cli.add_command(hsm_cli.hsm)
    from devid.cli import ec2 as ec2_cli
    from devid.cli import key_convert  # noqa: F401  (adds 'devid key convert')

    cli.add_command(ec2_cli.ec2)
    from devid.cli import ssh as ssh_cli

    cli.add_command(ssh_cli.ssh)
    from devid.cli import device as device_cli

    cli.add_command(device_cli.device)
    from devid.cli import iot as iot_cli
    from devid.cli import iot_aws  # noqa: F401  (adds 'devid iot register-ca', ...)

    cli.add_command(iot_cli.iot)

    from devid.cli import ca as ca_cli
    from devid.cli import cert as cert_cli
    from devid.cli import crl as crl_cli
    from devid.cli import csr as csr_cli

    cli.add_command(ca_cli.ca)
    cli.add_command(csr_cli.csr)
    cli.add_command(cert_cli.cert)
    cli.add_command(crl_cli.crl)
    from devid.cli import (
        cert_renewal,  # noqa: F401  (adds 'devid cert needs-renewal')
        device_provision,  # noqa: F401  (adds 'devid device provision')
    )
    from devid.cli import rotate as rotate_cli

    cli.add_command(rotate_cli.rotate)


_register()


def _fail(message: str, code: int) -> int:
    # One line, whatever the message holds (paths and labels come from users), no PIN.
    line = " ".join(one_line(message).split())
    click.echo(f"devid: error: {redact(line)}", err=True)
    return code


def run(argv: Sequence[str] | None = None) -> int:
    """Run the CLI with *argv* and return the exit code (used by tests in-process)."""
    try:
        cli.main(
            args=list(argv) if argv is not None else None, prog_name="devid", standalone_mode=False
        )
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.exceptions.NoArgsIsHelpError as exc:
        click.echo(exc.ctx.get_help() if exc.ctx else "", err=True)
        return EXIT_USAGE
    except click.Abort:
        return _fail("aborted", EXIT_USAGE)
    except click.ClickException as exc:  # click's own text: its line breaks become spaces
        return _fail(" ".join(exc.format_message().split()), exc.exit_code)
    except (DevidError, HsmError) as exc:
        if os.environ.get("DEVID_DEBUG"):
            raise
        return _fail(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
    except Stopped as exc:
        return _fail(exc.message, exc.exit_code)
    except BrokenPipeError:
        return EXIT_OK
    except (SystemExit, GeneratorExit):
        raise
    except BaseException as exc:  # Exception, and pyo3's PanicException (a BaseException)
        if os.environ.get("DEVID_DEBUG"):
            raise
        kind = type(exc).__name__
        return _fail(f"unexpected {kind}; rerun with DEVID_DEBUG=1 and report it", EXIT_ENV)
    return EXIT_OK


def main() -> None:
    for signum in _STOPPED:
        if signal.getsignal(signum) is not signal.SIG_IGN:  # e.g. a job started with '&'
            signal.signal(signum, _on_stop)
    sys.exit(run())
