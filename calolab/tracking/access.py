"""Access to a tracking server: is it there, does it take our credentials, may we write here.

A tracking URI ``http(s)://...`` is checked once per process and set of credentials before
calolab uses it, with one short request each (no retries, :data:`TIMEOUT_S`), so that a
mistake ends in one line within seconds instead of MLflow's two-minute retry loop and a long
traceback:

- unreachable (refused, unknown host, no answer, TLS failure) -> :class:`ServerUnreachableError`;
- HTTP 401 (wrong or missing user/password or token) -> :class:`ServerAuthError`;
- HTTP 403 on what calolab is about to do -> :class:`PermissionDeniedError`, naming the
  permission that is missing and on what.

Credentials come only from MLflow's own sources: ``MLFLOW_TRACKING_USERNAME`` /
``MLFLOW_TRACKING_PASSWORD``, ``MLFLOW_TRACKING_TOKEN``, or MLflow's credentials file
(``~/.mlflow/credentials``, ``MLFLOW_TRACKING_CREDENTIALS_PATH`` wherever MLflow honours it); a
password written into ``tracking.uri`` is refused, since the URI is part of the logged config.
Permissions are those of MLflow's basic-auth app (READ < USE < EDIT < MANAGE); on a server
without it every check passes.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from calolab.errors import CalolabError

#: seconds a check waits for the server; a server that answers at all answers in milliseconds
TIMEOUT_S = 5.0
#: the MLflow permission names, weakest first, and what each allows
PERMISSIONS = ("READ", "USE", "EDIT", "MANAGE")
CREDENTIAL_HINT = (
    "set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN, or MLflow's "
    "credentials file ~/.mlflow/credentials)"
)


class TrackingServerError(CalolabError, ConnectionError):
    """The tracking server cannot be used: unreachable, credentials refused, or not an MLflow server."""


class ServerUnreachableError(TrackingServerError):
    """No answer from the tracking server's address."""


class ServerAuthError(TrackingServerError):
    """The server refused the credentials (HTTP 401)."""


class PermissionDeniedError(TrackingServerError, PermissionError):
    """The signed-in user lacks the permission an action needs (HTTP 403)."""


@dataclass(frozen=True)
class ServerUser:
    """Who the server says we are; ``username`` None on a server without authentication."""

    username: str | None
    is_admin: bool = False

    @property
    def authenticated(self) -> bool:
        return self.username is not None


_CHECKED: dict[tuple, ServerUser] = {}


def is_http(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def base_url(uri: str) -> str:
    """``uri`` without user info, query or trailing slash: what an error message may show."""
    parts = urlsplit(uri)
    netloc = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))


def _creds(uri: str):
    from mlflow.utils.credentials import get_default_host_creds

    return get_default_host_creds(uri.rstrip("/"))


def _who(creds) -> str:
    if creds.username:
        return f"user {creds.username!r}"
    return "a token (MLFLOW_TRACKING_TOKEN)" if creds.token else "no credentials"


def _reason(err: Exception) -> str:
    """The cause of a requests connection failure in a few words."""
    import requests

    text = str(err)
    if isinstance(err, requests.exceptions.SSLError):
        return "TLS error (certificate or protocol; see MLFLOW_TRACKING_SERVER_CERT_PATH)"
    if isinstance(err, requests.exceptions.Timeout):
        return f"no answer within {TIMEOUT_S:g} s"
    if "Connection refused" in text or "Errno 111" in text:
        return "connection refused"
    if "Name or service not known" in text or "nodename nor servname" in text or "Temporary failure in name" in text:
        return "host name not found"
    if "No route to host" in text or "Network is unreachable" in text:
        return "no route to host"
    return text.splitlines()[0][:200]


def _get(uri: str, creds, path: str, params: dict | None = None):
    """One GET without retries; connection failures become :class:`ServerUnreachableError`."""
    import requests
    from mlflow.utils.rest_utils import http_request

    try:
        return http_request(
            creds, path, "GET", max_retries=0, timeout=TIMEOUT_S, raise_on_status=False, params=params or {}
        )
    except requests.exceptions.RequestException as err:
        raise ServerUnreachableError(_unreachable(uri, _reason(err))) from None
    except Exception as err:  # MlflowException wrapping the requests error
        cause = err.__cause__ or err.__context__
        if isinstance(cause, requests.exceptions.RequestException):
            raise ServerUnreachableError(_unreachable(uri, _reason(cause))) from None
        raise ServerUnreachableError(_unreachable(uri, str(err).splitlines()[0][:200])) from None


def _unreachable(uri: str, reason: str) -> str:
    return (
        f"cannot reach the MLflow tracking server at {base_url(uri)}: {reason}; is it running (make server, "
        f"docker compose -f docker/compose.yaml up) and is tracking.uri / MLFLOW_TRACKING_URI right?"
    )


def check_server(uri: str) -> ServerUser:
    """Check that the server at ``uri`` answers and takes our credentials; who we are there.

    Raises:
        TrackingServerError: (one line) a password in the URI, unreachable, credentials refused.
    """
    parts = urlsplit(uri)
    if parts.password is not None:
        raise ServerAuthError(
            f"tracking.uri must not carry a password (the URI is logged with the run's config): use "
            f"tracking.uri={base_url(uri)} and {CREDENTIAL_HINT}"
        )
    creds = _creds(uri)
    key = (uri, creds.username, creds.password, creds.token)
    if key in _CHECKED:
        return _CHECKED[key]
    where = base_url(uri)
    resp = _get(uri, creds, "/api/2.0/mlflow/experiments/search", {"max_results": 1})
    if resp.status_code == 401:
        raise ServerAuthError(
            f"the MLflow tracking server at {where} refused the credentials ({_who(creds)}: HTTP 401, wrong or "
            f"missing user name / password); {CREDENTIAL_HINT}"
        )
    if resp.status_code == 403:
        raise PermissionDeniedError(f"the MLflow tracking server at {where} denies {_who(creds)} any access (HTTP 403)")
    if resp.status_code != 200:
        raise TrackingServerError(
            f"{where} does not answer as an MLflow tracking server (HTTP {resp.status_code} on "
            f"/api/2.0/mlflow/experiments/search); check tracking.uri / MLFLOW_TRACKING_URI"
        )
    user = ServerUser(None)
    current = _get(uri, creds, "/api/2.0/mlflow/users/current")
    if current.status_code == 200:  # the basic-auth app
        info = (current.json() or {}).get("user") or {}
        user = ServerUser(info.get("username") or creds.username, bool(info.get("is_admin")))
    _CHECKED[key] = user
    return user


def permission(uri: str, user: ServerUser, resource_type: str, resource_id: str) -> str | None:
    """``user``'s effective permission name on a resource (MLflow's own resolution); None without auth."""
    if not user.authenticated:
        return None
    resp = _get(
        uri,
        _creds(uri),
        "/api/3.0/mlflow/users/permissions/get",
        {"username": user.username, "resource_type": resource_type, "resource_id": resource_id},
    )
    if resp.status_code != 200:
        return None  # an older server without this endpoint: the action itself will be refused with 403
    return (resp.json() or {}).get("permission")


def require(uri: str, resource_type: str, resource_id: str, need: str, label: str, action: str) -> None:
    """Refuse, in one line, when the signed-in user has less than ``need`` on a resource.

    Args:
        resource_type: ``experiment`` or ``registered_model`` (MLflow's resource types).
        resource_id: the experiment id or the model name.
        need: the weakest sufficient permission (``EDIT`` or ``MANAGE``).
        label: how the message names the resource, e.g. ``experiment 'photon_id'``.
        action: what calolab was about to do, e.g. ``log runs to it``.
    """
    if not is_http(uri):
        return
    user = check_server(uri)
    if not user.authenticated or user.is_admin:
        return
    have = permission(uri, user, resource_type, resource_id)
    if have is None or have not in PERMISSIONS or PERMISSIONS.index(have) >= PERMISSIONS.index(need):
        return
    stronger = " or ".join(PERMISSIONS[PERMISSIONS.index(need) :])
    raise PermissionDeniedError(
        f"user {user.username!r} has {have} permission on {label} at {base_url(uri)}, but needs {stronger} to "
        f"{action}; ask an admin of the server to grant it (README: A shared tracking server for a group)"
    )
