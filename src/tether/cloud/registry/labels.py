"""Device groups and attributes: the labels policies substitute (``${group}``, ``${attr.*}``).

A group exists by being named; its name is in the policy name grammar. An attribute is a
name (``a-z 0-9 _ -``) and a value that is one safe topic level (no ``/ + # $``), since both are
substituted into topic patterns. A device has at most 32 of each. Every change is one
transaction with its audit row (``device.group_add``, ``device.group_remove``,
``device.attribute``), which the gateway's change feed follows to re-evaluate live sessions;
the same value again changes nothing and writes no row. :meth:`DeviceLabels.label_device` is
the provisioning path's one call.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from tether.cloud.registry.audit import AuditAction, write_audit
from tether.cloud.registry.base import RegistryBase, check_actor, check_serial, flush_or
from tether.cloud.registry.devices import load_device
from tether.cloud.registry.errors import ConcurrentChangeError, InvalidRegistryInputError
from tether.cloud.registry.models import DeviceAttributeModel, DeviceGroupModel, DeviceModel
from tether.cloud.registry.policies import check_name

ATTRIBUTE_NAME_RE = re.compile(r"[a-z][a-z0-9_-]{0,31}")
VALUE_RE = re.compile(r"[A-Za-z0-9_.:-]{1,128}")  # one topic level: no / + # $
MAX_GROUPS_PER_DEVICE = 32
MAX_ATTRIBUTES_PER_DEVICE = 32


def check_labels(
    groups: Sequence[str], attributes: Mapping[str, str]
) -> tuple[tuple[str, ...], dict[str, str]]:
    """Groups and attributes as the registry stores them; InvalidRegistryInputError if not.

    The provisioning path calls this before it makes a device, so a bad label refuses the
    whole request before anything (a key, a certificate) exists.
    """
    checked_groups = tuple(dict.fromkeys(check_name(g, "Group") for g in groups))
    if len(checked_groups) > MAX_GROUPS_PER_DEVICE:
        raise InvalidRegistryInputError(f"A device is in at most {MAX_GROUPS_PER_DEVICE} groups.")
    if len(attributes) > MAX_ATTRIBUTES_PER_DEVICE:
        raise InvalidRegistryInputError(
            f"A device has at most {MAX_ATTRIBUTES_PER_DEVICE} attributes."
        )
    for name, value in attributes.items():
        check_attribute(name, value)
    return checked_groups, dict(attributes)


def check_attribute(name: str, value: str | None) -> None:
    """An attribute name (a-z 0-9 _ -) and value (one topic level, or None to remove)."""
    if not isinstance(name, str) or not ATTRIBUTE_NAME_RE.fullmatch(name):
        raise InvalidRegistryInputError(
            f"Attribute name {name!r} is not valid: 1 to 32 of a-z 0-9 _ -, starting a-z."
        )
    if value is not None and (not isinstance(value, str) or not VALUE_RE.fullmatch(value)):
        raise InvalidRegistryInputError(
            f"Attribute value {value!r} is not valid: 1 to 128 of A-Z a-z 0-9 _ . : - "
            "(it becomes one topic level)."
        )


class DeviceLabels(RegistryBase):
    """Groups and attributes of devices."""

    def add_device_group(self, serial: str, group: str, *, actor: str) -> tuple[str, ...]:
        """Put a device in a group; its groups afterwards. Already a member: no change."""
        actor = check_actor(actor)
        serial = check_serial(serial)
        group = check_name(group, "Group")
        now = self._clock()
        with self._write() as session:
            device = load_device(session, serial)
            groups = _groups(session, device)
            if group in groups:
                return groups
            if len(groups) >= MAX_GROUPS_PER_DEVICE:
                raise InvalidRegistryInputError(
                    f"A device is in at most {MAX_GROUPS_PER_DEVICE} groups; {serial!r} is full."
                )
            session.add(DeviceGroupModel(device_id=device.id, group_name=group))
            flush_or(session, _conflict)
            write_audit(session, now, actor, AuditAction.DEVICE_GROUP_ADD, serial, {"group": group})
            return tuple(sorted((*groups, group)))

    def remove_device_group(self, serial: str, group: str, *, actor: str) -> tuple[str, ...]:
        """Take a device out of a group; its groups afterwards. Not a member: no change."""
        actor = check_actor(actor)
        serial = check_serial(serial)
        group = check_name(group, "Group")
        now = self._clock()
        with self._write() as session:
            device = load_device(session, serial)
            row = session.scalars(
                select(DeviceGroupModel).where(
                    (DeviceGroupModel.device_id == device.id)
                    & (DeviceGroupModel.group_name == group)
                )
            ).first()
            if row is not None:
                session.delete(row)
                session.flush()
                write_audit(
                    session, now, actor, AuditAction.DEVICE_GROUP_REMOVE, serial, {"group": group}
                )
            return _groups(session, device)

    def set_device_attribute(
        self, serial: str, name: str, value: str | None, *, actor: str
    ) -> dict[str, str]:
        """Set (or with ``None`` remove) one attribute; the device's attributes afterwards.

        The value it already has changes nothing and writes no audit row.
        """
        actor = check_actor(actor)
        serial = check_serial(serial)
        check_attribute(name, value)
        now = self._clock()
        with self._write() as session:
            device = load_device(session, serial)
            row = session.scalars(
                select(DeviceAttributeModel).where(
                    (DeviceAttributeModel.device_id == device.id)
                    & (DeviceAttributeModel.name == name)
                )
            ).first()
            old = None if row is None else row.value
            if old != value:
                if value is None and row is not None:
                    session.delete(row)
                elif row is not None and value is not None:
                    row.value = value
                else:
                    count = len(_attributes(session, device))
                    if count >= MAX_ATTRIBUTES_PER_DEVICE:
                        raise InvalidRegistryInputError(
                            f"A device has at most {MAX_ATTRIBUTES_PER_DEVICE} attributes."
                        )
                    session.add(DeviceAttributeModel(device_id=device.id, name=name, value=value))
                flush_or(session, _conflict)
                write_audit(
                    session, now, actor, AuditAction.DEVICE_ATTRIBUTE, serial,
                    {"name": name, "from": old, "to": value},
                )  # fmt: skip
            return dict(_attributes(session, device))

    def label_device(
        self,
        serial: str,
        *,
        groups: Sequence[str] = (),
        attributes: Mapping[str, str] | None = None,
        actor: str,
    ) -> None:
        """Add groups and set attributes in one transaction (the provisioning path's call);
        each change has its own audit row, and a bad name or value changes nothing."""
        actor = check_actor(actor)
        serial = check_serial(serial)
        groups, attributes = check_labels(groups, attributes or {})
        now = self._clock()
        with self._write() as session:
            apply_labels(session, load_device(session, serial), groups, attributes, actor, now)

    def device_groups(self, serial: str) -> tuple[str, ...]:
        """A device's groups, sorted. Raises DeviceNotFoundError."""
        serial = check_serial(serial)
        with self._read() as session:
            return _groups(session, load_device(session, serial))

    def device_attributes(self, serial: str) -> dict[str, str]:
        """A device's attributes. Raises DeviceNotFoundError."""
        serial = check_serial(serial)
        with self._read() as session:
            return dict(_attributes(session, load_device(session, serial)))


def apply_labels(
    session: Session,
    device: DeviceModel,
    groups: Sequence[str],
    attributes: Mapping[str, str],
    actor: str,
    now: datetime,
) -> None:
    """Add groups and set attributes of ``device`` inside the caller's transaction (checked
    labels; ``check_labels``): ``label_device`` and enrollment's write share this one rule."""
    serial = device.serial
    have = set(_groups(session, device))
    for group in groups:
        if group in have:
            continue
        have.add(group)
        session.add(DeviceGroupModel(device_id=device.id, group_name=group))
        write_audit(session, now, actor, AuditAction.DEVICE_GROUP_ADD, serial, {"group": group})
    if len(have) > MAX_GROUPS_PER_DEVICE:
        raise InvalidRegistryInputError(f"A device is in at most {MAX_GROUPS_PER_DEVICE} groups.")
    current = dict(_attributes(session, device))
    for name, value in attributes.items():
        if current.get(name) == value:
            continue
        row = session.scalars(
            select(DeviceAttributeModel).where(
                (DeviceAttributeModel.device_id == device.id) & (DeviceAttributeModel.name == name)
            )
        ).first()
        if row is None:
            session.add(DeviceAttributeModel(device_id=device.id, name=name, value=value))
        else:
            row.value = value
        write_audit(
            session, now, actor, AuditAction.DEVICE_ATTRIBUTE, serial,
            {"name": name, "from": current.get(name), "to": value},
        )  # fmt: skip
        current[name] = value
    if len(current) > MAX_ATTRIBUTES_PER_DEVICE:
        raise InvalidRegistryInputError(
            f"A device has at most {MAX_ATTRIBUTES_PER_DEVICE} attributes."
        )
    flush_or(session, _conflict)


def _groups(session: Session, device: DeviceModel) -> tuple[str, ...]:
    return tuple(
        sorted(
            session.scalars(
                select(DeviceGroupModel.group_name).where(DeviceGroupModel.device_id == device.id)
            )
        )
    )


def _attributes(session: Session, device: DeviceModel) -> list[tuple[str, str]]:
    rows = session.execute(
        select(DeviceAttributeModel.name, DeviceAttributeModel.value).where(
            DeviceAttributeModel.device_id == device.id
        )
    )
    return sorted((name, value) for name, value in rows)


def _conflict() -> Exception:
    return ConcurrentChangeError(
        "A concurrent change to a device's labels conflicted with this one; nothing was "
        "changed, retry."
    )
