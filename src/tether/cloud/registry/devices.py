"""Devices: registration, status, last seen, and the serial's binding to one CA.

A serial belongs to the CA that first vouched for it (invariant 11): ``bind`` is the one
place that binding is made or refused, and :meth:`Devices.rebind_device` the one explicit,
audited way it changes.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from sqlalchemy import case, func, literal, select, update
from sqlalchemy.orm import Session

from tether.cloud.registry.audit import AuditAction, change_status, write_audit
from tether.cloud.registry.base import (
    RegistryBase,
    check_actor,
    check_fingerprint,
    check_page,
    check_serial,
    flush_or,
    load_one,
    page_of,
)
from tether.cloud.registry.cas import load_ca
from tether.cloud.registry.convert import device_record
from tether.cloud.registry.errors import (
    CAStateError,
    DeviceExistsError,
    DeviceNotFoundError,
    InvalidRegistryInputError,
    SerialBoundError,
)
from tether.cloud.registry.models import CAModel, DeviceModel, UTCDateTime
from tether.cloud.registry.records import (
    CARole,
    CAStatus,
    DeviceRecord,
    DeviceStatus,
    Page,
    Provisioning,
)

# What ``list_devices(order=...)`` may sort by: the only columns that reach ORDER BY.
DEVICE_ORDERS = {
    "serial": DeviceModel.serial,
    "last_seen": DeviceModel.last_seen,
    "status": DeviceModel.status,
}


class Devices(RegistryBase):
    """The devices the registry knows, and which CA each belongs to."""

    def add_device(self, serial: str, *, provisioning: Provisioning, actor: str) -> DeviceRecord:
        """Register an enabled device. Raises DeviceExistsError on a duplicate serial."""
        actor = check_actor(actor)
        serial = check_serial(serial)
        provisioning = Provisioning(provisioning)
        now = self._clock()
        with self._write() as session:
            model = insert_device(session, serial, provisioning, actor, now)
            return device_record(model)

    def get_device(self, serial: str) -> DeviceRecord:
        """The device with this serial. Raises DeviceNotFoundError."""
        serial = check_serial(serial)
        with self._read() as session:
            return device_record(load_device(session, serial))

    def set_device_status(self, serial: str, status: DeviceStatus, *, actor: str) -> DeviceRecord:
        """Enable or disable a device; a disabled device is refused at the next handshake.

        Setting the status it already has changes nothing and writes no audit row.
        """
        actor = check_actor(actor)
        serial = check_serial(serial)
        status = DeviceStatus(status)
        now = self._clock()
        with self._write() as session:
            model = load_device(session, serial)
            change_status(
                session, model, "status", status,
                now=now, actor=actor, action=AuditAction.DEVICE_STATUS, target=serial,
            )  # fmt: skip
            return device_record(model)

    def list_devices(
        self,
        *,
        search: str | None = None,
        status: DeviceStatus | None = None,
        offset: int = 0,
        limit: int = 50,
        order: str = "serial",
    ) -> Page[DeviceRecord]:
        """Devices in ``order`` (a key of ``DEVICE_ORDERS``, ``-`` for descending: ``serial``
        by default), ties by serial; ``search`` matches any part of the serial, literally.

        Only whitelisted columns sort, so ``order`` never reaches SQL as text.
        """
        check_page(offset, limit)
        column = DEVICE_ORDERS.get(order.removeprefix("-"))
        if column is None:
            raise InvalidRegistryInputError(
                f"Devices sort by one of {', '.join(sorted(DEVICE_ORDERS))} "
                "(prefix - for descending)."
            )
        stmt = select(DeviceModel)
        if search:
            escaped = search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            stmt = stmt.where(DeviceModel.serial.like(f"%{escaped}%", escape="\\"))
        if status is not None:
            stmt = stmt.where(DeviceModel.status == DeviceStatus(status).value)
        if column is not DeviceModel.serial:  # never seen sorts last both ways
            key = column.desc() if order.startswith("-") else column.asc()
            stmt = stmt.order_by(key.nulls_last())
        tie = DeviceModel.serial.desc() if order == "-serial" else DeviceModel.serial
        with self._read() as session:
            return page_of(session, stmt, tie, device_record, offset, limit)

    def touch_device(self, serial: str, at: datetime) -> None:
        """Record that the device connected at ``at`` (aware). Not audited: hot path.

        ``first_seen`` is set once; ``last_seen`` only moves forward, so late callers from
        other threads cannot move it back. Raises DeviceNotFoundError.
        """
        if self.touch_devices({serial: at}) == 0:
            raise DeviceNotFoundError(f"No device with serial {serial!r} is registered.")

    def touch_devices(self, seen: Mapping[str, datetime]) -> int:
        """``touch_device`` for many devices in one transaction; returns how many were found.

        The gateway batches its connections' sightings through this, so a burst of handshakes
        costs one commit (one fsync on SQLite) instead of one each. Serials that are not
        registered are skipped.
        """
        updates = []
        for serial, at in seen.items():
            if at.tzinfo is None:
                raise InvalidRegistryInputError("touch_device needs an aware datetime (UTC).")
            updates.append((check_serial(serial), at))
        found = 0
        with self._write() as session:
            for serial, at in updates:
                at_value = literal(at, type_=UTCDateTime())
                stmt = (
                    update(DeviceModel)
                    .where(DeviceModel.serial == serial)
                    .values(
                        first_seen=func.coalesce(DeviceModel.first_seen, at_value),
                        last_seen=case(
                            (DeviceModel.last_seen.is_(None), at_value),
                            (DeviceModel.last_seen < at_value, at_value),
                            else_=DeviceModel.last_seen,
                        ),
                    )
                    .execution_options(synchronize_session=False)
                )
                found += session.execute(stmt).rowcount  # type: ignore[attr-defined]
        return found

    def rebind_device(self, serial: str, *, ca_fingerprint: str, actor: str) -> DeviceRecord:
        """Move a device to another CA: the one explicit way a serial changes owner; audited.

        From then on only certificates from the new CA are accepted for the serial; the old
        CA's certificates are refused at the next handshake (``serial_bound_to_other_ca``) and
        live sessions dropped by the change feed. The new CA must be an active client CA.
        """
        actor = check_actor(actor)
        serial = check_serial(serial)
        ca_fingerprint = check_fingerprint(ca_fingerprint)
        now = self._clock()
        with self._write() as session:
            device = load_device(session, serial)
            ca = load_ca(session, ca_fingerprint)
            if ca.status != CAStatus.ACTIVE.value or ca.role == CARole.SERVER.value:
                raise CAStateError(
                    f"A device can move only to an active client CA; {ca_fingerprint} is a "
                    f"{ca.status} {ca.role} CA."
                )
            old = None if device.ca is None else device.ca.fingerprint
            if old == ca.fingerprint:
                return device_record(device)
            device.ca = ca
            device.ca_id = ca.id
            device.updated_at = now
            details = {"from": old, "to": ca_fingerprint}
            write_audit(session, now, actor, AuditAction.DEVICE_REBIND, serial, details)
            return device_record(device)


def load_device(session: Session, serial: str) -> DeviceModel:
    """The device row with this serial; DeviceNotFoundError if there is none."""
    return load_one(
        session,
        DeviceModel,
        DeviceModel.serial == serial,
        lambda: DeviceNotFoundError(f"No device with serial {serial!r} is registered."),
    )


def new_device(serial: str, provisioning: Provisioning, now: datetime) -> DeviceModel:
    """A fresh enabled device row, not yet added to a session, bound to no CA yet."""
    return DeviceModel(
        serial=serial,
        status=DeviceStatus.ENABLED.value,
        provisioning=provisioning.value,
        first_seen=None,
        last_seen=None,
        created_at=now,
        updated_at=now,
    )


def insert_device(
    session: Session,
    serial: str,
    provisioning: Provisioning,
    actor: str,
    now: datetime,
    ca: CAModel | None = None,
) -> DeviceModel:
    """Add a new device (bound to ``ca`` if given) with its audit row; DeviceExistsError."""
    refuse_taken(session, serial)
    model = new_device(serial, provisioning, now)
    if ca is not None:
        bind(model, ca)
    session.add(model)
    flush_or(session, lambda: _exists(serial))
    details = {"provisioning": provisioning.value}
    write_audit(session, now, actor, AuditAction.DEVICE_ADD, serial, details)
    return model


def refuse_taken(session: Session, serial: str) -> None:
    """DeviceExistsError when a device with this serial is already registered."""
    if session.scalar(select(DeviceModel.id).where(DeviceModel.serial == serial)):
        raise _exists(serial)


def _exists(serial: str) -> DeviceExistsError:
    return DeviceExistsError(f"A device with serial {serial!r} is already registered.")


def bind(device: DeviceModel, ca: CAModel) -> None:
    """Bind an unbound device to ``ca``; refuse a device that belongs to another CA."""
    if device.ca_id is None and device.ca is None:
        device.ca = ca
        return
    if (device.ca.id if device.ca is not None else device.ca_id) != ca.id:
        raise bound_elsewhere(device.serial, device, ca)


def bound_elsewhere(serial: str, device: DeviceModel, ca: CAModel) -> SerialBoundError:
    """The refusal for a serial that belongs to another CA (or to none yet)."""
    owner = "no CA yet" if device.ca is None else f"the CA {device.ca.fingerprint}"
    return SerialBoundError(
        f"The serial {serial!r} belongs to {owner}, so the CA {ca.fingerprint} cannot vouch "
        "for it; move the device explicitly (`tether cloud move-device`) if that is intended."
    )
