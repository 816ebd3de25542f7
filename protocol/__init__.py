"""The xcon wire protocol: message declarations and the frame codec."""

from .frame import MAX_BATCH_FRAMES, MAX_FRAME_BYTES, MAX_MESSAGE_BYTES, Frame, ProtocolError, batch, check_body, decode, decode_message, encode
from .messages import MESSAGES, REPLIES, VERSION

__all__ = [
    "MAX_BATCH_FRAMES", "MAX_FRAME_BYTES", "MAX_MESSAGE_BYTES", "MESSAGES", "REPLIES", "VERSION",
    "Frame", "ProtocolError", "batch", "check_body", "decode", "decode_message", "encode",
]
