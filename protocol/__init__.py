"""The xcon wire protocol: message declarations and the frame codec."""

from .frame import MAX_FRAME_BYTES, Frame, ProtocolError, check_body, decode, encode
from .messages import MESSAGES, REPLIES, VERSION

__all__ = [
    "MAX_FRAME_BYTES", "MESSAGES", "REPLIES", "VERSION",
    "Frame", "ProtocolError", "check_body", "decode", "encode",
]
