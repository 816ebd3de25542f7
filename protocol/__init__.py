"""The xcon wire protocol: message declarations and the frame codec."""

from .frame import MAX_BATCH_FRAMES, MAX_FRAME_BYTES, MAX_MESSAGE_BYTES, Frame, ProtocolError, as_dict, batch, body_of, decode, decode_message, encode
from .messages import (
    ERROR_CODES, INVALID, MESSAGES, MOVE_ENDED, MOVE_STATE, NO_MAILBOX, NOT_LOCKED, PRIORITIES, RELAY_FAILURES, REPLIES, VERSION,
)

__all__ = [
    "ERROR_CODES", "INVALID", "MAX_BATCH_FRAMES", "MAX_FRAME_BYTES", "MAX_MESSAGE_BYTES", "MESSAGES", "MOVE_ENDED", "MOVE_STATE",
    "NO_MAILBOX", "NOT_LOCKED", "PRIORITIES", "RELAY_FAILURES", "REPLIES", "VERSION",
    "Frame", "ProtocolError", "as_dict", "batch", "body_of", "decode", "decode_message", "encode",
]
