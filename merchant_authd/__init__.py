"""merchant-authd: the authentication part of the GNU Taler merchant backend API."""

__version__ = "0.1.0"

#: libtool-style ``current:revision:age`` of the merchant protocol spoken here.
#: 21 brings two-factor authentication; an age of 2 keeps v19 and v20 clients.
PROTOCOL_VERSION = "21:0:2"

__all__ = ["PROTOCOL_VERSION", "__version__"]
