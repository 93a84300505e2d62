"""Public handlers: ``GET /config`` and the API description."""

from __future__ import annotations

import functools
from importlib import resources

from aiohttp import web

from .. import PROTOCOL_VERSION, __version__
from ..instances import SETTINGS_DEFAULTS
from ..schemas import relative_time
from .request import context

IMPLEMENTATION = "urn:net:taler:specs:taler-merchant:merchant-authd:"


def _currency_spec(currency: str) -> dict[str, object]:
    return {
        "name": currency,
        "currency": currency,
        "num_fractional_input_digits": 2,
        "num_fractional_normal_digits": 2,
        "num_fractional_trailing_zero_digits": 2,
        "alt_unit_names": {"0": currency},
    }


async def get_config(request: web.Request) -> web.Response:
    """``MerchantVersionResponse``: protocol version and what this backend offers."""
    settings = context(request).settings
    body = {
        "version": PROTOCOL_VERSION,
        "name": "taler-merchant",
        "implementation": IMPLEMENTATION + __version__,
        "currency": settings.currency,
        "currencies": {settings.currency: _currency_spec(settings.currency)},
        "exchanges": [],
        "have_self_provisioning": settings.self_provisioning,
        "have_donau": False,
        "mandatory_tan_channels": list(settings.mandatory_tan_channels),
        "default_pay_delay": relative_time(SETTINGS_DEFAULTS["default_pay_delay"]),
        "default_refund_delay": relative_time(
            SETTINGS_DEFAULTS["default_refund_delay"]
        ),
        "default_wire_transfer_delay": relative_time(
            SETTINGS_DEFAULTS["default_wire_transfer_delay"]
        ),
    }
    return web.json_response(body)


@functools.cache
def _openapi_text() -> str:
    return resources.files("merchant_authd").joinpath("openapi.yaml").read_text("utf-8")


async def get_openapi(request: web.Request) -> web.Response:
    """The OpenAPI document of every endpoint served here (read once)."""
    return web.Response(text=_openapi_text(), content_type="application/yaml")
