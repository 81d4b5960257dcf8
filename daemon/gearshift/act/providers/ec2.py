"""EC2: a node is one instance, launched with the idempotency key as its ClientToken.

* **create**: an instance already tagged with this key (and not terminated) is returned as
  it is; otherwise ``RunInstances`` with ``ClientToken=key`` (EC2 itself then refuses to
  launch a second instance for a retried request), from the blueprint's launch template or
  its AMI + instance type, into the subnet, tagged at launch (``TagSpecifications``, so the
  marks are atomic with the launch), optionally as a one-time spot instance.
* **ownership**: tags ``gearshift-owner``, ``gearshift-provider``, ``gearshift-key``,
  ``gearshift-pool``, ``gearshift-blueprint`` and ``Name``; ``list_owned`` filters on the
  first two and on the live instance states.
* **destroy**: ``TerminateInstances``; an unknown, malformed or already terminated id is
  fine, an instance without our tags is never touched.
* **stop** / **start**: ``StopInstances`` / ``StartInstances`` (the EBS root volume stays;
  an instance still stopping is a transient error, so the guard retries the start); a
  one-time spot instance cannot be stopped. The listing's ``power`` follows the state.

Errors, by EC2 error code:

=============================================  =========================================
``InsufficientInstanceCapacity`` and the other  ``CapacityUnavailable``: AWS has no such
``Insufficient*Capacity`` codes,                instances right now; spill to the next
``InsufficientFreeAddressesInSubnet``,          placement and back off
``SpotMaxPriceTooLow``, ``MaxSpotInstance...``
``InstanceLimitExceeded``,                      ``QuotaExceeded``: the account's limit
``VcpuLimitExceeded``, ``*LimitExceeded``
``RequestLimitExceeded``, ``Throttling``,       ``TransientError``: retry with back-off
``ServiceUnavailable``, ``InternalError``,
any 5xx, timeouts, connection errors
``Unsupported``                                 ``PermanentError``: the instance type (or
                                                spot) is not offered in the subnet's zone;
                                                retrying the same request cannot succeed
                                                until an SRE changes the blueprint, so the
                                                breaker opens and the status says why
``AuthFailure``, ``UnauthorizedOperation``,     ``PermanentError``
``InvalidClientTokenId``, ``Invalid*``, no
credentials, ``IdempotentParameterMismatch``
=============================================  =========================================

botocore's own retries are switched off (one attempt per call): the guard around every
provider already retries transient errors with jittered back-off and a deadline, and two
retry layers would multiply each other's waits.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import structlog
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    HTTPClientError,
    NoCredentialsError,
    PartialCredentialsError,
    ProfileNotFound,
)
from botocore.exceptions import (
    ConnectionError as BotoConnectionError,
)

from gearshift.act.providers.base import (
    BLUEPRINT_TAG,
    KEY_TAG,
    OWNER_TAG,
    POOL_TAG,
    CreateRequest,
    Provider,
    QuotaInfo,
)
from gearshift.act.providers.common import (
    Slots,
    parse_settings,
    redact,
)
from gearshift.act.providers.kind_settings import Ec2BlueprintSettings, Ec2Settings
from gearshift.errors import (
    CapacityUnavailable,
    ConfigError,
    NotFound,
    PermanentError,
    ProviderError,
    QuotaExceeded,
    TransientError,
)
from gearshift.model import Machine, PowerState
from gearshift.policy.schema import ProviderSpec

log = structlog.get_logger(component="gearshift.act.ec2")

PROVIDER_TAG = "gearshift-provider"
LIVE = ["pending", "running", "stopping", "stopped"]

_CAPACITY = {"InsufficientInstanceCapacity", "InsufficientHostCapacity",
             "InsufficientReservedInstanceCapacity", "InsufficientCapacity",
             "InsufficientFreeAddressesInSubnet", "SpotMaxPriceTooLow",
             "MaxSpotInstanceCountExceeded", "InsufficientCapacityOnHost"}
_QUOTA = {"InstanceLimitExceeded", "VcpuLimitExceeded", "ResourceLimitExceeded",
          "VolumeLimitExceeded", "AddressLimitExceeded"}
_TRANSIENT = {"RequestLimitExceeded", "Throttling", "ThrottlingException", "ServiceUnavailable",
              "InternalError", "Unavailable", "RequestTimeout", "RequestExpired",
              "InternalFailure", "EC2ThrottledException"}
_GONE = {"InvalidInstanceID.NotFound", "InvalidInstanceID.Malformed"}
_POWER = {"pending": PowerState.STARTING, "running": PowerState.RUNNING,
          "stopping": PowerState.STOPPING, "stopped": PowerState.STOPPED}


def _tags(items: list[dict[str, str]] | None) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in items or []}


class Ec2Provider(Provider):
    def __init__(self, spec: ProviderSpec, settings: Ec2Settings) -> None:
        super().__init__(spec.name)
        self.spec = spec
        self.settings = settings
        self.slots = Slots(spec.name, max_nodes=spec.quota.max_nodes)
        self.call_timeout = 4 * settings.request_timeout
        self._stack = contextlib.AsyncExitStack()
        self._client: Any = None

    @classmethod
    def from_spec(cls, spec: ProviderSpec) -> Ec2Provider:
        settings = parse_settings(spec, Ec2Settings)
        if settings.credentials_file is not None and not settings.credentials_file.is_file():
            raise ConfigError([f"provider {spec.name}: credentials_file "
                               f"{settings.credentials_file} does not exist"])
        return cls(spec, settings)

    async def client(self) -> Any:
        """The provider's EC2 client (made on first use, inside the running loop)."""
        if self._client is None:
            session = get_session()
            if self.settings.credentials_file is not None:
                session.set_config_variable("credentials_file", str(self.settings.credentials_file))
            if self.settings.profile is not None:
                session.set_config_variable("profile", self.settings.profile)
            config = AioConfig(connect_timeout=self.settings.request_timeout,
                               read_timeout=self.settings.request_timeout,
                               retries={"total_max_attempts": 1, "mode": "standard"})
            try:
                self._client = await self._stack.enter_async_context(session.create_client(
                    "ec2", region_name=self.settings.region,
                    endpoint_url=self.settings.endpoint_url, config=config))
            except (ProfileNotFound, BotoCoreError) as exc:
                raise PermanentError(self.name, f"cannot make an EC2 client: "
                                                f"{type(exc).__name__}") from None
        return self._client

    def _error(self, exc: BaseException, what: str) -> ProviderError:
        if isinstance(exc, ProviderError):
            return exc
        if isinstance(exc, ClientError):
            error = exc.response.get("Error", {})
            code = str(error.get("Code", "Unknown"))
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
            message = redact(str(error.get("Message", "")), [])[:300]
            text = f"{what}: {code}" + (f": {message}" if message else "")
            if code in _CAPACITY or code.startswith("Insufficient"):
                return CapacityUnavailable(self.name, text)
            if code in _QUOTA or (code.endswith("LimitExceeded") and code != "RequestLimitExceeded"):
                return QuotaExceeded(self.name, text)
            if code in _TRANSIENT or status >= 500:
                return TransientError(self.name, text)
            if code in _GONE:
                return NotFound(self.name, text)
            return PermanentError(self.name, text)
        if isinstance(exc, NoCredentialsError | PartialCredentialsError | ProfileNotFound):
            return PermanentError(self.name, f"{what}: no usable AWS credentials "
                                             f"({type(exc).__name__})")
        if isinstance(exc, BotoConnectionError | HTTPClientError | TimeoutError | OSError):
            return TransientError(self.name, f"{what}: {type(exc).__name__}")
        if isinstance(exc, BotoCoreError):
            return PermanentError(self.name, f"{what}: {type(exc).__name__}")
        return PermanentError(self.name, f"{what}: {type(exc).__name__}")

    async def _call(self, what: str, operation: str, **params: Any) -> dict[str, Any]:
        client = await self.client()
        try:
            result: dict[str, Any] = await getattr(client, operation)(**params)
        except Exception as exc:  # every failure is classified, none is lost
            raise self._error(exc, what) from None
        return result

    def _machine(self, instance: dict[str, Any]) -> Machine:
        tags = _tags(instance.get("Tags"))
        launched = instance.get("LaunchTime")
        return Machine(provider=self.name, machine_id=instance["InstanceId"],
                       name=tags.get("Name", instance["InstanceId"]),
                       blueprint=tags.get(BLUEPRINT_TAG), pool=tags.get(POOL_TAG),
                       created_at=launched.timestamp() if launched else None,
                       key=tags.get(KEY_TAG),
                       power=_POWER.get(instance.get("State", {}).get("Name", ""),
                                        PowerState.UNKNOWN))

    async def _describe(self, what: str, *filters: dict[str, Any]) -> list[dict[str, Any]]:
        base = [{"Name": f"tag:{OWNER_TAG}", "Values": [self.settings.owner]},
                {"Name": f"tag:{PROVIDER_TAG}", "Values": [self.name]},
                {"Name": "instance-state-name", "Values": LIVE}]
        found: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            params: dict[str, Any] = {"Filters": base + list(filters), "MaxResults": 1000}
            if token:
                params["NextToken"] = token
            page = await self._call(what, "describe_instances", **params)
            for reservation in page.get("Reservations", []):
                found.extend(reservation.get("Instances", []))
            token = page.get("NextToken")
            if not token:
                return found

    def _launch_params(self, request: CreateRequest) -> dict[str, Any]:
        blueprint = request.blueprint
        try:
            extra = Ec2BlueprintSettings.model_validate(blueprint.settings)
        except ValueError as exc:
            raise PermanentError(self.name, f"blueprint {blueprint.name} settings: "
                                            f"{str(exc).splitlines()[0]}") from None
        tags = {"Name": request.name, OWNER_TAG: self.settings.owner, PROVIDER_TAG: self.name,
                KEY_TAG: request.key, POOL_TAG: request.pool, BLUEPRINT_TAG: blueprint.name}
        tag_list = [{"Key": k, "Value": v} for k, v in tags.items()]
        params: dict[str, Any] = {
            "MinCount": 1, "MaxCount": 1, "ClientToken": request.key,
            "TagSpecifications": [{"ResourceType": "instance", "Tags": tag_list},
                                  {"ResourceType": "volume", "Tags": tag_list}],
        }
        if extra.launch_template_id or extra.launch_template_name:
            template = {"Version": extra.launch_template_version}
            if extra.launch_template_id:
                template["LaunchTemplateId"] = extra.launch_template_id
            else:
                template["LaunchTemplateName"] = extra.launch_template_name or ""
            params["LaunchTemplate"] = template
        elif not blueprint.image or not blueprint.instance_type:
            raise PermanentError(self.name, f"blueprint {blueprint.name} needs image and "
                                            f"instance_type, or a launch template")
        if blueprint.image:
            params["ImageId"] = blueprint.image
        if blueprint.instance_type:
            params["InstanceType"] = blueprint.instance_type
        subnet = extra.subnet_id or self.settings.subnet_id
        if subnet:
            params["SubnetId"] = subnet
        groups = extra.security_group_ids or self.settings.security_group_ids
        if groups:
            params["SecurityGroupIds"] = groups
        key_name = extra.key_name or self.settings.key_name
        if key_name:
            params["KeyName"] = key_name
        if self.settings.instance_profile:
            profile = self.settings.instance_profile
            params["IamInstanceProfile"] = ({"Arn": profile} if profile.startswith("arn:")
                                            else {"Name": profile})
        if blueprint.user_data:
            params["UserData"] = blueprint.user_data  # botocore base64-encodes it
        spot = self.settings.spot if extra.spot is None else extra.spot
        if spot:
            options: dict[str, Any] = {"SpotInstanceType": "one-time",
                                       "InstanceInterruptionBehavior": "terminate"}
            if self.settings.spot_max_price:
                options["MaxPrice"] = self.settings.spot_max_price
            params["InstanceMarketOptions"] = {"MarketType": "spot", "SpotOptions": options}
        return params

    # -- the contract -----------------------------------------------------------------
    async def create(self, request: CreateRequest) -> Machine:
        what = f"create {request.name}"
        found = await self._describe(what, {"Name": f"tag:{KEY_TAG}", "Values": [request.key]})
        if found:
            return self._machine(found[0])
        params = self._launch_params(request)
        async with self.slots.claim(self.list_owned):
            started = time.monotonic()
            result = await self._call(what, "run_instances", **params)
        instances = result.get("Instances") or []
        if not instances:
            raise TransientError(self.name, f"{what}: RunInstances returned no instance")
        machine = self._machine(instances[0])
        log.info("instance launched", provider=self.name, instance=machine.machine_id,
                 name=request.name, pool=request.pool, spot="InstanceMarketOptions" in params,
                 seconds=round(time.monotonic() - started, 3))
        return machine

    async def list_owned(self) -> list[Machine]:
        return self.slots.counted([self._machine(i) for i in await self._describe("list")])

    async def _instance(self, what: str, machine_id: str) -> dict[str, Any] | None:
        """The live instance ``machine_id`` (None: unknown or terminated); PermanentError
        when it is not ours."""
        try:
            page = await self._call(what, "describe_instances", InstanceIds=[machine_id])
        except NotFound:
            return None
        instances: list[dict[str, Any]] = [
            i for r in page.get("Reservations", []) for i in r.get("Instances", [])]
        if not instances or instances[0].get("State", {}).get("Name") in ("terminated",
                                                                           "shutting-down"):
            return None
        tags = _tags(instances[0].get("Tags"))
        if tags.get(OWNER_TAG) != self.settings.owner or tags.get(PROVIDER_TAG) != self.name:
            raise PermanentError(self.name, f"refusing to {what}: it does not carry "
                                            f"{OWNER_TAG}={self.settings.owner}")
        return instances[0]

    async def destroy(self, machine_id: str) -> None:
        what = f"destroy {machine_id}"
        if await self._instance(what, machine_id) is None:
            return
        try:
            await self._call(what, "terminate_instances", InstanceIds=[machine_id])
        except NotFound:
            return
        self.slots.released()
        log.info("instance terminated", provider=self.name, instance=machine_id)

    async def _power(self, machine_id: str, *, on: bool) -> None:
        """``StartInstances`` or ``StopInstances``, unless it is there or on its way; like
        ``RunInstances``, returns once EC2 has taken the request (``list_owned`` shows it
        ``starting``/``stopping`` until it is done)."""
        what = f"{'start' if on else 'stop'} {machine_id}"
        instance = await self._instance(what, machine_id)
        if instance is None:
            raise NotFound(self.name, f"{what}: no such instance")
        if _POWER.get(instance.get("State", {}).get("Name", "")) in (
                (PowerState.RUNNING, PowerState.STARTING) if on
                else (PowerState.STOPPED, PowerState.STOPPING)):
            return
        if not on and instance.get("InstanceLifecycle") == "spot":
            raise PermanentError(self.name, f"{what}: a one-time spot instance cannot be "
                                            f"stopped")
        try:
            await self._call(what, "start_instances" if on else "stop_instances",
                             InstanceIds=[machine_id])
        except PermanentError as exc:
            if "IncorrectInstanceState" in exc.message:  # still stopping (or starting)
                raise TransientError(self.name, exc.message) from None
            raise
        log.info("instance started" if on else "instance stopped", provider=self.name,
                 instance=machine_id)

    async def stop(self, machine_id: str) -> None:
        await self._power(machine_id, on=False)

    async def start(self, machine_id: str) -> None:
        await self._power(machine_id, on=True)

    async def quota(self) -> QuotaInfo:
        return QuotaInfo(max_nodes=self.spec.quota.max_nodes, used=len(await self.list_owned()))

    async def close(self) -> None:
        self._client = None
        await self._stack.aclose()
