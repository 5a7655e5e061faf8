"""The admin API's enrollment routes: claims, one-time enrollment tokens, "renew now".

Every write goes through the admin service (:class:`~tether.cloud.enrollment.admin.EnrollmentAdmin`,
part of ``AdminOperations``) and is audited there; refusals are its errors, with their codes
and statuses (``api/errors.py``). ``valid_for`` is in hours on the wire and bounded by the
admin service, so the API and the CLI refuse the same values the same way. A claim key made
here is returned once, with the console bundle's key escrow warning; a token likewise once.
"""

# No `from __future__ import annotations`: FastAPI resolves the route signatures at runtime.

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends

from tether.cloud.api.schemas import (
    ClaimCreatedOut,
    ClaimOut,
    EnrollmentTokenOut,
    NewClaimIn,
    NewEnrollmentTokenIn,
    RenewRequestedOut,
)
from tether.cloud.enrollment.admin import valid_for_hours
from tether.cloud.operations import AdminOperations
from tether.cloud.registry import AdminRecord


def enrollment_router(
    ops: AdminOperations,
    *,
    run: Callable[..., Awaitable[Any]],
    admin: Callable[..., Awaitable[AdminRecord]],
) -> APIRouter:
    """The ``/api/v1`` enrollment routes; ``admin`` is the app's authenticated-admin dependency."""
    router = APIRouter(prefix="/api/v1", tags=["enrollment"])
    Admin = Annotated[AdminRecord, Depends(admin)]

    @router.post("/claims", status_code=201, response_model=ClaimCreatedOut)
    async def create_claim(who: Admin, body: NewClaimIn) -> ClaimCreatedOut:
        """A claim certificate (CN=claim.<name>) for a batch; its key once, unless a CSR."""
        bundle = await run(
            ops.create_claim,
            body.name,
            serials=body.serials,
            max_enrollments=body.max_enrollments,
            valid_for=valid_for_hours(body.valid_for),
            csr_pem=None if body.csr_pem is None else body.csr_pem.encode(),
            actor=who.name,
        )
        return ClaimCreatedOut.of_bundle(bundle)

    @router.get("/claims", response_model=list[ClaimOut])
    async def list_claims(who: Admin) -> list[ClaimOut]:
        """Every claim: its policy and how many enrollments it has made."""
        return [ClaimOut.of(c) for c in await run(ops.list_claims)]

    @router.post("/enrollment-tokens", status_code=201, response_model=EnrollmentTokenOut)
    async def create_token(who: Admin, body: NewEnrollmentTokenIn) -> EnrollmentTokenOut:
        """A one-time token that enrolls ``serial`` once; shown in this response only."""
        issued = await run(
            ops.create_enrollment_token,
            body.serial,
            valid_for=valid_for_hours(body.valid_for),
            actor=who.name,
        )
        return EnrollmentTokenOut.of(issued)

    @router.post("/devices/{serial}/renew-now", response_model=RenewRequestedOut, tags=["devices"])
    async def renew_now(who: Admin, serial: str) -> RenewRequestedOut:
        """Ask a device to renew its certificate now (pushed to its live session)."""
        await run(ops.request_renewal, serial, actor=who.name)
        return RenewRequestedOut(serial=serial)

    return router
