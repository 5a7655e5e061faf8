"""The provisioning hook: an operator's code that may refuse an enrollment, pick its serial and
set attributes, before anything is signed.

Two forms, one contract (:class:`ProvisioningHook`): a Python entry point named in
``cloud.json`` (``enrollment.hook``: ``"package.module:function"``), called in process, or an
HTTP endpoint (``enrollment.hook_url``) that gets the request as JSON and answers a verdict as
JSON. Either way it runs under a deadline (``enrollment.hook_deadline``, seconds; AWS's
pre-provisioning hook is a fixed 5 s, ours is the operator's choice): a hook that does not
answer in time, raises, or answers nonsense is a clear refusal (``hook_timeout``,
``hook_failed``) and nothing is issued. A late in-process hook keeps running on its thread
(Python cannot kill a thread) but its answer is ignored; the hook threads are bounded
(``HOOK_THREADS``), so a hook that hangs forever stalls only further enrollments, which time out.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import httpx

from tether.cloud.registry.labels import check_labels
from tether.errors import ConfigurationError, PermissionDeniedError, TetherError

HOOK_THREADS = 4
MAX_ATTRIBUTES = 32
MAX_ATTRIBUTE_CHARS = 256


class HookRefusedError(PermissionDeniedError):
    """The provisioning hook refused this enrollment."""

    code = "hook_refused"


class HookTimeoutError(PermissionDeniedError):
    """The provisioning hook did not answer within its deadline; nothing was issued."""

    code = "hook_timeout"


class HookFailedError(PermissionDeniedError):
    """The provisioning hook raised or answered something that is not a verdict."""

    code = "hook_failed"


class HookConfigurationError(ConfigurationError):
    """The hook named in cloud.json cannot be loaded."""

    code = "hook_not_loadable"


@dataclass(frozen=True, slots=True)
class HookRequest:
    """What the hook is told: the asked-for serial (may be None), who asks, the key's hash."""

    serial: str | None
    credential: str  # factory, claim or token
    claim: str | None
    birth_certificate: str | None  # fingerprint of the certificate the request came with
    public_key_sha256: str


@dataclass(frozen=True, slots=True)
class HookVerdict:
    """The hook's answer: allow or not, the serial it picks (None: keep), and the device's
    attributes and groups (written to the device's labels, which policies substitute)."""

    allow: bool
    serial: str | None = None
    attributes: Mapping[str, str] = field(default_factory=dict)
    reason: str = ""
    groups: tuple[str, ...] = ()


class ProvisioningHook(Protocol):
    """Decides one enrollment; sync, may block (it runs on a hook thread under a deadline)."""

    def __call__(self, request: HookRequest) -> HookVerdict:
        """The verdict for ``request``."""
        ...


def verdict_from(value: Any) -> HookVerdict:
    """A HookVerdict from what a hook returned (a HookVerdict or its JSON form)."""
    if isinstance(value, HookVerdict):
        raw: Mapping[str, Any] = asdict(value)
    elif isinstance(value, Mapping):
        raw = value
    else:
        raise HookFailedError(f"the provisioning hook returned {type(value).__name__}, no verdict")
    allow, serial = raw.get("allow"), raw.get("serial")
    attributes, reason = raw.get("attributes") or {}, raw.get("reason") or ""
    if not isinstance(allow, bool) or not (serial is None or isinstance(serial, str)):
        raise HookFailedError("the hook's verdict needs allow (bool) and serial (string or null)")
    if (
        not isinstance(attributes, Mapping)
        or len(attributes) > MAX_ATTRIBUTES
        or not all(
            isinstance(k, str) and isinstance(v, str) and len(k) + len(v) <= MAX_ATTRIBUTE_CHARS
            for k, v in attributes.items()
        )
    ):
        raise HookFailedError(
            f"the hook's attributes must map at most {MAX_ATTRIBUTES} strings to strings"
        )
    groups = raw.get("groups") or ()
    if not isinstance(groups, list | tuple) or not all(isinstance(g, str) for g in groups):
        raise HookFailedError("the hook's groups must be a list of strings")
    try:
        check_labels(groups, attributes)
    except TetherError as exc:
        raise HookFailedError(f"the hook's labels are not valid: {exc.message}") from None
    return HookVerdict(allow, serial, dict(attributes), str(reason)[:200], tuple(groups))


def load_entry_point(spec: str) -> ProvisioningHook:
    """The callable named ``package.module:function`` (HookConfigurationError if missing)."""
    module_name, _, attribute = spec.partition(":")
    try:
        target: Any = importlib.import_module(module_name)
        for part in attribute.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError, ValueError) as exc:
        raise HookConfigurationError(
            f"cannot load the provisioning hook {spec!r} ({exc}); name it as "
            "'package.module:function' in enrollment.hook"
        ) from None
    if not callable(target) or not attribute:
        raise HookConfigurationError(f"the provisioning hook {spec!r} is not a function")
    return target  # type: ignore[no-any-return]


class HttpHook:
    """A hook at an HTTP(S) URL: POST the request as JSON, read the verdict as JSON."""

    def __init__(self, url: str, *, timeout: float) -> None:
        self.url = url
        self.timeout = timeout

    def __call__(self, request: HookRequest) -> HookVerdict:
        """POST ``request``; a non-2xx answer or a body that is not a verdict is a failure."""
        response = httpx.post(self.url, json=asdict(request), timeout=self.timeout)
        if response.status_code // 100 != 2:
            raise HookFailedError(f"the HTTP hook answered {response.status_code}")
        return verdict_from(response.json())


@dataclass(frozen=True, slots=True)
class HookOutcome:
    """A verdict and how long the hook took (for the audit row)."""

    verdict: HookVerdict
    latency_ms: int


class HookRunner:
    """Runs one hook under a deadline on its own bounded threads."""

    def __init__(self, hook: ProvisioningHook, *, deadline: float) -> None:
        self.hook = hook
        self.deadline = deadline
        self._threads = ThreadPoolExecutor(HOOK_THREADS, thread_name_prefix="tether-hook")

    def run(self, request: HookRequest) -> HookOutcome:
        """The hook's verdict; HookTimeoutError, HookFailedError or HookRefusedError otherwise.

        The refusal carries the outcome as ``outcome`` so the caller can audit its latency.
        """
        started = time.monotonic()
        future = self._threads.submit(self.hook, request)

        def elapsed() -> int:
            return int((time.monotonic() - started) * 1000)

        try:
            verdict = verdict_from(future.result(timeout=self.deadline))
        except FutureTimeout:
            future.cancel()
            raise _with_latency(
                HookTimeoutError(
                    f"the provisioning hook did not answer within {self.deadline:g} s; nothing "
                    "was issued (retry, or raise enrollment.hook_deadline)"
                ),
                elapsed(),
            ) from None
        except HookFailedError as exc:
            raise _with_latency(exc, elapsed()) from None
        except TetherError as exc:
            failed = HookFailedError(f"the hook failed: {exc.message}")
            raise _with_latency(failed, elapsed()) from None
        except Exception as exc:
            raise _with_latency(
                HookFailedError(
                    f"the provisioning hook raised {type(exc).__name__}: {exc}; nothing was issued"
                ),
                elapsed(),
            ) from None
        outcome = HookOutcome(verdict, elapsed())
        if not verdict.allow:
            raise _with_latency(
                HookRefusedError(
                    "the provisioning hook refused this enrollment: "
                    f"{verdict.reason or 'no reason given'}"
                ),
                outcome.latency_ms,
            )
        return outcome

    def close(self) -> None:
        """Stop taking hook calls (a hook still running finishes on its own)."""
        self._threads.shutdown(wait=False, cancel_futures=True)


def _with_latency(error: TetherError, latency_ms: int) -> TetherError:
    error.latency_ms = latency_ms  # type: ignore[attr-defined]
    return error
