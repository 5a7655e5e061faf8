"""The admin API: FastAPI over HTTPS in the cloud process (devices, CAs, CRLs, audit log).

``create_app`` builds the app over a registry; ``ApiServer`` serves it with uvicorn on the
running event loop, next to the gateway. See ``operations`` for what each call does and the
decisions behind it, and ``errors.status_for`` for the one mapping of error codes to statuses.
"""

from tether.cloud.api.app import create_app
from tether.cloud.api.errors import status_for
from tether.cloud.api.operations import AdminOperations, ConsoleBundle, check_online_ca
from tether.cloud.api.server import ApiServer

__all__ = [
    "AdminOperations",
    "ApiServer",
    "ConsoleBundle",
    "check_online_ca",
    "create_app",
    "status_for",
]
