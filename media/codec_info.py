"""Codec facts read from elementary-stream bytes: NAL units, keyframes, SPS picture size.

Pure functions, no I/O. H.264 is ITU-T H.264 (Annex B byte stream, §7.3.2.1.1 SPS); H.265 is
ITU-T H.265 (§7.3.2.2 SPS, §7.3.3 profile_tier_level). Only the fields needed to reach the
picture size are decoded; everything after the conformance/cropping window is ignored.
"""

from __future__ import annotations

from collections.abc import Iterator
from enum import StrEnum

__all__ = [
    "BitReader",
    "Codec",
    "SpsParseError",
    "is_keyframe",
    "iter_nals",
    "nal_rbsp",
    "parse_h264_sps",
    "parse_h265_sps",
    "sniff_video_codec",
    "video_size",
]

_START = b"\x00\x00\x01"
# H.265 NAL types that can start an access unit: TRAIL_R, IDR/CRA, VPS/SPS/PPS/AUD, SEI.
_H265_SURE = frozenset((1, 19, 20, 21, 32, 33, 34, 35, 39, 40))
_MAX_SPS = 4096  # bytes; a real SPS is tens of bytes, more is hostile input


class Codec(StrEnum):
    """Elementary-stream codec, named as in the API; compares equal to its string value."""

    H264 = "h264"
    H265 = "h265"
    MPEG4 = "mpeg4"
    SVAC = "svac"
    PCMA = "pcma"
    PCMU = "pcmu"
    AAC = "aac"
    G722_1 = "g722_1"
    G723_1 = "g723_1"
    G729 = "g729"
    SVAC_AUDIO = "svac_audio"
    UNKNOWN = "unknown"


class SpsParseError(ValueError):
    """A sequence parameter set that is truncated or out of range."""


def iter_nals(annexb: bytes) -> Iterator[bytes]:
    """Yield the NAL units (header byte first, no start code) of an Annex-B byte stream.

    Bytes before the first start code are skipped; trailing zero bytes of a NAL belong to the
    next (4-byte) start code and are stripped (H.264 §B.2).
    """
    pos = annexb.find(_START)
    while pos >= 0:
        begin = pos + 3
        nxt = annexb.find(_START, begin)
        end = len(annexb) if nxt < 0 else nxt
        while end > begin and annexb[end - 1] == 0:
            end -= 1
        if end > begin:
            yield bytes(annexb[begin:end])
        pos = nxt


def sniff_video_codec(annexb: bytes) -> Codec | None:
    """Guess H.264, H.265 or MPEG-4 Visual from the first start codes; None if unsure.

    Only unambiguous headers decide. H.265 headers have an even first byte (nuh_layer_id is 0
    in single-layer streams) and a second byte of 0x01 (layer 0, TemporalId 0); H.264 slice,
    IDR and SPS headers have an odd first byte.
    """
    n = len(annexb)
    pos = annexb.find(_START)
    for _ in range(16):
        if pos < 0 or pos + 3 >= n:
            return None
        b0 = annexb[pos + 3]
        b1 = annexb[pos + 4] if pos + 4 < n else -1
        if b0 in (0xB0, 0xB5, 0xB6):  # MPEG-4 Visual VOS / VO / VOP start codes
            return Codec.MPEG4
        if b0 < 0x80:
            if not b0 & 1 and b1 == 0x01 and (b0 >> 1) in _H265_SURE:
                return Codec.H265
            if b0 & 1 and b0 & 0x1F in (1, 5, 7, 9):
                return Codec.H264
        pos = annexb.find(_START, pos + 3)
    return None


def is_keyframe(codec: Codec, annexb: bytes) -> bool | None:
    """Whether the access unit holds a random-access picture; None if the codec is not known.

    H.264: the first VCL NAL is IDR (type 5). H.265: the first VCL NAL is IRAP (16..21).
    MPEG-4 Visual: the first VOP is an I-VOP. Scanning stops at the first picture, so a P-frame
    costs one search past its parameter sets.
    """
    find = annexb.find
    n = len(annexb)
    pos = find(_START)
    if codec == Codec.H264:
        while 0 <= pos < n - 3:
            t = annexb[pos + 3] & 0x1F
            if 1 <= t <= 5:
                return t == 5
            pos = find(_START, pos + 3)
        return False
    if codec == Codec.H265:
        while 0 <= pos < n - 3:
            t = (annexb[pos + 3] >> 1) & 0x3F
            if t < 32:
                return 16 <= t <= 21
            pos = find(_START, pos + 3)
        return False
    if codec == Codec.MPEG4:
        pos = find(b"\x00\x00\x01\xb6")
        return 0 <= pos < n - 4 and annexb[pos + 4] >> 6 == 0
    return None


def video_size(codec: Codec, annexb: bytes) -> tuple[int, int] | None:
    """Picture (width, height) in pixels from the first SPS of an access unit, else None.

    An SPS that cannot be parsed also gives None: it is a property of the stream, not an error
    of the caller.
    """
    for nal in iter_nals(annexb):
        try:
            if codec == Codec.H264 and nal[0] & 0x1F == 7:
                return parse_h264_sps(nal)
            if codec == Codec.H265 and (nal[0] >> 1) & 0x3F == 33:
                return parse_h265_sps(nal)
        except SpsParseError:
            return None
    return None


class BitReader:
    """MSB-first bit reader over an RBSP (emulation prevention already removed); running
    past the end raises ``error`` (SpsParseError by default)."""

    __slots__ = ("_error", "_n", "_pos", "_value")

    def __init__(self, rbsp: bytes, error: type[ValueError] = SpsParseError) -> None:
        self._value = int.from_bytes(rbsp, "big")
        self._n = 8 * len(rbsp)
        self._pos = 0
        self._error = error

    def u(self, count: int) -> int:
        """The next ``count`` bits as an unsigned integer."""
        if count == 0:
            return 0
        end = self._pos + count
        if end > self._n:
            raise self._error("parameter set is truncated")
        self._pos = end
        return (self._value >> (self._n - end)) & ((1 << count) - 1)

    def skip(self, count: int) -> None:
        """Skip ``count`` bits."""
        self._pos += count
        if self._pos > self._n:
            raise self._error("parameter set is truncated")

    def ue(self) -> int:
        """An unsigned exp-Golomb code (H.264 §9.1)."""
        zeros = 0
        while self.u(1) == 0:
            zeros += 1
            if zeros > 31:
                raise self._error("exp-Golomb code longer than 32 bits")
        return (1 << zeros) - 1 + self.u(zeros)

    def se(self) -> int:
        """A signed exp-Golomb code."""
        k = self.ue()
        return (k + 1) // 2 if k & 1 else -(k // 2)


_Bits = BitReader


def nal_rbsp(nal: bytes, header_size: int) -> bytes:
    """The NAL payload without its header and emulation-prevention bytes (00 00 03 -> 00 00)."""
    return bytes(nal[header_size:]).replace(b"\x00\x00\x03", b"\x00\x00")


def _rbsp(nal: bytes, header_size: int) -> bytes:
    """Drop the NAL header and the emulation-prevention bytes (00 00 03 -> 00 00)."""
    if len(nal) > _MAX_SPS:
        raise SpsParseError(f"SPS of {len(nal)} bytes is larger than {_MAX_SPS}")
    return nal_rbsp(nal, header_size)


_H264_HIGH_PROFILES = frozenset((100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135))


def parse_h264_sps(nal: bytes) -> tuple[int, int]:
    """(width, height) in pixels of an H.264 SPS NAL (header byte included), cropping applied."""
    if not nal or nal[0] & 0x1F != 7:
        raise SpsParseError("not an H.264 SPS NAL unit (type 7)")
    r = _Bits(_rbsp(nal, 1))
    profile_idc = r.u(8)
    r.skip(16)  # constraint flags, level_idc
    r.ue()  # seq_parameter_set_id
    chroma_format_idc = 1
    separate_colour_plane = 0
    if profile_idc in _H264_HIGH_PROFILES:
        chroma_format_idc = r.ue()
        if chroma_format_idc > 3:
            raise SpsParseError(f"H.264 chroma_format_idc {chroma_format_idc} is out of range")
        if chroma_format_idc == 3:
            separate_colour_plane = r.u(1)
        r.ue()  # bit_depth_luma_minus8
        r.ue()  # bit_depth_chroma_minus8
        r.skip(1)  # qpprime_y_zero_transform_bypass_flag
        if r.u(1):  # seq_scaling_matrix_present_flag
            for i in range(8 if chroma_format_idc != 3 else 12):
                if r.u(1):
                    _skip_scaling_list(r, 16 if i < 6 else 64)
    r.ue()  # log2_max_frame_num_minus4
    poc_type = r.ue()
    if poc_type == 0:
        r.ue()  # log2_max_pic_order_cnt_lsb_minus4
    elif poc_type == 1:
        r.skip(1)  # delta_pic_order_always_zero_flag
        r.se()  # offset_for_non_ref_pic
        r.se()  # offset_for_top_to_bottom_field
        cycle = r.ue()
        if cycle > 255:
            raise SpsParseError(f"H.264 num_ref_frames_in_pic_order_cnt_cycle {cycle} > 255")
        for _ in range(cycle):
            r.se()
    elif poc_type != 2:
        raise SpsParseError(f"H.264 pic_order_cnt_type {poc_type} is out of range")
    r.ue()  # max_num_ref_frames
    r.skip(1)  # gaps_in_frame_num_value_allowed_flag
    width_mbs = r.ue() + 1
    height_map_units = r.ue() + 1
    frame_mbs_only = r.u(1)
    if not frame_mbs_only:
        r.skip(1)  # mb_adaptive_frame_field_flag
    r.skip(1)  # direct_8x8_inference_flag
    width = width_mbs * 16
    height = (2 - frame_mbs_only) * height_map_units * 16
    if r.u(1):  # frame_cropping_flag
        left, right, top, bottom = r.ue(), r.ue(), r.ue(), r.ue()
        # H.264 §7.4.2.1.1, CropUnitX/CropUnitY (Table 6-1 for SubWidthC/SubHeightC).
        if chroma_format_idc == 0 or separate_colour_plane:
            unit_x, unit_y = 1, 2 - frame_mbs_only
        else:
            unit_x = 1 if chroma_format_idc == 3 else 2
            unit_y = (2 if chroma_format_idc == 1 else 1) * (2 - frame_mbs_only)
        width -= unit_x * (left + right)
        height -= unit_y * (top + bottom)
    if width <= 0 or height <= 0:
        raise SpsParseError(f"H.264 SPS gives an empty picture {width}x{height}")
    return width, height


def _skip_scaling_list(r: _Bits, size: int) -> None:
    last = 8
    nxt = 8
    for _ in range(size):
        if nxt != 0:
            nxt = (last + r.se() + 256) % 256
        last = nxt if nxt != 0 else last


def parse_h265_sps(nal: bytes) -> tuple[int, int]:
    """(width, height) in pixels of an H.265 SPS NAL (2-byte header included), window applied."""
    if len(nal) < 2 or (nal[0] >> 1) & 0x3F != 33:
        raise SpsParseError("not an H.265 SPS NAL unit (type 33)")
    r = _Bits(_rbsp(nal, 2))
    r.skip(4)  # sps_video_parameter_set_id
    max_sub_layers_minus1 = r.u(3)
    r.skip(1)  # sps_temporal_id_nesting_flag
    # profile_tier_level(1, max_sub_layers_minus1), §7.3.3
    r.skip(88)  # general profile space/tier/idc, compatibility flags, constraint flags
    r.skip(8)  # general_level_idc
    present = [(r.u(1), r.u(1)) for _ in range(max_sub_layers_minus1)]
    if max_sub_layers_minus1 > 0:
        r.skip(2 * (8 - max_sub_layers_minus1))  # reserved_zero_2bits
    for profile_present, level_present in present:
        r.skip(88 * profile_present + 8 * level_present)
    r.ue()  # sps_seq_parameter_set_id
    chroma_format_idc = r.ue()
    if chroma_format_idc > 3:
        raise SpsParseError(f"H.265 chroma_format_idc {chroma_format_idc} is out of range")
    separate_colour_plane = r.u(1) if chroma_format_idc == 3 else 0
    width = r.ue()
    height = r.ue()
    if r.u(1):  # conformance_window_flag
        left, right, top, bottom = r.ue(), r.ue(), r.ue(), r.ue()
        # H.265 §7.4.3.2.1: offsets are in chroma sample units (Table 6-1).
        if chroma_format_idc == 0 or separate_colour_plane:
            sub_w, sub_h = 1, 1
        else:
            sub_w = 1 if chroma_format_idc == 3 else 2
            sub_h = 2 if chroma_format_idc == 1 else 1
        width -= sub_w * (left + right)
        height -= sub_h * (top + bottom)
    if width <= 0 or height <= 0:
        raise SpsParseError(f"H.265 SPS gives an empty picture {width}x{height}")
    return width, height
