"""HTTP errors in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}``.

Every HTTP endpoint of ours (OpenAI API, voices, shims, auth) raises ``ApiError``
and answers with ``error_response``, so clients written against OpenAI's API can
show our messages unchanged.
"""

from __future__ import annotations

from starlette.responses import JSONResponse

from .inputs import InputError

# OpenAI's error ``type`` per status class.
_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    422: "invalid_request_error",
}


class ApiError(Exception):
    """A request that cannot be served; becomes an OpenAI-shaped JSON error response."""

    def __init__(self, status: int, message: str, *, param: str | None = None,
                 code: str | None = None, type: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.type = type or _TYPES.get(status, "server_error")
        self.headers = headers or {}

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def invalid(message: str, param: str | None = None, code: str = "invalid_value") -> ApiError:
    return ApiError(400, message, param=param, code=code)


def input_error(e: InputError, param: str | None = None) -> ApiError:
    """Malformed input (``inputs.InputError``) as an HTTP error: 413 for size, else 400."""
    status = 413 if e.code == "request_too_large" else 400
    return ApiError(status, e.message, param=e.field or param, code=e.code)


def error_response(status: int, message: str, **kw) -> JSONResponse:
    return ApiError(status, message, **kw).response()


def api_endpoint(handler):
    """Wrap a Starlette endpoint so every failure leaves as an OpenAI-shaped error.

    Errors raised after a streamed response has started cannot change its status;
    streaming endpoints handle those themselves (they end the stream).
    """
    import functools
    import logging

    from starlette.exceptions import HTTPException

    from ..engine.base import EngineError
    from ..engine.executor import ExecutorBusy, ExecutorClosed
    from .voice_store import VoiceStoreError

    log = logging.getLogger(handler.__module__)

    @functools.wraps(handler)
    async def endpoint(request):
        try:
            return await handler(request)
        except ApiError as e:
            return e.response()
        except InputError as e:  # a string checked deeper down (inputs.clean_string)
            return input_error(e).response()
        except ExecutorBusy as e:
            return error_response(503, str(e), code="server_busy", type="server_error", headers={"Retry-After": "1"})
        except ExecutorClosed as e:
            return error_response(503, str(e), code="shutting_down", type="server_error")
        except HTTPException as e:  # e.g. a malformed multipart body
            return error_response(e.status_code, str(e.detail), code="invalid_request")
        except VoiceStoreError as e:  # the cause (which names the store) goes to the log only
            log.error("%s", e)
            return error_response(503, "the voice store is unavailable; retry shortly",
                                  code="voice_store_unavailable", type="server_error", headers={"Retry-After": "1"})
        except EngineError as e:
            log.warning("engine error: %s", e)
            return error_response(500, f"synthesis failed: {e}", code="engine_error", type="server_error")
        except Exception:
            log.exception("unhandled error in %s %s", request.method, request.url.path)
            return error_response(500, "internal server error (see the server log)", code="internal_error",
                                  type="server_error")

    return endpoint


async def http_exception_handler(request, exc) -> JSONResponse:
    """Starlette's own 404 / 405 / 400 answers, in OpenAI's error shape."""
    codes = {404: "not_found", 405: "method_not_allowed"}
    message = str(exc.detail)
    if exc.status_code == 404:
        message = f"no route {request.method} {request.url.path}"
    return error_response(exc.status_code, message, code=codes.get(exc.status_code, "invalid_request"),
                          headers=getattr(exc, "headers", None))


def exception_handlers() -> dict:
    """For ``Starlette(exception_handlers=...)``."""
    from starlette.exceptions import HTTPException

    return {HTTPException: http_exception_handler}
