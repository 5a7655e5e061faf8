"""Enrollment inside ``tether cloud serve``: the MQTT handler on the gateway and the EST
listener, started after the gateway and stopped before it (a ``Companion``), in the one
gateway process or in each gateway worker (:mod:`tether.cloud.workers`)."""

from __future__ import annotations

from pathlib import Path

from tether.cloud.enrollment.est import EstServer
from tether.cloud.enrollment.hook import HookRunner, HttpHook, ProvisioningHook, load_entry_point
from tether.cloud.enrollment.mqtt import MqttEnrollment
from tether.cloud.enrollment.service import EnrollmentService
from tether.cloud.enrollment.settings import EnrollmentOptions
from tether.cloud.operations import check_online_ca
from tether.cloud.service import CloudService
from tether.cloud.settings import CloudSettings
from tether.errors import ConfigurationError
from tether.pki import IssuingCA
from tether.pki.store import CaDirectory


def hook_from(options: EnrollmentOptions) -> HookRunner | None:
    """The provisioning hook cloud.json names (entry point or URL), under its deadline."""
    if options.hook is not None and options.hook_url is not None:
        raise ConfigurationError(
            "enrollment.hook and enrollment.hook_url are both set; name one provisioning hook",
            code="hook_ambiguous",
        )
    hook: ProvisioningHook | None = None
    if options.hook is not None:
        hook = load_entry_point(options.hook)
    elif options.hook_url is not None:
        hook = HttpHook(options.hook_url, timeout=options.hook_deadline)
    return None if hook is None else HookRunner(hook, deadline=options.hook_deadline)


class EnrollmentRuntime:
    """MQTT enrollment on ``service``'s gateway and, if enabled, the EST listener."""

    def __init__(
        self,
        settings: CloudSettings,
        service: CloudService,
        operational_ca: IssuingCA,
        *,
        est: bool = True,
    ) -> None:
        options = settings.enrollment
        self.enrollment = EnrollmentService(
            service.registry,
            operational_ca,
            validity=options.validity,
            overlap=options.overlap,
            hook=hook_from(options),
            chain_extra=(settings.root_certificate(),),
            policy=service.policy,  # the gateway's live policy decides ``enroll``
        )
        self.mqtt = MqttEnrollment(self.enrollment)
        self.service = service
        self.est: EstServer | None = None
        if options.est_enabled and est:
            self.est = EstServer(
                self.enrollment,
                service.authority,
                certificate_chain=settings.server_chain,
                private_key=settings.server_key,
                host=options.est_host,
                port=options.est_port,
            )

    async def start(self) -> int:
        """Attach the MQTT handler, start EST; returns the EST port (0 without EST)."""
        self.mqtt.attach(self.service.gateway.broker)
        return 0 if self.est is None else await self.est.start()

    async def stop(self) -> None:
        """Stop EST and the MQTT handler."""
        if self.est is not None:
            await self.est.stop()
        await self.mqtt.close()
        if self.enrollment.hook is not None:
            self.enrollment.hook.close()


def enrollment_companions(
    settings: CloudSettings, service: CloudService, passphrase: str | None, *, est: bool = True
) -> list[EnrollmentRuntime]:
    """Enrollment (MQTT ``$tether/`` topics and EST) when ``enrollment.enabled`` is set.

    With several gateway workers every worker answers ``$tether/`` requests on its own
    sessions and only the first listens for EST (``est``): one port, one listener, and a
    worker restarted by the supervisor binds it again.
    """
    if not settings.enrollment.enabled:
        return []
    directory = settings.enrollment.operational_ca or settings.api.device_ca
    if directory is None or passphrase is None:
        raise ConfigurationError(
            "enrollment needs the operational CA: set enrollment.operational_ca (or "
            "api.device_ca) in cloud.json and give its passphrase",
            code="enrollment_ca_missing",
        )
    ca = CaDirectory.open(Path(directory)).issuing(passphrase)
    check_online_ca(service.registry, ca)
    return [EnrollmentRuntime(settings, service, ca, est=est)]
