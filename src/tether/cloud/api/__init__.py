"""The admin API: FastAPI over HTTPS (devices, CAs, CRLs, admins, the audit log).

``create_app`` builds the app over a registry; ``ApiServer`` serves it with uvicorn on the
running event loop; ``ApiProcess`` runs all that in a process of its own (what ``tether cloud
serve`` does, so API traffic never shares the gateway's loop). ``guard`` bounds every request.
Every write goes through ``tether.cloud.operations.AdminOperations`` (the admin service the
CLI uses too); see ``errors.status_for`` for the one mapping of error codes to statuses.
"""

from tether.cloud.api.app import create_app
from tether.cloud.api.errors import status_for
from tether.cloud.api.process import ApiProcess, ApiProcessArgs
from tether.cloud.api.server import ApiServer

__all__ = [
    "ApiProcess",
    "ApiProcessArgs",
    "ApiServer",
    "create_app",
    "status_for",
]
