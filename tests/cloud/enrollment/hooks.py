"""Provisioning hooks the tests name as entry points (``tests.cloud.enrollment.hooks:...``)."""

from __future__ import annotations

from tether.cloud.enrollment.hook import HookRequest, HookVerdict


def tag_site(request: HookRequest) -> HookVerdict:
    """Allow everything and tag it: the attributes come back in the answer."""
    return HookVerdict(allow=True, attributes={"site": "test-line", "via": request.credential})
