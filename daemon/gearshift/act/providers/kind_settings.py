"""Each provider kind's ``settings:`` models, in a module that imports no SDK.

Two callers need them: the provider itself when ``gearshift run`` builds it, and
``gearshift validate`` / ``gearshift config check``, which run in review and CI where the
kind's SDK (an optional extra) may not be installed and its credentials are not present.
So the models live here, next to nothing but pydantic, and check only what the file says:
no environment variable, password file or endpoint is looked at (that is ``SecretRef``'s
job at start-up).

``KIND_SETTINGS`` maps each kind to its provider and blueprint models, in the form
``policy.loader`` takes them so that it can point every problem at its FILE:LINE:COL.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from gearshift.act.providers.common import ProviderSettings, Seconds
from gearshift.policy.loader import KindSettings

_NO_CREDENTIALS = ("put no credentials in the URL; use username (or username_env, "
                   "username_file) and password_file or password_env")


def _http_url(value: str, *, example: str = "https://host.example") -> str:
    """``value`` if it is an http(s) URL without credentials.

    Any ``@`` is refused as credentials, before anything else and without quoting the
    value: a URL may carry a password even when it does not parse (``https//admin:SECRET@h``),
    and refusals reach the log and ``/v1/status``. Values without one are quoted back.
    """
    if "@" in value:
        raise ValueError(_NO_CREDENTIALS)
    try:
        parts = urlsplit(value)
        hostname = parts.hostname
    except ValueError as exc:  # "Invalid IPv6 URL"
        raise ValueError(f"{value!r} is not an http(s) URL such as {example}") from exc
    if parts.scheme not in ("https", "http") or not hostname:
        raise ValueError(f"{value!r} is not an http(s) URL such as {example}")
    return value


def _at_most_one(what: str, **given: object) -> None:
    """The credential ``what`` written in more than one of its forms is an error."""
    if sum(value is not None for value in given.values()) > 1:
        raise ValueError(f"give the {what} once, as one of {', '.join(given)}")


def _check_login(*, username: str | None, username_env: str | None,
                 username_file: Path | None, password_env: str | None,
                 password_file: Path | None) -> None:
    """A user (in exactly one form) and a password from exactly one of env or file."""
    if not any((username, username_env, username_file)):
        raise ValueError("give username, username_env or username_file")
    _at_most_one("username", username=username, username_env=username_env,
                 username_file=username_file)
    if (password_env is None) == (password_file is None):
        raise ValueError("give exactly one of password_env or password_file")


# -- vSphere ------------------------------------------------------------------------------

class VSphereSettings(ProviderSettings):
    """``settings:`` of a ``kind: vsphere`` provider."""

    url: str = Field(description="The vCenter SDK URL, e.g. https://vcenter.example/sdk")
    username: str | None = None
    username_env: str | None = None
    username_file: Path | None = None
    password_env: str | None = None
    password_file: Path | None = None
    insecure: bool = Field(False, description="Skip TLS verification (lab vCenters only)")
    ca_file: Path | None = None
    datacenter: str | None = Field(None, description="Default: the only datacenter")
    cluster: str | None = None
    resource_pool: str | None = Field(None, description="Default: the cluster's root pool")
    folder: str | None = Field(None, description="VM folder path below the datacenter's vm/")
    datastore: str | None = None
    owner: str = Field("gearshift", min_length=1,
                       description="Value of the gearshift.owner mark; one per gearshift")
    request_timeout: Seconds = Field(60.0, gt=0)
    task_timeout: Seconds = Field(900.0, gt=0)
    workers: int = Field(4, ge=1, le=32)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return _http_url(value, example="https://vcenter/sdk")

    @model_validator(mode="after")
    def _credentials(self) -> VSphereSettings:
        _check_login(username=self.username, username_env=self.username_env,
                     username_file=self.username_file, password_env=self.password_env,
                     password_file=self.password_file)
        return self


class VSphereBlueprintSettings(ProviderSettings):
    """What a vSphere blueprint's ``settings:`` may add to the clone."""

    cpus: int | None = Field(None, ge=1)
    memory_mb: int | None = Field(None, ge=128)
    annotation: str | None = None


# -- oVirt --------------------------------------------------------------------------------

class OvirtSettings(ProviderSettings):
    """``settings:`` of a ``kind: ovirt`` provider."""

    url: str = Field(description="The API URL, e.g. https://engine.example/ovirt-engine/api")
    username: str | None = Field(None, description="e.g. gearshift@internal")
    username_env: str | None = None
    username_file: Path | None = None
    password_env: str | None = None
    password_file: Path | None = None
    insecure: bool = False
    ca_file: Path | None = None
    cluster: str
    owner_tag: str = Field("gearshift", min_length=1)
    request_timeout: Seconds = Field(60.0, gt=0)
    start_timeout: Seconds = Field(600.0, gt=0, description="disk copy and start, at most")
    workers: int = Field(4, ge=1, le=32)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return _http_url(value, example="https://engine.example/ovirt-engine/api").rstrip("/")

    @model_validator(mode="after")
    def _credentials(self) -> OvirtSettings:
        _check_login(username=self.username, username_env=self.username_env,
                     username_file=self.username_file, password_env=self.password_env,
                     password_file=self.password_file)
        return self


class OvirtBlueprintSettings(ProviderSettings):
    memory_mb: int | None = Field(None, ge=128)
    cpus: int | None = Field(None, ge=1)


# -- EC2 ----------------------------------------------------------------------------------

class Ec2Settings(ProviderSettings):
    """``settings:`` of a ``kind: ec2`` provider. Credentials: the standard AWS chain
    (environment, shared files, instance role), a ``profile``, or a ``credentials_file`` in
    the AWS shared-credentials format."""

    region: str = Field(min_length=1)
    endpoint_url: str | None = Field(None, description="A VPC endpoint, or a test server")
    profile: str | None = None
    credentials_file: Path | None = None
    subnet_id: str | None = None
    security_group_ids: list[str] = Field(default_factory=list)
    key_name: str | None = None
    instance_profile: str | None = Field(None, description="IAM instance profile name or ARN")
    spot: bool = False
    spot_max_price: str | None = None
    owner: str = Field("gearshift", min_length=1)
    request_timeout: Seconds = Field(30.0, gt=0)


class Ec2BlueprintSettings(ProviderSettings):
    launch_template_id: str | None = None
    launch_template_name: str | None = None
    launch_template_version: str = "$Default"
    subnet_id: str | None = None
    security_group_ids: list[str] | None = None
    spot: bool | None = None
    key_name: str | None = None

    @model_validator(mode="after")
    def _one_template(self) -> Ec2BlueprintSettings:
        if self.launch_template_id and self.launch_template_name:
            raise ValueError("give launch_template_id or launch_template_name, not both")
        return self


# -- bare metal (redfish, foreman) --------------------------------------------------------

class Credentials(ProviderSettings):
    """User name (inline, env or file) and password or token (env or file)."""

    username: str | None = None
    username_env: str | None = None
    username_file: Path | None = None
    password_env: str | None = None
    password_file: Path | None = None

    @model_validator(mode="after")
    def _pairs(self) -> Credentials:
        has_user = any((self.username, self.username_env, self.username_file))
        has_password = self.password_env is not None or self.password_file is not None
        if has_user != has_password:
            raise ValueError("give both a user name and a password (or token), or neither")
        _at_most_one("username", username=self.username, username_env=self.username_env,
                     username_file=self.username_file)
        _at_most_one("password", password_env=self.password_env,
                     password_file=self.password_file)
        return self


class MachineSpec(ProviderSettings):
    """One pre-racked machine."""

    name: str | None = Field(None, description="Default: BMC host and system id")
    bmc: str = Field(description="The BMC's base URL, e.g. https://10.0.0.11")
    system: str = Field("/redfish/v1/Systems/1", description="The ComputerSystem path")
    hostname: str | None = Field(None, description="The node identity it publishes facts "
                                                   "as; default: name")
    foreman_host: str | None = Field(None, description="Foreman host id or name; default: "
                                                       "hostname")

    @field_validator("bmc")
    @classmethod
    def _bmc(cls, value: str) -> str:
        return _http_url(value, example="https://10.0.0.11").rstrip("/")

    @field_validator("system")
    @classmethod
    def _system(cls, value: str) -> str:
        if not value.startswith("/redfish/v1/Systems/"):
            raise ValueError(f"{value!r} is not a Redfish system path (/redfish/v1/Systems/ID)")
        return value.rstrip("/")

    @property
    def id(self) -> str:
        if self.name:
            return self.name
        return f"{urlsplit(self.bmc).hostname}:{self.system.rsplit('/', 1)[-1]}"

    @property
    def identity(self) -> str:
        return self.hostname or self.id


class ForemanSettings(Credentials):
    url: str = Field(description="Foreman's base URL, e.g. https://foreman.example")
    insecure: bool = False
    ca_file: Path | None = None

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return _http_url(value, example="https://foreman.example").rstrip("/")


class BareMetalSettings(Credentials):
    """``settings:`` of a ``kind: redfish`` provider (and the base of ``kind: foreman``'s).
    The top-level credentials are the BMCs' (Redfish basic auth)."""

    machines: list[MachineSpec] = Field(min_length=1)
    insecure: bool = Field(False, description="Skip TLS verification of the BMCs")
    ca_file: Path | None = None
    state_file: Path | None = None
    foreman: ForemanSettings | None = None
    pxe_boot: bool | None = Field(None, description="One-time PXE boot on create; default: "
                                                    "when Foreman is set")
    power_off: str = Field("GracefulShutdown", pattern="^(GracefulShutdown|ForceOff)$")
    request_timeout: Seconds = Field(30.0, gt=0)
    power_timeout: Seconds = Field(300.0, gt=0)
    poll_interval: Seconds = Field(1.0, gt=0)

    @model_validator(mode="after")
    def _unique(self) -> BareMetalSettings:
        ids = [m.id for m in self.machines]
        twice = sorted({i for i in ids if ids.count(i) > 1})
        if twice:
            raise ValueError(f"machine names must be unique: {', '.join(twice)} appear twice")
        return self


class ForemanKindSettings(BareMetalSettings):
    """``settings:`` of a ``kind: foreman`` provider: bare metal that Foreman builds."""

    foreman: ForemanSettings | None = Field(None, validate_default=True)

    @field_validator("foreman")
    @classmethod
    def _needed(cls, value: ForemanSettings | None) -> ForemanSettings | None:
        if value is None:
            raise ValueError("give Foreman's url (and credentials)")
        return value


# Kinds without an entry (simulated) take free-form settings.
KIND_SETTINGS = KindSettings(
    providers={"vsphere": VSphereSettings, "ovirt": OvirtSettings, "ec2": Ec2Settings,
               "redfish": BareMetalSettings, "foreman": ForemanKindSettings},
    blueprints={"vsphere": VSphereBlueprintSettings, "ovirt": OvirtBlueprintSettings,
                "ec2": Ec2BlueprintSettings},
)
