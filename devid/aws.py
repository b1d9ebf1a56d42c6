"""boto3 clients with devid's options and errors.

Every AWS command takes ``--profile``, ``--region`` and ``--endpoint-url`` and otherwise
follows boto3's default credential chain. botocore's exceptions are turned into devid's
error tree here, once: credentials and network problems are environment errors (exit 3),
AWS error codes are mapped by :func:`aws_error` with a per-call table.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from devid.errors import BadInput, DevidError, EnvironmentProblem


@dataclass(frozen=True)
class AwsOptions:
    profile: str | None = None
    region: str | None = None
    endpoint_url: str | None = None


def client(service: str, options: AwsOptions) -> Any:
    """A boto3 client for *service*; fails with an install hint when boto3 is missing."""
    try:
        import boto3
        import botocore.exceptions
    except ImportError as exc:
        raise EnvironmentProblem("boto3 is not installed: pip install 'devid[aws]'") from exc
    _check_options(options)
    try:
        session = boto3.session.Session(profile_name=options.profile, region_name=options.region)
        if not session.region_name:
            raise EnvironmentProblem("no AWS Region: pass --region or set AWS_DEFAULT_REGION")
        return session.client(service, endpoint_url=options.endpoint_url)
    except botocore.exceptions.ProfileNotFound as exc:
        raise EnvironmentProblem(f"AWS profile not found: {options.profile}") from exc
    except botocore.exceptions.InvalidRegionError as exc:
        # From --region, AWS_REGION/AWS_DEFAULT_REGION or the profile alike.
        region = exc.kwargs.get("region_name", options.region)
        raise BadInput(f"{region!r} is not an AWS Region name (like us-east-1)") from exc
    except botocore.exceptions.InvalidEndpointConfigurationError as exc:
        raise BadInput(f"unusable AWS endpoint configuration: {exc}") from exc
    except ValueError as exc:  # botocore's own endpoint checks ("Invalid endpoint: ...")
        raise BadInput(
            f"cannot make an AWS {service} client: {exc}",
            hint="check --region and --endpoint-url",
        ) from exc


def _check_options(options: AwsOptions) -> None:
    """Refuse options boto3 would only fail on later, or with a less clear message."""
    if options.region is not None and not options.region.strip():
        raise BadInput("--region is empty; give a Region name like us-east-1")
    url = options.endpoint_url
    if url is None:
        return
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises ValueError for a port out of range or not a number
    except ValueError as exc:
        raise BadInput(f"--endpoint-url {url!r} is not a URL ({exc})") from exc
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise BadInput(
            f"--endpoint-url {url!r} is not an http(s) URL",
            hint="give one like https://host or http://127.0.0.1:5000",
        )


@contextmanager
def aws_errors(action: str, codes: Mapping[str, DevidError] | None = None) -> Iterator[None]:
    """Translate botocore exceptions raised inside the block into devid errors.

    *codes* maps AWS error codes (``NoSuchEntity``, ``InvalidKeyPair.Duplicate`` ...) to the
    devid error to raise instead; other service errors become :class:`EnvironmentProblem`.
    """
    import botocore.exceptions as bx

    try:
        yield
    except bx.ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        message = str(exc.response.get("Error", {}).get("Message", "")).strip()
        if codes and code in codes:
            raise codes[code] from exc
        raise EnvironmentProblem(f"{action}: AWS said {code}: {message}") from exc
    except (bx.NoCredentialsError, bx.PartialCredentialsError) as exc:
        raise EnvironmentProblem(
            f"{action}: no AWS credentials; configure a profile or set AWS_ACCESS_KEY_ID"
        ) from exc
    except bx.EndpointConnectionError as exc:
        raise EnvironmentProblem(f"{action}: cannot reach AWS endpoint ({exc})") from exc
    except bx.BotoCoreError as exc:
        raise EnvironmentProblem(f"{action}: {exc}") from exc
